import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.music.config import build_music_net
from engine.music.piece import ONSET, SOUNDING, roll_notes
from engine.music.token_model import MusicRNNConfig
from engine.music.tokens import TokenLayout, roll_to_tokens, token_context, tokens_to_roll

torch.set_num_threads(1)


def _rolls(holds: bool):
    values = st.sampled_from([0, 0, 0, 1, 2] if holds else [0, 0, 1])
    return st.integers(1, 12).flatmap(
        lambda t: st.lists(st.lists(values, min_size=88, max_size=88), min_size=t, max_size=t))


def _canonical(roll: np.ndarray) -> np.ndarray:
    """With holds, a key that did not sound before must be an onset."""
    r = roll.copy()
    for t in range(len(r)):
        prev = r[t - 1] if t else np.zeros(88, np.int8)
        r[t][(r[t] == SOUNDING) & (prev == 0)] = ONSET
    return r


@settings(max_examples=40, deadline=None)
@given(_rolls(False))
def test_round_trip_without_holds(rows):
    roll = (np.array(rows, np.int8) > 0).astype(np.int8)
    lay = TokenLayout(holds=False)
    assert np.array_equal(tokens_to_roll(roll_to_tokens(roll, lay), lay), roll)


@settings(max_examples=40, deadline=None)
@given(_rolls(True))
def test_round_trip_with_holds(rows):
    roll = _canonical(np.array(rows, np.int8))
    lay = TokenLayout(holds=True)
    tokens = roll_to_tokens(roll, lay)
    assert np.array_equal(tokens_to_roll(tokens, lay), roll)
    # Each step is spelled in strictly ascending key order, then STEP_END.
    for step in np.split(tokens, np.flatnonzero(tokens == lay.step_end) + 1)[:-1]:
        keys = step[:-1] % 88
        assert np.all(np.diff(keys) > 0)


def test_token_context_floor_and_steps():
    lay = TokenLayout(holds=False)
    roll = np.zeros((2, 88), np.int8)
    roll[0, [3, 10]] = 1
    tokens = roll_to_tokens(roll, lay)  # [3, 10, END, END]
    ctx = token_context(tokens, lay)
    assert tokens.tolist() == [3, 10, 88, 88]
    assert ctx["inputs"].tolist() == [88, 3, 10, 88]
    assert ctx["floor"].tolist() == [0, 4, 11, 0]
    assert ctx["step"].tolist() == [0, 0, 0, 1]
    assert [np.flatnonzero(w).tolist() for w in ctx["written"]] == [[], [3], [3, 10], []]


def test_roll_notes_split_on_onset():
    roll = np.zeros((4, 88), np.int8)
    roll[0:4, 5] = [ONSET, SOUNDING, ONSET, SOUNDING]
    assert roll_notes(roll) == [(0, 2, 5), (2, 4, 5)]


@pytest.mark.parametrize("arch", ["token", "frame"])
def test_exact_frame_probabilities_sum_to_one(arch, step_logprobs):
    # Tiny keyboard: every key set (and, with holds, every onset/held labelling) is enumerable.
    n = 5
    for holds in (False, True):
        torch.manual_seed(0)
        model = build_music_net(MusicRNNConfig(holds=holds, n_keys=n, d_embed=8, d_hidden=8, n_layers=1,
                                               dropout=0.0, bar_steps=4, arch=arch, d_decoder=8)).eval()
        prev = np.array([1, 0, 1, 1, 0], np.int8)
        total = 0.0
        with torch.no_grad():
            for labels in itertools.product(*[(0, 1, 2) if (holds and prev[k]) else (0, 2) for k in range(n)]):
                frame = np.array(labels, np.int8)
                if not holds:
                    frame = (frame > 0).astype(np.int8)
                    if labels != tuple(2 * (frame > 0)):
                        continue
                total += math.exp(float(step_logprobs(model, frame, prev, 1)[0].sum()))
        assert abs(total - 1.0) < 1e-5, (holds, total)
