import numpy as np

from engine.music.midi_files import load_midi_folder, read_midi
from engine.music.piece import ONSET, split_by_file, transpose_limits, transposed


def test_quantise_onsets_and_holds(tmp_path, midi_writer):
    # A half note, then the same pitch repeated as two 8ths, at 480 ticks per beat.
    path = midi_writer(tmp_path / "a.mid", [(0, 960, 60), (960, 240, 60), (1200, 240, 60), (1930, 470, 64)])
    piece = read_midi(path, steps_per_quarter=4)
    k = 60 - 21
    assert piece.roll[0:12, k].tolist() == [2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 2, 1]
    assert piece.roll[16:20, 64 - 21].tolist() == [2, 1, 1, 1]  # 1930 ticks rounds to step 16
    assert piece.steps == 20 and piece.steps_per_bar == 16 and piece.has_onsets


def test_folder_skips_corrupt_and_drums_and_reports(tmp_path, midi_writer, chorale_notes):
    midi_writer(tmp_path / "good.mid", chorale_notes(8), extra_tracks=1)
    midi_writer(tmp_path / "drums.mid", [(0, 120, 36), (480, 120, 38)], channel=9)
    (tmp_path / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff")
    (tmp_path / "noise.mid").write_bytes(np.random.default_rng(0).bytes(300))
    (tmp_path / "notes.txt").write_text("not midi, ignored by suffix")
    pieces, report = load_midi_folder(tmp_path)
    assert [p.name for p in pieces] == ["good.mid"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"broken.mid", "noise.mid", "drums.mid"}
    assert "cannot parse" in reasons["broken.mid"] and "cannot parse" in reasons["noise.mid"]
    assert "drums" in reasons["drums.mid"]
    assert report.dropped["drums.mid"]["drum notes"] == 2
    assert "good.mid" not in report.dropped, "a track without notes (here a name) drops nothing"
    summary = report.summary()
    assert summary["files_used"] == 1 and len(summary["files_skipped"]) == 3


def test_drums_kept_on_request(tmp_path, midi_writer):
    path = midi_writer(tmp_path / "drums.mid", [(0, 120, 36)], channel=9)
    assert read_midi(path, keep_drums=True).roll[0, 36 - 21] == ONSET


def test_transpose_stays_on_keyboard(tmp_path, midi_writer):
    piece = read_midi(midi_writer(tmp_path / "hi.mid", [(0, 480, 105), (0, 480, 30)]))
    lo, hi = transpose_limits(piece, 6)
    assert (lo, hi) == (-6, 3)
    up = transposed(piece, hi)
    assert up.roll[0, 108 - 21] == ONSET and up.roll.sum() == piece.roll.sum()


def test_split_by_file_is_disjoint_and_seeded(tmp_path, midi_writer, chorale_notes):
    for i in range(10):
        midi_writer(tmp_path / f"f{i}.mid", chorale_notes(4))
    pieces, _ = load_midi_folder(tmp_path)
    train, valid = split_by_file(pieces, 0.2, seed=3)
    assert len(valid) == 2 and len(train) == 8
    assert not {p.name for p in train} & {p.name for p in valid}
    assert [p.name for p in split_by_file(pieces, 0.2, seed=3)[1]] == [p.name for p in valid]



def test_size_is_checked_from_ticks_before_any_roll(tmp_path, midi_writer, chorale_notes):
    import pytest

    from engine.music.midi_files import MAX_NOTE_QUARTERS, MidiSkip

    held = midi_writer(tmp_path / "held.mid", [(0, (MAX_NOTE_QUARTERS + 1) * 480, 60), (0, 480, 64)])
    with pytest.raises(MidiSkip, match="notes over 512 beats"):
        read_midi(held)
    sparse = midi_writer(tmp_path / "sparse.mid", [(b * 480, 480, 60) for b in range(0, 3000, 50)])
    with pytest.raises(MidiSkip, match="at most 1,024 steps"):
        read_midi(sparse, max_steps=1024)
    assert read_midi(sparse).steps == 2951 * 4  # under the default cap
    midi_writer(tmp_path / "good.mid", chorale_notes(8))
    pieces, report = load_midi_folder(tmp_path)
    assert [p.name for p in pieces] == ["good.mid", "sparse.mid"]
    assert "notes over 512 beats" in dict(report.skipped)["held.mid"]
    with pytest.raises(MidiSkip, match="over 4 MB are not read"):
        read_midi(b"MThd" + bytes(5 << 20))  # refused before mido parses it


def test_meter_tempo_and_key_are_kept(tmp_path):
    import mido

    track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=6, denominator=8),
                            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96)),
                            mido.MetaMessage("key_signature", key="Bm"),
                            mido.Message("note_on", note=59, velocity=90, time=240),
                            mido.Message("note_off", note=59, velocity=0, time=240)])
    path = tmp_path / "jig.mid"
    mido.MidiFile(type=1, ticks_per_beat=480, tracks=[track]).save(path)
    piece = read_midi(path)
    assert (piece.meter, piece.bpm, piece.key) == ((6, 8), 96.0, "Bm")
    assert piece.steps_per_bar == 12 and piece.bar_phase == 2  # the first note is an 8th into the bar
