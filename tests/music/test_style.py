"""Style measures on hand-made rolls whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from engine.music.piece import LOWEST, N_KEYS, ONSET, SOUNDING, Piece, roll_notes
from engine.music.style import (
    key_confidence, note_lengths, notes_in_key, onset_positions, parallels, pitch_range, polyphony, repeated_bars,
    style_goals, style_of, total_variation,
)

C_MAJOR = (60, 62, 64, 65, 67, 69, 71, 72)


def piece(notes: list[tuple[int, int, int]], steps: int | None = None, bar: int = 16, phase: int = 0) -> Piece:
    """A Piece from (start step, end step, MIDI pitch) notes, onsets marked."""
    roll = np.zeros((steps or max(e for _, e, _ in notes), N_KEYS), np.int8)
    for s, e, p in notes:
        roll[s:e, p - LOWEST] = SOUNDING
        roll[s, p - LOWEST] = ONSET
    return Piece("test", roll, steps_per_bar=bar, bar_phase=phase)


def melody(pitches, length: int = 4) -> Piece:
    return piece([(i * length, (i + 1) * length, p) for i, p in enumerate(pitches)])


def test_a_major_scale_is_all_in_key_and_a_chromatic_one_is_not():
    scale = melody(C_MAJOR)
    assert notes_in_key(scale) == (8, 8)
    assert key_confidence(scale) > 0.8
    assert pitch_range(scale) == 12
    assert notes_in_key(melody(range(60, 72))) == (7, 12)  # a 7-note scale holds at most 7 of the 12
    # A minor with its raised leading tone fits the harmonic-minor scale entirely.
    assert notes_in_key(melody((69, 71, 72, 74, 76, 77, 80, 81))) == (8, 8)


def test_note_lengths_polyphony_and_onsets_count_what_was_written():
    notes = [(0, 1, 60), (1, 2, 62), (2, 4, 64), (4, 8, 65), (8, 16, 67)]  # 16th, 16th, 8th, quarter, half
    p = piece(notes)
    assert note_lengths(p).tolist() == [2, 1, 0, 1, 0, 1, 0, 0]
    assert onset_positions(p).tolist() == [1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    chord = piece([(0, 4, 60), (0, 4, 64), (0, 4, 67), (4, 8, 60)], steps=10)
    assert polyphony(chord).tolist() == [2, 4, 0, 4, 0, 0, 0, 0, 0]  # 2 silent, 4 of one key, 4 of three
    # A repeated key re-attacked is two notes, held it is one.
    assert note_lengths(piece([(0, 2, 60), (2, 4, 60)])).tolist() == [0, 2, 0, 0, 0, 0, 0, 0]
    # In 3/4 with a one-beat pickup the first note sits on the bar's third beat.
    waltz = piece([(0, 4, 67), (4, 16, 72)], bar=12, phase=8)
    assert onset_positions(waltz).tolist() == [1] + [0] * 7 + [1, 0, 0, 0]


def test_a_bar_played_four_times_repeats_three_times():
    bar = [(0, 4, 60), (4, 8, 64), (8, 12, 67), (12, 16, 72)]
    four = [(s + 16 * i, e + 16 * i, p) for i in range(4) for s, e, p in bar]
    assert repeated_bars(piece(four)) == (3, 4)
    assert repeated_bars(piece(four, steps=80)) == (3, 4)  # a silent bar is left out
    other = four[:12] + [(48, 64, 59)]
    assert repeated_bars(piece(other)) == (2, 4)
    # The same notes held over the bar line are not the same bar as re-attacked ones.
    assert repeated_bars(piece([(0, 32, 60)])) == (0, 2)
    # With a 4-step pickup the bars start at step 4; the partial bars at both ends are not counted.
    shifted = [(s + 4, e + 4, p) for s, e, p in four]
    assert repeated_bars(piece(shifted, steps=72, phase=12)) == (3, 4)


def test_parallel_fifths_and_octaves_are_counted_and_other_motion_is_not():
    fifths = piece([(0, 4, 48), (0, 4, 55), (4, 8, 50), (4, 8, 57)])  # C-G to D-A
    assert parallels(fifths) == (1, 1)
    octaves = piece([(0, 4, 48), (0, 4, 60), (4, 8, 47), (4, 8, 59)])  # C-C to B-B
    assert parallels(octaves) == (1, 1)
    compound = piece([(0, 4, 48), (0, 4, 67), (4, 8, 50), (4, 8, 69)])  # a twelfth to a twelfth
    assert parallels(compound) == (1, 1)
    contrary = piece([(0, 4, 48), (0, 4, 55), (4, 8, 43), (4, 8, 62)])  # fifth to octave-and-fifth, apart
    assert parallels(contrary) == (0, 1)
    oblique = piece([(0, 8, 48), (0, 4, 55), (4, 8, 57)])  # the bass holds
    assert parallels(oblique) == (0, 1)
    fifth_to_sixth = piece([(0, 4, 48), (0, 4, 55), (4, 8, 50), (4, 8, 59)])
    assert parallels(fifth_to_sixth) == (0, 1)
    # Four voices, I to ii in root position: bass and tenor move up a step in fifths, the rest moves too.
    satb = piece([(0, 4, 48), (0, 4, 55), (0, 4, 64), (0, 4, 72), (4, 8, 50), (4, 8, 57), (4, 8, 65), (4, 8, 74)])
    assert parallels(satb) == (2, 1)  # bass-tenor fifths and bass-soprano octaves (C3-C5 to D3-D5)
    # A repeated chord is no chord change; a single note is no chord.
    assert parallels(piece([(0, 4, 48), (0, 4, 55), (4, 8, 48), (4, 8, 55), (8, 12, 60)])) == (0, 0)


def test_total_variation():
    assert total_variation(np.array([1, 2, 3]), np.array([2, 4, 6])) == 0.0
    assert total_variation(np.array([1, 0]), np.array([0, 0, 5])) == 1.0
    assert total_variation(np.array([1, 1]), np.array([1, 0])) == pytest.approx(0.5)


def test_style_of_pools_pieces_and_the_goals_compare_with_real_and_baseline():
    scale, chromatic = melody(C_MAJOR), melody(range(60, 72), length=1)
    real = style_of([scale, scale])
    assert real["notes_in_key"] == 1.0 and real["single_16th"] == 0.0 and real["pieces"] == 2
    assert real["repeated_bars"] == 0.0 and real["pitch_range"] == 12.0
    noisy = style_of([scale, chromatic])
    assert noisy["notes_in_key"] == pytest.approx(15 / 20)
    assert noisy["single_16th"] == pytest.approx(12 / 20)
    goals = style_goals(real, real, noisy)
    assert all(met for met, _ in goals.values())
    goals = style_goals(real, noisy, real)
    assert not goals["notes_in_key within 5 points"][0] and not goals["single_16th within 10 points"][0]
    assert not goals["note_lengths TV <= half the baseline's"][0]


def test_the_style_suite_exports_a_score_with_its_meter_tempo_key_and_pickup():
    """bench/music_suite.py writes a music21 score as a user's MIDI file would be: read back as a Piece,
    a 6/8 tune in B minor at 90 BPM with an eighth-note pickup keeps all four."""
    import sys
    from pathlib import Path

    from music21 import key, meter, note, stream, tempo

    from engine.music.midi_files import piece_from_midi

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from music_suite import score_to_midi

    pickup = stream.Measure(number=0)
    pickup.append([meter.TimeSignature("6/8"), key.Key("b"), tempo.MetronomeMark(number=90),
                   note.Note("F#4", quarterLength=0.5)])
    bar = stream.Measure(number=1)
    bar.append([note.Note(p, quarterLength=0.5) for p in ("B4", "C#5", "D5", "B4", "C#5", "D5")])
    part = stream.Part()
    part.append([pickup, bar])
    midi, info = score_to_midi(stream.Score([part]))
    p = piece_from_midi(midi, "tune")
    assert (p.meter, p.bpm, p.key, p.steps_per_bar) == ((6, 8), 90.0, "Bm", 12)
    assert p.bar_phase == 10 and info["pickup_quarters"] == 2.5  # the pickup is the bar's last eighth
    assert [s for s, _, _ in roll_notes(p.roll)] == [0, 2, 4, 6, 8, 10, 12]
