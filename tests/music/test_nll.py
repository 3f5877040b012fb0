import math

import numpy as np
import pytest
import torch

from engine.music.baseline import MusicBaseline, MusicBaselineConfig
from engine.music.config import build_music_net
from engine.music.evaluation import frame_nll, mixture_frame_nll
from engine.music.piece import Piece
from engine.music.token_model import MusicRNNConfig

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
    model = build_music_net(MusicRNNConfig(holds=False, d_hidden=4, d_embed=4, n_layers=1, dropout=0.0, arch=arch, d_decoder=8))
    for p in model.head.parameters():
        torch.nn.init.zeros_(p)
    steps = [[10, 20], [], [87]]
    expected = (math.log(89) + math.log(89 - 11) + math.log(89 - 21)) + math.log(89) + (math.log(89) + math.log(1))
    out = frame_nll(model, [_piece(steps)])
    assert abs(out["nll"] - expected / 3) < 1e-4


def _stepwise_logprobs(model, pieces: list[Piece], step_logprobs) -> list[torch.Tensor]:
    """Each step's token log-probabilities, computed one step at a time with the state carried by hand."""
    out = []
    with torch.no_grad():
        for piece in pieces:
            state, prev = None, np.zeros(88, np.int8)
            for t, row in enumerate(piece.roll):
                logp, state = step_logprobs(model, row, prev, t, state)
                out.append(logp)
                prev = row
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_nll_equals_token_by_token_product(arch, step_logprobs):
    # The NLL the evaluator reports is -log of the product of the model's token
    # probabilities, computed here one step at a time with the state carried by hand.
    torch.manual_seed(1)
    model = build_music_net(MusicRNNConfig(holds=False, d_hidden=16, d_embed=8, n_layers=2, dropout=0.0, bar_steps=4,
                                           arch=arch, d_decoder=16)).eval()
    rng = np.random.default_rng(0)
    pieces = [_piece([sorted(rng.choice(88, size=rng.integers(0, 5), replace=False).tolist()) for _ in range(n)])
              for n in (7, 3, 11)]
    batched = frame_nll(model, pieces, batch_size=2)
    by_hand = _stepwise_logprobs(model, pieces, step_logprobs)
    assert batched["steps"] == len(by_hand)
    assert abs(batched["nll"] + sum(float(logp.sum()) for logp in by_hand) / len(by_hand)) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_token_mixture_of_models(arch, step_logprobs):
    pieces = [_piece([[40, 44, 47], [40, 43], [], [52, 60, 64, 67]]), _piece([[30], [31, 50]])]
    a, b = (build_music_net(MusicRNNConfig(holds=False, d_hidden=8, d_embed=8, n_layers=1, dropout=0.0, bar_steps=4, arch=arch,
                                           d_decoder=8)).eval() for _ in range(2))
    alone_a, alone_b = frame_nll(a, pieces)["nll"], frame_nll(b, pieces)["nll"]
    assert abs(mixture_frame_nll([a, a], pieces)["nll"] - alone_a) < 1e-5  # a model mixed with itself is itself
    mixed = mixture_frame_nll([a, b], pieces)
    assert mixed["steps"] == 6 and mixed["nll"] <= (alone_a + alone_b) / 2  # -log of a mean <= mean of -logs
    assert mixed["nll"] != pytest.approx(alone_a) and mixed["nll"] != pytest.approx(alone_b)
    # By hand: each token's probability is the mean of the two models' for the same prefix.
    by_a, by_b = _stepwise_logprobs(a, pieces, step_logprobs), _stepwise_logprobs(b, pieces, step_logprobs)
    by_hand = -sum(float((torch.logaddexp(la, lb) - math.log(2)).sum()) for la, lb in zip(by_a, by_b)) / len(by_a)
    assert abs(mixed["nll"] - by_hand) < 1e-4
    other = build_music_net(MusicRNNConfig(d_hidden=8, holds=True, arch=arch, d_decoder=8))
    with pytest.raises(ValueError, match="same token layout"):
        mixture_frame_nll([a, other], pieces)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_nll_with_onsets_equals_token_by_token_product(arch, step_logprobs):
    # As above, with onset/held marks (the shipped 16th-note models): a key held from the step
    # before may be SOUNDING (held) or ONSET (struck again); any other sounding key is an onset.
    torch.manual_seed(2)
    model = build_music_net(MusicRNNConfig(holds=True, d_hidden=16, d_embed=8, n_layers=2, dropout=0.0,
                                           bar_steps=16, arch=arch, d_decoder=16)).eval()
    rng = np.random.default_rng(1)
    pieces = []
    for n in (9, 4, 13):
        roll = np.zeros((n, 88), np.int8)
        for t in range(n):
            roll[t, rng.choice(88, size=rng.integers(0, 4), replace=False)] = 2
            held = (roll[t - 1] > 0) & (rng.random(88) < 0.7) if t else np.zeros(88, bool)
            roll[t, held] = rng.choice([1, 2], size=int(held.sum()), p=[0.8, 0.2])
        pieces.append(Piece("p", roll, 4, 16, 0, has_onsets=True))
    batched = frame_nll(model, pieces, batch_size=2)
    by_hand = _stepwise_logprobs(model, pieces, step_logprobs)
    assert batched["steps"] == len(by_hand)
    assert abs(batched["nll"] + sum(float(logp.sum()) for logp in by_hand) / len(by_hand)) < 1e-4
