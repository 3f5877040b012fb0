"""Issue 21: the model sounds no more notes at once than its training music (the voice limit)."""
import numpy as np
import torch

from engine.music.objective import voices_of
from engine.music.piece import Piece
from engine.music.sampling import Controls

torch.set_num_threads(1)


def _most(roll) -> int:
    return int((np.asarray(roll) > 0).sum(axis=1).max())


def test_voices_are_the_median_over_pieces_of_the_most_keys_at_once():
    def piece(voices: int, name: str) -> Piece:
        roll = np.zeros((8, 88), np.int8)
        roll[:4, 30:30 + 4] = 1
        roll[4, 40:40 + voices] = 1
        return Piece(name, roll, 4, 16)

    assert voices_of([piece(4, "a"), piece(4, "b"), piece(9, "c")]) == 4
    assert voices_of([piece(1, "solo")]) == 4  # the longer chord of the same piece
    assert voices_of([]) == 0


def test_the_sampler_never_sounds_more_notes_than_the_voice_limit(tiny_model):
    free = tiny_model.generate(bars=2, seed=0, controls=Controls(density=4.0))
    assert _most(free) > 3, "the untrained model must sound more than the limit without it"
    tiny_model.voices = 3
    for seed in range(3):
        assert _most(tiny_model.generate(bars=2, seed=seed, controls=Controls(density=4.0))) <= 3
    wider = tiny_model.generate(bars=2, seed=0, controls=Controls(max_polyphony=5, density=4.0))
    assert 3 < _most(wider) <= 5  # max_polyphony overrides the model's voices
    session = tiny_model.session(seed=1, controls=Controls(density=4.0))
    session.next_beats(4)
    session.set(density=0.5)
    session.feed([{"start": 0, "duration": 480, "pitch": p, "velocity": 90, "channel": 0} for p in (60, 64, 67, 72)])
    session.next_beats(8)
    assert _most(session.roll) <= 3


def test_a_limit_that_never_binds_changes_nothing(tiny_model):
    unlimited = tiny_model.generate(bars=2, seed=4)
    tiny_model.voices = 88
    assert np.array_equal(tiny_model.generate(bars=2, seed=4), unlimited)




def test_no_parallels_draws_again_steps_with_parallel_fifths_or_octaves(tiny_model):
    from engine.music.style import parallels

    def found(no_parallels: bool) -> int:
        rolls = [tiny_model.generate(bars=8, seed=s, controls=Controls(no_parallels=no_parallels)) for s in range(4)]
        return sum(parallels(Piece("g", r))[0] for r in rolls)

    assert found(False) > 0, "the untrained model must write some parallels without the rule"
    assert found(True) == 0
