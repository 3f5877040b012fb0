"""A mixture of music models as one model (issue 21 point 5): made by the music.mix op (`atelier
models mix`), it generates, streams and scores as the mean of its members' next-token probabilities."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.client import EngineError
from engine.config import build
from engine.music.batch import collate, encode_window
from engine.music.config import MusicConfig, build_music_net, stored_config
from engine.music.evaluation import frame_nll, mixture_frame_nll
from engine.music.fast import fast_net
from engine.music.generation import MusicModel, load
from engine.music.jsb import jsb_dir, load_jsb
from engine.music.mixture import MusicMixture
from engine.music.objective import MusicObjective, load_pieces
from engine.music.piece import ONSET, Piece
from engine.music.sampling import Controls
from engine.store.checkpoints import ModelStore
from support.chorale_midi import write_midi

TINY = {"model": {"d_hidden": 32, "n_layers": 1, "d_decoder": 32}, "seq_steps": 32, "valid_fraction": 0.25}
TRAIN = {"steps": 6, "batch_size": 4, "log_every": 3}
HAS_JSB = jsb_dir() is not None and (jsb_dir() / "jsb-chorales-quarter.json").is_file()


def _member(seed: int, holds: bool = True):
    torch.manual_seed(seed)
    cfg = build(MusicConfig, {"model": {"holds": holds, "d_hidden": 24, "d_embed": 8, "n_layers": 2, "arch": "frame",
                                        "d_decoder": 16}})
    return build_music_net(cfg.model), cfg


def _net(store: ModelStore, name: str) -> torch.nn.Module:
    metadata, weights = store.load(name)
    return load(metadata["config"], weights).rnn


@pytest.fixture(scope="module")
def trained(engine):
    """A client, the MIDI folder, and two tiny models trained on it through the engine with seeds 0 and 1."""
    folder = Path(engine.models_dir) / "data" / "mix-midi"  # a folder the engine may read over its socket
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_midi(folder / f"piece{i}.mid", shift=i)
    client = engine.client("mixture-test")
    for seed in (0, 1):
        client.call("train", {"kind": "music", "name": f"member{seed}", "data": {"midi": str(folder)},
                              "model": {**TINY, "seed": seed}, "train": {**TRAIN, "seed": seed}}, timeout=120)
    yield client, folder
    client.close()


def test_a_one_member_mixture_plays_as_its_model(tiny_model):  # each architecture
    net, config = tiny_model.rnn, tiny_model.config
    primer = np.zeros((6, 88), np.int8)
    primer[0:4, 39], primer[2:6, 46] = 1, 1
    primer[0, 39] = primer[2, 46] = ONSET
    clip = Piece("primer", primer)
    for controls in (Controls(), Controls(key="D major", temperature=0.8, max_polyphony=3)):
        plain = tiny_model.generate(2, controls, seed=4, primer=clip)
        mixed = MusicModel(MusicMixture([net]), config).generate(2, controls, seed=4, primer=clip)
        assert np.array_equal(plain, mixed) and (plain[6:] > 0).sum() > 10


@pytest.mark.parametrize("arch", ["token", "frame"])
def test_the_numpy_mixture_draws_from_the_mean_of_the_members_probabilities(arch):
    """Token by token, with the spelling's masks (keys ascending, holds only of sounding keys): the
    numpy mixture's probabilities are the mean of the torch members' masked softmaxes."""
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        cfg = build(MusicConfig, {"model": {"holds": True, "d_hidden": 24, "d_embed": 8, "n_layers": 2, "arch": arch,
                                            "d_decoder": 16}})
        net = build_music_net(cfg.model).eval()
        with torch.no_grad():
            net.head.weight.mul_(6)  # peaked distributions that differ between members
        members.append(net)
    roll = np.zeros((7, 88), np.int8)
    roll[0:3, 40], roll[2:6, 44], roll[4, 47], roll[5, [30, 52, 60]] = 1, 1, 1, 1
    roll[0, 40] = roll[2, 44] = roll[4, 47] = roll[5, 30] = roll[5, 52] = roll[5, 60] = ONSET
    roll[6, 44] = ONSET  # struck again
    layout = members[0].config.layout
    batch = collate([encode_window(Piece("p", roll), 0, len(roll), layout)])
    with torch.no_grad():
        probs = []
        for net in members:
            if arch == "frame":
                logits, _ = net(batch["roll_prev"], batch["step_pos"], batch["tok_step"], batch["inputs"],
                                batch["written"])
            else:
                logits, _ = net(batch["inputs"], batch["pos"], batch["prev"])
            probs.append(torch.softmax(net.mask(logits, batch["floor"], batch["prev"]), -1)[0])
        want = torch.stack(probs).mean(0).numpy()
    tokens = batch["targets"][0].tolist()
    fast = fast_net(MusicMixture(members))
    state, i = fast.zero_state(), 0
    for step in range(len(roll)):
        cursor = fast.open(state, step % 16, roll[step - 1] > 0 if step else np.zeros(88, bool))
        while True:
            got = np.exp(cursor.logits().astype(np.float64))
            assert np.allclose(got, want[i], rtol=1e-4, atol=1e-6), (step, i)
            assert abs(got.sum() - 1) < 1e-5
            if tokens[i] == layout.step_end:
                break
            cursor.read(tokens[i])
            i += 1
        i += 1
        state = cursor.state
    assert i == len(tokens)


def test_mixture_nll_is_the_mean_of_the_members_probabilities_and_loads_from_its_file():
    (a, cfg), (b, _) = _member(0, holds=False), _member(1, holds=False)
    pieces = [Piece("p", (np.random.default_rng(s).random((12, 88)) > 0.93).astype(np.int8), 1, 4, 0,
                    has_onsets=False) for s in range(3)]
    want = mixture_frame_nll([a, b], pieces)["nll"]
    weights = {f"rnn.{k}": v for k, v in MusicMixture([a, b]).state_dict().items()}
    assert sorted({k.split(".")[2] for k in weights}) == ["0", "1"]  # rnn.members.<i>.<param>
    loaded = load({**cfg.to_dict(), "members": 2}, weights)
    assert isinstance(loaded.rnn, MusicMixture)
    assert frame_nll(loaded.rnn, pieces)["nll"] == pytest.approx(want, abs=1e-9)
    assert a.training and b.training  # scoring leaves the members as they were
    with pytest.raises(ValueError, match="trains one network"):
        MusicObjective({"members": 2, "model": {"holds": False}}, jsb="/nonexistent")


def test_the_mix_op_makes_a_model_that_generates_streams_and_scores_as_its_members(trained, engine):
    client, folder = trained
    value = client.call("music.mix", {"name": "mix", "models": ["member0", "member1"]}, timeout=120)
    assert [m["name"] for m in value["members"]] == ["member0", "member1"]
    assert all(m["step"] == TRAIN["steps"] and "valid_nll" in m["metrics"] for m in value["members"])
    info = client.call("models.info", {"name": "mix"})["metadata"]
    assert info["config"]["members"] == 2 and info["kind"] == "music" and info["data"]["source"] == "midi"
    # eval: the product's figure is mixture_frame_nll of the members on the same held-out pieces
    scored = client.call("music.eval", {"model": "mix", "midi": str(folder)}, timeout=120)
    store = ModelStore(Path(engine.models_dir), builtin=None)
    nets = [_net(store, f"member{i}") for i in (0, 1)]
    _, valid, _ = load_pieces(stored_config(store.metadata("mix")["config"]), midi=str(folder))
    want = mixture_frame_nll(nets, valid)["nll"]
    assert scored["metrics"]["nll"] == pytest.approx(want, abs=1e-6)
    alone = [frame_nll(n, valid)["nll"] for n in nets]
    assert scored["metrics"]["nll"] <= sum(alone) / 2 + 1e-9  # -log of a mean <= the mean of the -logs
    # generate and a live session: the engine plays the mixture as any model
    roll = client.call("music.generate", {"model": "mix", "bars": 2, "seed": 1})["roll"]
    assert roll.shape == (32, 88) and (roll > 0).any()
    session = client.call("music.session.open", {"model": "mix", "seed": 2})["session"]
    events = [client.call("music.session.next", {"session": session, "beats": 4})["events"] for _ in range(3)]
    client.call("music.session.close", {"session": session})
    assert sum(len(e) for e in events) > 0 and all(e.shape[1] == 5 for e in events)


def test_models_that_do_not_mix_are_refused_with_the_reason(trained):
    client, folder = trained
    client.call("train", {"kind": "music", "name": "no-holds", "data": {"midi": str(folder)},
                          "model": {**TINY, "model": {**TINY["model"], "holds": False}}, "train": TRAIN}, timeout=120)
    cases = [(["member0", "no-holds"], "same token layout.*model.holds: True vs False"),
             (["member0", "texture-planks"], "'texture-planks' is a texture model, not a music model"),
             (["member0"], "2 to 16 models"),
             (["member0", "member0"], "names a model twice"),
             (["member0", "nobody"], "no model named 'nobody'")]
    for models, message in cases:
        with pytest.raises(EngineError, match=message):
            client.call("music.mix", {"name": "bad-mix", "models": models}, timeout=60)
    client.call("music.mix", {"name": "mix2", "models": ["member0", "member1"]}, timeout=60)
    with pytest.raises(EngineError, match="already a mixture"):
        client.call("music.mix", {"name": "bad-mix", "models": ["mix2", "member1"]}, timeout=60)
    with pytest.raises(EngineError, match="new name"):
        client.call("music.mix", {"name": "member1", "models": ["member0", "member1"]}, timeout=60)
    assert "bad-mix" not in {m["name"] for m in client.call("models.list", {})["models"]}


def test_atelier_models_mix_in_words(trained, engine, capsys):
    from engine.cli.main import main

    remote = ["--engine", f"{engine.host}:{engine.port}", "--token-file", str(Path(engine.state_dir) / "token")]
    assert main(["models", "mix", "cli-mix", "member0", "member1", *remote]) == 0
    text = capsys.readouterr().out
    assert text.startswith("saved cli-mix: the mixture of member0 (step 6, held-out NLL "), text
    assert "atelier generate music --model cli-mix" in text
    assert main(["models", "mix", "cli-mix", *remote]) == 1
    assert "names the new model, then the models to mix" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_JSB, reason=f"needs the JSB split, not found at ATELIER_JSB_DIR={jsb_dir()} (a user's "
                    "clone has no ../shared/datasets)")
def test_a_jsb_mixture_records_and_scores_what_the_bench_reports(trained, engine):
    """As bench/music_bench.py --members 2: members trained on the JSB split; the mix op stores the
    mixture's valid NLL, and the eval op's test NLL is mixture_frame_nll of the members."""
    client, _ = trained
    jsb = Path(engine.models_dir) / "data" / "mix-jsb"
    jsb.mkdir(parents=True, exist_ok=True)
    shutil.copy(jsb_dir() / "jsb-chorales-quarter.json", jsb)
    model = {"model": {"d_hidden": 24, "n_layers": 1, "bar_steps": 4, "d_decoder": 16}, "steps_per_quarter": 1,
             "seq_steps": 16, "baseline": {"d_hidden": 16}}
    for seed in (0, 1):
        client.call("train", {"kind": "music", "name": f"jsb{seed}", "data": {"jsb": str(jsb)},
                              "model": {**model, "seed": seed}, "train": {"steps": 3, "batch_size": 4, "seed": seed}},
                    timeout=120)
    value = client.call("music.mix", {"name": "jsb-mix", "models": ["jsb0", "jsb1"]}, timeout=120)
    store = ModelStore(Path(engine.models_dir), builtin=None)
    nets = [_net(store, f"jsb{i}") for i in (0, 1)]
    split = load_jsb(jsb, "quarter")
    assert value["metrics"]["valid_nll"] == pytest.approx(mixture_frame_nll(nets, split["valid"])["nll"], abs=1e-6)
    assert value["metrics"]["valid_baseline_nll"] == store.metadata("jsb0")["metrics"]["valid_baseline_nll"]
    scored = client.call("music.eval", {"model": "jsb-mix"}, timeout=120)
    assert scored["scored_on"]["split"] == "test"
    assert scored["metrics"]["nll"] == pytest.approx(mixture_frame_nll(nets, split["test"])["nll"], abs=1e-6)
    assert "baseline_nll" in scored["metrics"]
