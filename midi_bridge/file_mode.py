"""File mode: the same stream the live bridge would play, written to a standard MIDI file.

For users without a virtual port, and for tests. The notes come from the same engine
session with the same settings (channel, program, velocity scaling, note-length cap,
re-strikes ending the earlier note), rendered offline as fast as the engine generates.
The file ends like every live stop: note-offs, then CC 123 and CC 120.
"""
from __future__ import annotations

import heapq
import itertools
from pathlib import Path

import mido

from midi_bridge.engine_feed import EngineAddress, EngineFeed, SessionSettings
from midi_bridge.eventlog import EventLog
from midi_bridge.notes import Note, SoundingNotes, note_off, note_on, program_change

FILE_TICKS_PER_BEAT = 480


class _Collector:
    """Stands in for the scheduler: keeps what the feed pushes."""

    def __init__(self, bar_beats: float):
        self.bar_beats = bar_beats
        self.notes: list[Note] = []
        self.log = EventLog(None)

    def push(self, notes: list[Note]) -> None:
        self.notes.extend(notes)

    def context(self, since: float, cut: float) -> list[Note]:
        return [n for n in self.notes if since <= n.start < cut]

    def playhead(self) -> float:
        return 0.0


def messages(notes: list[Note], max_note_beats: float, extra_channels: set[int] = frozenset()
             ) -> list[tuple[float, list[int]]]:
    """(beat, message) in playing order, exactly as the live scheduler would send them."""
    sounding = SoundingNotes()
    seq = itertools.count()
    queue: list[tuple[float, int, int, object]] = []  # (beat, 0 off / 1 on, seq, payload)
    for note in notes:
        heapq.heappush(queue, (note.start, 1, next(seq), note))
    out: list[tuple[float, list[int]]] = []
    end_beat = 0.0
    while queue:
        beat, is_on, _, payload = heapq.heappop(queue)
        end_beat = max(end_beat, beat)
        if not is_on:
            channel, pitch, token = payload
            if sounding.release(channel, pitch, token):
                out.append((beat, note_off(channel, pitch)))
            continue
        token, before = sounding.strike(payload.channel, payload.pitch)
        out.extend((beat, m) for m in before)
        end = beat + min(payload.duration, max_note_beats)
        heapq.heappush(queue, (end, 0, next(seq), (payload.channel, payload.pitch, token)))
        out.append((beat, note_on(payload.channel, payload.pitch, payload.velocity)))
    out.extend((end_beat, m) for m in sounding.panic_messages(set(extra_channels)))
    return out


def write(path: Path, timed: list[tuple[float, list[int]]], bpm: float, meter: tuple[int, int],
          program: int | None, channel: int) -> None:
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1], time=0))
    if program is not None:
        track.append(mido.Message.from_bytes(program_change(channel, program), time=0))
    now = 0
    for beat, message in timed:
        tick = round(beat * FILE_TICKS_PER_BEAT)
        track.append(mido.Message.from_bytes(message, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=1, ticks_per_beat=FILE_TICKS_PER_BEAT)
    midi.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(path)


def render(path: Path, bars: float, *, address: EngineAddress, settings: SessionSettings, bpm: float = 120.0,
           meter: tuple[int, int] = (4, 4), program: int | None = None, max_note_beats: float = 8.0) -> dict:
    """Write `bars` bars of the engine's stream to `path`; returns a summary."""
    bar_beats = meter[0] * 4 / meter[1]
    collector = _Collector(bar_beats)
    feed = EngineFeed(address, settings, collector, chunk=4.0)  # type: ignore[arg-type]
    feed.connect_first()
    try:
        feed.fill_until(bars * bar_beats)
    finally:
        feed.close()
    notes = [n for n in collector.notes if n.start < bars * bar_beats]
    timed = messages(notes, max_note_beats, {settings.channel})
    write(path, timed, bpm, meter, program, settings.channel)
    return {"file": str(path), "model": feed.model, "notes": len(notes), "bars": bars, "bpm": bpm}
