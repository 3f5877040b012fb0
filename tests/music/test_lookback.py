"""Issue 21: the frame model reads the music's bar structure (lookback): the repeat flags and a
gated copy of the steps one and two bars back, in the bar of the music played."""
import numpy as np
import pytest
import torch

from engine.config import build
from engine.music.batch import collate, encode_window
from engine.music.config import MusicConfig, build_music_net, stored_config
from engine.music.evaluation import frame_nll, token_nll
from engine.music.frame_model import lookback_inputs
from engine.music.generation import MusicModel
from engine.music.piece import N_KEYS, ONSET, SOUNDING, Piece
from engine.music.sampling import Controls, Stepper
from engine.music.style import repeated_bars

torch.set_num_threads(1)


def _model(lookback: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return build_music_net(build(MusicConfig, {"model": {"d_hidden": 24, "d_decoder": 32, "n_layers": 1,
                                                           "lookback": lookback}}).model)


def _bars(rng: np.random.Generator, bar: int, repeats: int, notes: int = 3) -> np.ndarray:
    """One random bar of `notes` held notes, played `repeats` times."""
    one = np.zeros((bar, N_KEYS), np.int8)
    starts = np.sort(rng.choice(bar, notes, replace=False))
    for start, end in zip(starts, list(starts[1:]) + [bar]):
        key = int(rng.integers(30, 60))
        one[start:end, key] = SOUNDING
        one[start, key] = ONSET
    return np.tile(one, (repeats, 1))


def test_lookback_inputs_read_the_steps_one_and_two_bars_back():
    bar, n = 3, N_KEYS
    roll = np.zeros((9, n), np.int8)
    roll[0, 5], roll[1, 5], roll[3, 7], roll[6, 5], roll[7, 5] = ONSET, SOUNDING, ONSET, ONSET, SOUNDING
    x = lookback_inputs(roll, np.arange(9), bar)
    assert x.shape == (9, 4 * n + 2)
    one_sounding, one_onset, two_sounding = x[:, :n], x[:, n:2 * n], x[:, 2 * n:3 * n]
    assert not one_sounding[:3].any() and not two_sounding[:6].any()  # before the piece: nothing
    assert one_sounding[3, 5] and one_onset[3, 5] and one_sounding[4, 5] and not one_onset[4, 5]
    assert one_sounding[6, 7] and two_sounding[6, 5] and two_sounding[8].sum() == 0
    repeat_one, repeat_two = x[:, -2], x[:, -1]
    # Step 7 equals step 1 (two bars back), step 6 equals step 0: the steps after them carry the flag.
    assert repeat_two[7] and repeat_two[8] and not repeat_two[6]
    assert np.flatnonzero(repeat_one).tolist() == [6]  # steps 3-4 differ from 0-1 and 6-7 from 3-4; 5 and 2 are silent
    assert lookback_inputs(roll, [9], bar).shape == (1, 4 * n + 2)  # the step after the roll


def test_the_numpy_twin_scores_as_the_module_in_three_four():
    """The generation path (Stepper, numpy) gives the module's exact NLL, copy gates on."""
    model = _model().eval()
    with torch.no_grad():
        model.copy_gate.bias[:] = torch.tensor([3.0, -2.0])  # a strong copy, so a wrong copy shows
    rng = np.random.default_rng(1)
    roll = np.concatenate([_bars(rng, 12, 2), _bars(rng, 12, 2)])
    piece = Piece("p", roll, steps_per_bar=12, meter=(3, 4))
    want = frame_nll(model, [piece])["nll"]
    stepper, lay, total = Stepper(model, steps_per_bar=12), model.config.layout, 0.0
    for frame in roll:
        cursor, floor = stepper._open(), 0
        for token in lay.step_tokens(frame, stepper.prev):
            logits = torch.as_tensor(cursor.logits())[None, None]
            masked = model.mask(logits, torch.tensor([[floor]]), torch.as_tensor(stepper.prev > 0)[None, None].float())
            total -= float(torch.log_softmax(masked[0, 0].double(), -1)[token])
            if token != lay.step_end:
                cursor.read(token)
                floor = lay.key_of(token) + 1
        stepper._end_step(frame, cursor)
    assert total / len(roll) == pytest.approx(want, abs=1e-4)


def test_a_restored_stream_plays_the_same_as_before():
    model = _model().eval()
    with torch.no_grad():
        model.copy_gate.bias[:] = 4.0
    stepper = Stepper(model, steps_per_bar=16)
    for frame in _bars(np.random.default_rng(2), 16, 2):
        stepper.force(frame)
    snap = stepper.snapshot()
    first = [stepper.sample(Controls(), np.random.default_rng(5)) for _ in range(40)]
    stepper.restore(snap)
    again = [stepper.sample(Controls(), np.random.default_rng(5)) for _ in range(40)]
    assert np.array_equal(np.array(first), np.array(again))


def test_models_stored_before_lookback_load_without_it():
    old = {"model": {"arch": "frame", "d_hidden": 24}}  # a stored config from before the setting
    assert stored_config(old).model.lookback is False


def test_a_lookback_model_learns_to_repeat_bars_where_the_plain_one_cannot():
    """Pieces of one random bar played four times: after the first bar everything is a copy. With
    lookback a short training run learns to copy (held-out NLL well below the plain model's) and
    continues a primed bar by repeating it."""
    rng = np.random.default_rng(0)
    train = [Piece(f"t{i}", _bars(rng, 16, 4)) for i in range(64)]
    held = [Piece(f"h{i}", _bars(rng, 16, 4)) for i in range(8)]
    scores = {}
    for lookback in (False, True):
        model = _model(lookback)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(150):
            batch = collate([encode_window(train[(step * 8 + i) % 64], 0, 64, model.config.layout, lookback)
                             for i in range(8)])
            nll = token_nll(model, batch)
            loss = nll.sum() / (batch["targets"] >= 0).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        scores[lookback] = frame_nll(model, held)["nll"]
        if lookback:
            music = MusicModel(model.eval(), build(MusicConfig, {}).to_dict())
            primer = Piece("primer", _bars(rng, 16, 1))
            roll = music.generate(bars=4, seed=0, primer=primer)
            repeats, bars = repeated_bars(Piece("g", roll))
    assert scores[True] < 0.5 * scores[False], scores
    assert repeats >= 3 and bars == 5, (repeats, bars)
