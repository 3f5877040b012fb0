"""A four-voice MIDI file for music tests that need a folder of pieces."""
from pathlib import Path

import mido


def write_midi(path: Path, beats: int = 16, shift: int = 0) -> Path:
    """Four voices of quarter notes on a C major progression (shifted by `shift` semitones)."""
    chords = [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 71), (48, 55, 64, 72)]
    track = mido.MidiTrack()
    for b in range(beats):
        chord = [p + shift for p in chords[b % 4]]
        track += [mido.Message("note_on", note=p, velocity=90, time=0) for p in chord]
        track += [mido.Message("note_off", note=p, velocity=0, time=480 if i == 0 else 0) for i, p in enumerate(chord)]
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    mid.tracks.append(track)
    mid.save(path)
    return path
