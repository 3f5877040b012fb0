"""Issue 21: the model sounds no more notes at once than its training music (the voice limit), and
holds to the part-writing rule when its training music does (the no_parallels default)."""
import numpy as np
import torch

from engine.music.generation import avoids_parallels
from engine.music.objective import parallels_rate, voices_of
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


def _chords(chords: list[tuple[int, ...]], name: str, beat: int = 4) -> Piece:
    """A piece of one chord per beat (MIDI pitches), each struck on its beat."""
    roll = np.zeros((len(chords) * beat, 88), np.int8)
    for b, chord in enumerate(chords):
        for p in chord:
            roll[b * beat:(b + 1) * beat, p - 21] = 1
            roll[b * beat, p - 21] = 2
    return Piece(name, roll, 4, 16)


def test_the_training_musics_parallels_are_counted_by_the_style_rule():
    # I IV V I in four voices, contrary and oblique motion: 3 chord changes, no parallels.
    good = _chords([(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 71), (48, 55, 64, 72)], "good")
    # Three voices stepping up together: bass and tenor a fifth apart at every change (3 changes).
    bad = _chords([(48, 55, 64), (50, 57, 65), (52, 59, 67), (53, 60, 69)], "bad")
    melody = _chords([(60,), (62,), (64,), (65,)], "melody")
    assert parallels_rate([good]) == 0.0
    assert parallels_rate([bad]) == 100.0
    assert parallels_rate([good, bad, melody]) == 50.0  # pooled over chord changes: 3 of 6
    assert parallels_rate([melody]) is None  # no chord changes to count


def test_the_part_writing_rule_defaults_to_what_the_training_music_does():
    assert avoids_parallels({"data": {"voices": 4, "parallels_per_100": 0.75}})
    assert not avoids_parallels({"data": {"voices": 4, "parallels_per_100": 7.9}})  # music that writes them
    assert not avoids_parallels({"data": {"voices": 1, "parallels_per_100": None}})  # a melody
    assert not avoids_parallels({"data": {"voices": 2, "parallels_per_100": 0.0}})  # two voices: not part writing
    assert not avoids_parallels({"data": {"voices": 4}})  # stored before the rate was recorded


def test_the_sampler_follows_the_models_part_writing_unless_told(tiny_model):
    from engine.music.style import parallels

    def found(**controls) -> int:
        rolls = [tiny_model.generate(bars=8, seed=s, controls=Controls(**controls)) for s in range(4)]
        return sum(parallels(Piece("g", r))[0] for r in rolls)

    assert found() > 0, "a model whose music writes parallels keeps them by default"
    tiny_model.avoids_parallels = True
    assert found() == 0
    assert found(no_parallels=False) > 0  # an explicit false still wins
    session = tiny_model.session(seed=2)  # live sessions follow the model too
    session.next_beats(32)
    assert parallels(Piece("s", np.array(session.roll)))[0] == 0
