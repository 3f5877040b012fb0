"""Notes and the bookkeeping of the ones sounding, so that none is ever left hanging.

A sounding note is keyed by (channel, pitch), not by pitch alone: the same pitch on two
channels is two notes. Re-striking a key that still sounds first ends the old note, and
the old note's scheduled note-off is then ignored (each strike gets a token), so every
note-on the receiver sees is matched by exactly one note-off.

`panic_messages()` is what every exit path sends: a note-off for each sounding note, then
All Notes Off (CC 123) and All Sound Off (CC 120) on every channel used. `reset_messages()`
is the second half alone: what a bridge sends when it starts (a crashed bridge may have left
notes sounding) and what `atelier-midi --panic` sends.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

NOTE_OFF, NOTE_ON, CONTROL_CHANGE, PROGRAM_CHANGE = 0x80, 0x90, 0xB0, 0xC0
ALL_SOUND_OFF, ALL_NOTES_OFF = 120, 123


@dataclass(frozen=True)
class Note:
    """A note in beats (quarter notes) of the bridge's stream."""

    start: float
    duration: float
    pitch: int
    velocity: int
    channel: int  # 0-15


def note_on(channel: int, pitch: int, velocity: int) -> list[int]:
    return [NOTE_ON | channel, pitch, max(1, min(127, velocity))]


def note_off(channel: int, pitch: int) -> list[int]:
    return [NOTE_OFF | channel, pitch, 0]


def control_change(channel: int, control: int, value: int) -> list[int]:
    return [CONTROL_CHANGE | channel, control, value]


def program_change(channel: int, program: int) -> list[int]:
    return [PROGRAM_CHANGE | channel, program]


class SoundingNotes:
    """Which (channel, pitch) keys sound now, each with the token of its latest strike."""

    def __init__(self) -> None:
        self._sounding: dict[tuple[int, int], int] = {}
        self._tokens = itertools.count(1)
        self.channels_used: set[int] = set()

    def __len__(self) -> int:
        return len(self._sounding)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._sounding

    def strike(self, channel: int, pitch: int) -> tuple[int, list[list[int]]]:
        """Start a note: returns its token and the messages to send before its note-on
        (a note-off when the key still sounds from an earlier strike)."""
        key = (channel, pitch)
        before = [note_off(channel, pitch)] if key in self._sounding else []
        token = next(self._tokens)
        self._sounding[key] = token
        self.channels_used.add(channel)
        return token, before

    def release(self, channel: int, pitch: int, token: int) -> bool:
        """End the strike `token`; False when a later strike (or a panic) already ended it."""
        key = (channel, pitch)
        if self._sounding.get(key) != token:
            return False
        del self._sounding[key]
        return True

    def release_all(self) -> list[list[int]]:
        """Note-offs for every sounding note (sounding nothing afterwards)."""
        offs = [note_off(c, p) for c, p in sorted(self._sounding)]
        self._sounding.clear()
        return offs

    def panic_messages(self, extra_channels: set[int] | frozenset[int] = frozenset()) -> list[list[int]]:
        """Note-offs for every sounding note, then CC 123 and CC 120 on each channel used."""
        return self.release_all() + reset_messages(self.channels_used | set(extra_channels))


def reset_messages(channels: set[int] | frozenset[int] | list[int]) -> list[list[int]]:
    """All Notes Off (CC 123), then All Sound Off (CC 120), on each channel (0-15)."""
    messages = []
    for channel in sorted(set(channels)):
        messages.append(control_change(channel, ALL_NOTES_OFF, 0))
        messages.append(control_change(channel, ALL_SOUND_OFF, 0))
    return messages


def still_sounding(messages: list[list[int]] | list[tuple[int, ...]], honour_cc123: bool = True) -> set[tuple[int, int]]:
    """Receiver's view: the (channel, pitch) keys left sounding by a message stream.

    A note-on with velocity 0 counts as a note-off; CC 123 ends a channel's notes unless
    `honour_cc123` is False (to check that every note-on got its own note-off)."""
    sounding: set[tuple[int, int]] = set()
    for m in messages:
        if not m:
            continue
        kind, channel = m[0] & 0xF0, m[0] & 0x0F
        if kind == NOTE_ON and len(m) > 2 and m[2] > 0:
            sounding.add((channel, m[1]))
        elif kind == NOTE_OFF or (kind == NOTE_ON and len(m) > 2 and m[2] == 0):
            sounding.discard((channel, m[1]))
        elif honour_cc123 and kind == CONTROL_CHANGE and m[1] == ALL_NOTES_OFF:
            sounding = {key for key in sounding if key[0] != channel}
    return sounding
