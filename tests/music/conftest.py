"""Fixtures shared by the music tests: tiny MIDI files and a tiny trained-shape model."""
from __future__ import annotations

from pathlib import Path

import mido
import pytest


def write_midi(path: Path, notes: list[tuple[int, int, int]], channel: int = 0, tpb: int = 480,
               extra_tracks: int = 0) -> Path:
    """A type-1 file; notes are (start tick, duration ticks, pitch)."""
    events = sorted([(s, 1, p) for s, d, p in notes] + [(s + d, 0, p) for s, d, p in notes])
    track, now = mido.MidiTrack(), 0
    for t, on, p in events:
        track.append(mido.Message("note_on" if on else "note_off", note=p, velocity=90 if on else 0,
                                  channel=channel, time=t - now))
        now = t
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="empty", time=0)]) if extra_tracks else track)
    if extra_tracks:
        mid.tracks.append(track)
    mid.save(path)
    return path


def chorale_like(n_beats: int = 16, tpb: int = 480) -> list[tuple[int, int, int]]:
    """Four voices of quarter notes on a C major progression."""
    chords = [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 71), (48, 55, 64, 72)]
    return [(b * tpb, tpb, p) for b in range(n_beats) for p in chords[b % 4]]


@pytest.fixture
def midi_writer():
    return write_midi


@pytest.fixture
def chorale_notes():
    return chorale_like


@pytest.fixture
def tiny_model():
    """An untrained 16th-note model with onset/held tokens: small, fast, deterministic."""
    import torch

    from engine.kinds.music import MusicConfig, MusicModel
    from engine.models.music_rnn import MusicRNN

    torch.manual_seed(0)
    cfg = MusicConfig.from_dict({"model": {"holds": True, "d_hidden": 32, "d_embed": 16, "n_layers": 1}})
    return MusicModel(MusicRNN(cfg.model), cfg.to_dict())
