from pathlib import Path

import numpy as np
import pytest
import torch

from engine.music.generation import evaluate_jsb, load, load_baseline
from engine.music.jsb import jsb_dir, load_jsb
from engine.music.objective import MusicObjective

torch.set_num_threads(1)
JSB = jsb_dir()
needs_jsb = pytest.mark.skipif(JSB is None or not (JSB / "jsb-chorales-quarter.json").is_file(),
                               reason=f"needs the JSB split, not found at ATELIER_JSB_DIR={JSB} (a user's clone "
                                      "has no ../shared/datasets)")
TINY = {"seq_steps": 16, "model": {"d_hidden": 16, "d_embed": 8, "n_layers": 1}, "baseline": {"d_hidden": 8}}


@pytest.fixture(params=["token", "frame"])
def midi_objective(request, tmp_path, midi_writer, chorale_notes):
    for i in range(4):
        midi_writer(tmp_path / f"c{i}.mid", chorale_notes(8 + 4 * i))
    (tmp_path / "bad.mid").write_bytes(b"nope")
    model = {**TINY["model"], "holds": True, "arch": request.param, "d_decoder": 16}
    return MusicObjective({**TINY, "model": model}, midi=tmp_path, device="cpu")


def test_objective_contract(midi_objective):
    obj = midi_objective
    keys = torch.arange(5, 13)
    a, b = obj.batch(keys), obj.batch(keys.clone())
    assert all(torch.equal(a[k], b[k]) for k in a)  # pure in the keys
    assert not torch.equal(obj.batch(keys + 100)["targets"], a["targets"])
    groups = obj.param_groups()
    assert set(groups) == {"rnn", "baseline"}
    for group in groups:
        loss, logs = obj.loss(group, a, 0)
        assert torch.isfinite(loss) and all(np.isfinite(v) for v in logs.values())
        loss.backward()
    scores = obj.evaluate()
    assert set(scores) == {"valid_nll", "valid_baseline_nll"}
    img = obj.preview()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    summary = obj.data_summary()
    assert summary["files_skipped"][0]["file"] == "bad.mid" and summary["train_pieces"] == 3
    weights = {f"{n}.{k}": v for n in obj.export_nets for k, v in obj.nets[n].state_dict().items()}
    model = load(obj.config, weights, "cpu")
    assert model.generate(bars=1).shape == (16, 88)


def test_one_source_required(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        MusicObjective(TINY)
    with pytest.raises(ValueError, match="unknown corpus"):
        MusicObjective(TINY, corpus="mozart")
    with pytest.raises(ValueError, match="MusicConfig has no setting .layers."):
        MusicObjective({"layers": 3}, corpus="bach")
    with pytest.raises(FileNotFoundError, match="no usable MIDI"):
        MusicObjective(TINY, midi=tmp_path)


@needs_jsb
def test_jsb_split_and_training_step():
    split = load_jsb(JSB, "quarter")
    assert [len(split[s]) for s in ("train", "valid", "test")] == [229, 76, 77]
    assert sum(p.steps for p in split["test"]) == 4725
    obj = MusicObjective({**TINY, "steps_per_quarter": 1}, jsb=JSB)
    opt = torch.optim.Adam(obj.param_groups()["rnn"], lr=1e-2)
    batch = obj.batch(torch.arange(8))
    first, _ = obj.loss("rnn", batch, 0)
    for _ in range(5):
        loss, _ = obj.loss("rnn", batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item()
    weights = {f"{n}.{k}": v for n in obj.export_nets for k, v in obj.nets[n].state_dict().items()}
    scores = evaluate_jsb(load(obj.config, weights), load_baseline(obj.config, weights), JSB)
    assert scores["steps"] == 4725 and 0 < scores["nll"] < 80 and 0 < scores["baseline_nll"] < 80
    # The default's onset marks (the shipped recipe's) are turned off for JSB, which has none, and it is said.
    assert obj.cfg.model.holds is False and obj.config["model"]["holds"] is False
    assert "the JSB split has none" in obj.data_summary()["notes"][0]


def test_bach_corpus_converts_and_caches(tmp_path, monkeypatch):
    from engine.music.bach import cache_dir, load_bach
    monkeypatch.setenv("ATELIER_CACHE_DIR", str(tmp_path))
    heard = []
    pieces, skipped = load_bach(4, limit=2, progress=lambda f, msg: heard.append(msg))  # all ~400 take minutes
    assert len(pieces) + len(skipped) == 2 and pieces
    assert len(list(cache_dir().glob("*.npz"))) == 2
    assert heard == ["converting Bach chorale 1 of 2 into the cache (once)",
                     "converting Bach chorale 2 of 2 into the cache (once)"]
    again, _ = load_bach(4, limit=2, progress=lambda f, msg: heard.append(msg))
    assert len(heard) == 2  # from the cache: nothing to wait for
    assert all(np.array_equal(p.roll, q.roll) for p, q in zip(pieces, again))
    p = pieces[0]
    assert p.has_onsets and (p.roll == 2).any() and p.steps_per_bar in (12, 16)


def test_the_bach_corpus_is_chorales_only_one_file_each():
    from engine.music.bach import chorale_paths

    paths = chorale_paths()
    names = [p.stem for p in paths]
    assert len(names) == len(set(names)) >= 340, "one file per chorale"
    assert "bwv846" not in names, "the C major prelude is not a chorale"
    assert "bwv1.6" not in names, "a chorale movement with instrumental parts is not a four-part chorale"


def test_a_chorale_repeating_another_in_another_key_is_skipped(tmp_path, monkeypatch):
    from engine.music import bach

    monkeypatch.setenv("ATELIER_CACHE_DIR", str(tmp_path))
    bach.cache_dir().mkdir(parents=True)
    roll = np.zeros((8, 88), np.int8)
    roll[:4, 40], roll[4:, 44], roll[:, 30] = 2, 2, 1
    for name, shift in (("first", 0), ("again", 5), ("other", 0)):
        moved = np.roll(roll, shift, axis=1)
        if name == "other":
            moved[6, 50] = 2
        np.savez(bach.cache_dir() / f"{name}-4.npz", roll=moved, steps_per_bar=16, bar_phase=0)
    monkeypatch.setattr(bach, "chorale_paths", lambda: [Path(f"{n}.mxl") for n in ("first", "again", "other")])
    pieces, skipped = bach.load_bach(4)
    assert [p.name for p in pieces] == ["first", "other"]
    assert skipped == [("again.mxl", "repeats first (up to transposition)")]
