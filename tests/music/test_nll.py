import math

import numpy as np
import pytest
import torch

from engine.data.piece import Piece
from engine.kinds.music_eval import frame_nll
from engine.models.music_baseline import MusicBaseline, MusicBaselineConfig
from engine.models.music_rnn import MusicRNNConfig, build_music_net

torch.set_num_threads(1)
ARCHS = ["token", "frame"]


def _piece(steps: list[list[int]]) -> Piece:
    roll = np.zeros((len(steps), 88), np.int8)
    for t, keys in enumerate(steps):
        roll[t, keys] = 1
    return Piece("p", roll, 1, 4, 0, has_onsets=False)


def test_baseline_with_zero_logits_scores_88_log2():
    model = MusicBaseline(MusicBaselineConfig(d_hidden=4))
    for p in model.head.parameters():
        torch.nn.init.zeros_(p)
    out = frame_nll(model, [_piece([[0, 5], [], [87]])])
    assert out["steps"] == 3
    assert abs(out["nll"] - 88 * math.log(2)) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_token_model_with_zero_logits_matches_hand_count(arch):
    # All logits equal: each token is uniform over what the mask allows. At floor f the
    # allowed tokens are keys f..87 plus STEP_END, i.e. 89 - f choices.
    model = build_music_net(MusicRNNConfig(d_hidden=4, d_embed=4, n_layers=1, dropout=0.0, arch=arch, d_decoder=8))
    for p in model.head.parameters():
        torch.nn.init.zeros_(p)
    steps = [[10, 20], [], [87]]
    expected = (math.log(89) + math.log(89 - 11) + math.log(89 - 21)) + math.log(89) + (math.log(89) + math.log(1))
    out = frame_nll(model, [_piece(steps)])
    assert abs(out["nll"] - expected / 3) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_nll_equals_token_by_token_product(arch, step_logprobs):
    # The NLL the evaluator reports is -log of the product of the model's token
    # probabilities, computed here one step at a time with the state carried by hand.
    torch.manual_seed(1)
    model = build_music_net(MusicRNNConfig(d_hidden=16, d_embed=8, n_layers=2, dropout=0.0, bar_steps=4,
                                           arch=arch, d_decoder=16)).eval()
    rng = np.random.default_rng(0)
    pieces = [_piece([sorted(rng.choice(88, size=rng.integers(0, 5), replace=False).tolist()) for _ in range(n)])
              for n in (7, 3, 11)]
    batched = frame_nll(model, pieces, batch_size=2)
    total, steps = 0.0, 0
    with torch.no_grad():
        for p in pieces:
            state, prev = None, np.zeros(88, np.int8)
            for t, row in enumerate(p.roll):
                logp, state = step_logprobs(model, row, prev, t, state)
                total -= float(logp.sum())
                prev, steps = row, steps + 1
    assert batched["steps"] == steps
    assert abs(batched["nll"] - total / steps) < 1e-4
