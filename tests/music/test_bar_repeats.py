"""Issue 21: a model repeats bars as often as its training music does (its data summary's
`bar_repeats`), and plays new bars otherwise."""
import numpy as np
import torch

from engine.music.objective import bar_repeats_rate
from engine.music.piece import Piece
from engine.music.style import bar_repeats, repeated_bars

torch.set_num_threads(1)


def _piece(bars: list[int], name: str = "p") -> Piece:
    """One note per bar (16 steps), of the given pitches: equal pitches are equal bars."""
    roll = np.zeros((16 * len(bars), 88), np.int8)
    for i, key in enumerate(bars):
        roll[16 * i, key], roll[16 * i + 1:16 * i + 8, key] = 2, 1
    return Piece(name, roll, 4, 16)


def test_the_nearest_earlier_equal_bar_is_counted_from_the_fifth_bar_on():
    counts, bars = bar_repeats(_piece([1, 2, 3, 4, 4, 2, 9, 4, 9]))
    # bar 4 (4) one back; 5 (2) four back; 6 (9) new; 7 (4) three back; 8 (9) two back
    assert bars == 5 and counts.tolist() == [0, 1, 1, 1, 1]
    pieces = [_piece([1, 2, 1, 2] * 5, f"p{i}") for i in range(2)]  # from the fifth bar on, each repeats two back
    assert bar_repeats_rate(pieces) == [0.0, 1.0, 0.0, 0.0]
    assert bar_repeats_rate(pieces[:1]) is None  # 16 bars counted: 20 at least


def test_generation_repeats_bars_as_often_as_the_training_music_and_never_by_default(tiny_model):
    plain = [tiny_model.generate(bars=16, seed=s) for s in range(4)]
    assert sum(repeated_bars(Piece("g", r))[0] for r in plain) == 0, "an untrained model repeats no whole bar"
    tiny_model.bar_repeats = [0.0, 0.5, 0.0, 0.0]  # half the bars replay the bar two back
    rolls = [tiny_model.generate(bars=16, seed=s) for s in range(4)]
    counts = sum(bar_repeats(Piece("g", r))[0] for r in rolls)
    bars = sum(bar_repeats(Piece("g", r))[1] for r in rolls)
    assert 0.3 <= counts[1:].sum() / bars <= 0.7, counts
    for roll in rolls:  # every note still starts with an onset
        sounding = roll > 0
        started = np.vstack([np.zeros((1, 88), bool), sounding[:-1]])
        assert not ((roll == 1) & ~started).any()


def test_a_live_session_repeats_bars_too_within_the_controls_now_in_force(tiny_model):
    tiny_model.bar_repeats = [0.0, 0.5, 0.0, 0.0]
    session = tiny_model.session(seed=3)
    session.next_beats(64)
    counts, bars = bar_repeats(Piece("s", np.array(session.roll)))
    assert 0.3 <= counts[1:].sum() / bars <= 0.7, counts
    session.set(key="C major")  # bars played before the scale lock are not played again outside it
    session.next_beats(64)
    later = np.array(session.roll[256:])
    pitch_classes = (np.flatnonzero((later > 0).any(axis=0)) + 21) % 12
    assert set(pitch_classes) <= {0, 2, 4, 5, 7, 9, 11}
    assert bar_repeats(Piece("s", later))[0][1:].sum() > 0, "bars within the scale still repeat"
