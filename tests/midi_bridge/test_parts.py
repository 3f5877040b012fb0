"""The bridge's parts on their own: clock following, sounding-note bookkeeping, the
scheduler's timing and safety, controls, phrase detection, port names, file rendering."""
from __future__ import annotations

import gc
import heapq
import queue
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midi_bridge import controls
from midi_bridge.clock import CONTINUE, SONG_POSITION, START, STOP, InternalClock, MidiClock
from midi_bridge.file_mode import messages as file_messages
from midi_bridge.notes import ALL_NOTES_OFF, ALL_SOUND_OFF, Note, SoundingNotes, still_sounding
from midi_bridge.ports import PortError, find_port
from midi_bridge.respond import PhraseRecorder
from midi_bridge.scheduler import Scheduler, collect_garbage, next_bar

PULSE = [0xF8]


def feed_pulses(clock: MidiClock, t: float, bpm: float, count: int, jitter: float, rng: random.Random
                ) -> tuple[float, list[tuple[float, float | None]]]:
    """Pulses at `bpm` arriving late by up to `jitter` (like JACK's once-per-period delivery)."""
    period = 60 / bpm / 24
    events = []
    for _ in range(count):
        events.append((t, clock.message(PULSE, t + rng.uniform(0, jitter))))
        t += period
    return t, events


def test_midi_clock_tracks_tempo_and_phase_through_a_change():
    rng, clock = random.Random(1), MidiClock()
    t, _ = feed_pulses(clock, 100.0, 100, 24, 0.005, rng)
    assert clock.message([START], t) is None and not clock.running
    t, events = feed_pulses(clock, t, 100, 96, 0.005, rng)
    assert events[0][1] == ("start", 0.0) and clock.running
    assert abs(clock.bpm - 100) < 1
    # Predicts the next beat (the pulse at song position 96) to within the jitter.
    assert abs(clock.time_at(4.0) - t) < 0.005
    t, _ = feed_pulses(clock, t, 140, 12, 0.005, rng)  # half a beat after an abrupt change
    assert abs(clock.time_at(4.5) - t) < 0.007, "the fit should re-lock within a few pulses"
    t, _ = feed_pulses(clock, t, 140, 36, 0.005, rng)
    assert abs(clock.bpm - 140) < 1
    assert abs(clock.time_at(6.0) - t) < 0.005  # 96 + 48 pulses = beat 6
    assert abs(clock.beat_at(t) - 6.0) < 0.25


def test_midi_clock_stop_continue_song_position_and_timeout():
    rng, clock = random.Random(2), MidiClock()
    t, _ = feed_pulses(clock, 10.0, 120, 4, 0, rng)
    clock.message([START], t)
    t, _ = feed_pulses(clock, t, 120, 30, 0, rng)
    assert clock.message([STOP], t) == ("stop", 30 / 24)
    assert not clock.running and clock.beat_at(t + 5) == 30 / 24  # stopped: the position holds
    clock.message([SONG_POSITION, 16, 0], t)  # 16 sixteenths = beat 4
    clock.message([CONTINUE], t)
    t, events = feed_pulses(clock, t, 120, 2, 0, rng)
    assert events[0][1] == ("start", 4.0)
    assert clock.check_timeout(t + 0.05) is None  # the last pulse was at t - 1/48 s
    assert clock.check_timeout(t + 0.1) == ("stop", 4 + 2 / 24)  # pulses stopped without a Stop: lost at once


def test_midi_clock_counts_the_pulses_an_input_missed():
    """An input that missed cycles (JACK on a loaded machine) says so; the pulses that fell in them
    count by the next pulse's distance. A missed cycle without a pulse in it changes nothing."""
    rng, clock = random.Random(3), MidiClock()
    t, _ = feed_pulses(clock, 10.0, 120, 4, 0, rng)
    clock.message([START], t)
    t, _ = feed_pulses(clock, t, 120, 30, 0, rng)
    period = 60 / 120 / 24
    clock.missed()
    t, _ = feed_pulses(clock, t, 120, 1, 0, rng)  # on time: nothing was lost
    clock.missed()
    t, _ = feed_pulses(clock, t + 2 * period, 120, 5, 0, rng)  # two pulses never arrived
    assert clock.message([STOP], t) == ("stop", (30 + 1 + 2 + 5) / 24)
    assert abs(clock.bpm - 120) < 1e-6


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["strike", "release", "panic"]), st.integers(0, 2), st.integers(60, 62),
                          st.integers(0, 5)), max_size=60))
def test_sounding_notes_never_leave_a_note_without_its_note_off(ops):
    """Whatever the order of strikes, releases (of any token, stale or not) and panics, the
    receiver sees each note-on matched by one note-off once everything is released."""
    notes, sent, tokens = SoundingNotes(), [], []
    for op, channel, pitch, pick in ops:
        if op == "strike":
            token, before = notes.strike(channel, pitch)
            sent += before + [[0x90 | channel, pitch, 100]]
            tokens.append((channel, pitch, token))
        elif op == "release" and tokens:
            c, p, token = tokens[pick % len(tokens)]
            if notes.release(c, p, token):
                sent.append([0x80 | c, p, 0])
        elif op == "panic":
            sent += notes.panic_messages()
    # Never two note-ons for one key without a note-off between them.
    down: set = set()
    for m in sent:
        key = (m[0] & 0x0F, m[1])
        if m[0] & 0xF0 == 0x90:
            assert key not in down
            down.add(key)
        elif m[0] & 0xF0 == 0x80:
            down.discard(key)
    final = notes.panic_messages({0})
    assert not still_sounding(sent + final, honour_cc123=False) and len(notes) == 0
    channels = {0} | {channel for op, channel, _, _ in ops if op == "strike"}
    assert [m for m in final if m[0] & 0xF0 == 0xB0] == [
        [0xB0 | c, cc, 0] for c in sorted(channels) for cc in (ALL_NOTES_OFF, ALL_SOUND_OFF)]


class Recorder:
    def __init__(self):
        self.sent: list[tuple[float, list[int]]] = []

    def __call__(self, message: list[int], due: float | None = None) -> None:
        self.sent.append((time.monotonic(), list(message)))


def test_scheduler_sends_on_time_caps_notes_and_ends_silent():
    out = Recorder()
    clock = InternalClock(240, time.monotonic() + 0.1)  # a beat every 0.25 s
    scheduler = Scheduler(out, clock, max_note_beats=1.0, channels=frozenset({0}))
    scheduler.start()
    scheduler.push([Note(0.0, 0.5, 60, 90, 0), Note(0.5, 8.0, 64, 90, 0),  # the second is capped at 1 beat
                    Note(0.5, 0.25, 60, 90, 0), Note(0.625, 0.5, 60, 90, 0),  # re-struck while sounding
                    Note(1.0, 0.25, 67, 90, 1)])
    scheduler.transport_started(0.0)
    time.sleep(0.1 + 1.6 * 0.25 + 0.15)
    scheduler.close()
    sent = out.sent
    assert not still_sounding([m for _, m in sent], honour_cc123=False)
    ons = [(t, m) for t, m in sent if m[0] & 0xF0 == 0x90]
    assert [m[1] for _, m in ons] == [60, 64, 60, 60, 67]
    for (t, m), beat in zip(ons, [0.0, 0.5, 0.5, 0.625, 1.0]):
        assert abs(t - clock.time_at(beat)) < 0.02, "sent more than 20 ms off its due time"
    off_64 = next(t for t, m in sent if m[:2] == [0x80, 64])
    assert abs(off_64 - clock.time_at(1.5)) < 0.02, "the 8-beat note was not capped to 1 beat"
    # Re-striking 60 at 0.625 ends the sounding 60 first.
    i = next(i for i, (t, m) in enumerate(sent) if m[:2] == [0x90, 60] and abs(t - clock.time_at(0.625)) < 0.02)
    assert sent[i - 1][1][:2] == [0x80, 60]
    tail = [m for _, m in sent[-4:]]
    assert tail == [[0xB0, 123, 0], [0xB0, 120, 0], [0xB1, 123, 0], [0xB1, 120, 0]]


def test_scheduler_stop_silences_and_resumes_on_the_next_bar():
    out = Recorder()
    clock = MidiClock()
    scheduler = Scheduler(out, clock, bar_beats=4.0)
    scheduler.push([Note(b / 2, 2.0, 60 + b, 90, 0) for b in range(40)])
    # No timing thread: drive the transport by hand.
    scheduler.transport_started(0.0)
    scheduler._fire(False, time.monotonic())  # the note-on at beat 0
    assert len(scheduler.sounding) == 1
    scheduler.transport_stopped()
    assert len(scheduler.sounding) == 0 and [m for _, m in out.sent][-3:] == [[0x80, 60, 0], [0xB0, 123, 0],
                                                                                [0xB0, 120, 0]]
    scheduler._resume_at = 5.0  # stopped mid-bar
    scheduler.transport_started(17.0)
    assert scheduler._offset == 20.0 - 8.0  # stream bar 8 on song bar 20
    assert min(item[0] for item in scheduler._ons) >= 8.0
    assert next_bar(8.0, 4.0) == 8.0 and next_bar(8.01, 4.0) == 12.0


def test_a_followed_clock_lets_no_note_on_past_its_last_pulse_plus_one():
    rng, clock = random.Random(3), MidiClock()
    t, _ = feed_pulses(clock, 10.0, 120, 4, 0, rng)
    clock.message([START], t)
    feed_pulses(clock, t, 120, 24, 0, rng)  # song positions 0..23: the horizon is pulse 24, beat 1
    assert clock.horizon() == 1.0
    scheduler = Scheduler(Recorder(), clock, bar_beats=4.0)
    scheduler.transport_started(0.0)
    scheduler._offset = 0.0
    scheduler.push([Note(1.0, 0.5, 60, 90, 0), Note(1.25, 0.5, 62, 90, 0)])
    assert scheduler._head() == (1.0, False)  # on the horizon: may play
    heapq.heappop(scheduler._ons)
    assert scheduler._head() is None  # past it: waits for the next pulse
    scheduler._offs.append((1.1, 0, 0, 60, 1))
    assert scheduler._head() == (1.1, True)  # note-offs are never held back
    clock.message(PULSE, t + 1.0)
    assert clock.horizon() == 25 / 24 and clock.check_timeout(t + 1.0) is None
    assert clock.check_timeout(t + 1.2) == ("stop", 25 / 24) and clock.horizon() == float("-inf")


def test_controls_map_values_and_learn_binds_the_next_cc():
    assert controls.temperature(0) == 0.1 and controls.temperature(127) == 2.0
    assert controls.density(0) == 0.25 and controls.density(127) == 4.0 and 1.0 <= controls.density(64) < 1.05
    assert controls.key(0) == "" and controls.key(6) == "C major" and controls.key(127) == "B minor"
    cmap = controls.ControlMap()
    assert cmap.interpret(20, 127) == ("temperature", 2.0)
    assert cmap.interpret(23, 100) == ("mute", True)
    assert cmap.interpret(24, 127) == ("regenerate", None) and cmap.interpret(24, 127) is None  # edge only
    messages: queue.Queue = queue.Queue()
    for m in ([0x90, 60, 100], [0xB0, 74, 10], [0xB0, 74, 11], [0xB3, 7, 0]):
        messages.put(m)
    controls.learn(messages, ["temperature", "key"], cmap, timeout=1, say=lambda _: None)
    assert cmap.ccs["temperature"] == 74 and cmap.ccs["key"] == 7
    assert cmap.interpret(74, 127) == ("temperature", 2.0) and cmap.interpret(20, 0) is None
    with pytest.raises(TimeoutError, match="no CC arrived"):
        controls.learn(queue.Queue(), ["density"], cmap, timeout=0.05, say=lambda _: None)


def test_cc_curves_stay_inside_the_ranges_the_engine_declares():
    from engine.music.ops import CONTROLS
    from engine.music.sampling import scale_pitch_classes

    for name in ("temperature", "density"):
        spec, curve = CONTROLS[name], getattr(controls, name)
        assert all(spec.min <= curve(v) <= spec.max for v in range(128)), name
    for key in {controls.key(v) for v in range(128)} - {""}:  # '': lock off
        scale_pitch_classes(key)  # raises on a key the engine would refuse


def test_music_flags_take_their_ranges_and_defaults_from_the_engine():
    from engine.music.ops import CONTROLS
    from midi_bridge.cli import SESSION_PARAMS, parser

    p = parser()
    for name, spec in CONTROLS.items():
        flag = f"--{name.replace('_', '-')}"
        assert getattr(p.parse_args([]), name) is None  # unset: the engine's default applies
        if spec.min is None:
            continue
        assert getattr(p.parse_args([flag, str(spec.min)]), name) == spec.min
        assert getattr(p.parse_args([flag, str(spec.max)]), name) == spec.max
        for outside in (spec.min - 1, spec.max + 1):
            with pytest.raises(SystemExit):
                p.parse_args([flag, str(outside)])
    assert p.parse_args(["--free"]).free is True  # a switch; absent (None): the engine's default
    assert p.parse_args(["--no-free"]).free is False
    assert p.parse_args(["--no-parallels"]).no_parallels is True  # the rule on for any model
    assert p.parse_args(["--parallels"]).no_parallels is False  # and off for one whose music avoids them
    defaults = p.parse_args([])
    assert (defaults.seed, defaults.velocity) == (SESSION_PARAMS["seed"].default, SESSION_PARAMS["velocity"].default)
    assert defaults.channel == SESSION_PARAMS["channel"].default + 1  # 1-based, as in a DAW
    with pytest.raises(SystemExit):
        p.parse_args(["--channel", str(SESSION_PARAMS["channel"].max + 2)])


def test_phrase_ends_after_silence_or_on_request():
    rec = PhraseRecorder(silence_beats=2)
    rec.key_down(0, 60, 100, 0.0)
    rec.key_up(0, 60, 1.0)
    rec.key_down(0, 64, 90, 1.0)
    assert rec.take_if_ended(10.0) is None  # a key is still down
    rec.key_up(0, 64, 2.0)
    assert rec.take_if_ended(3.5) is None
    phrase = rec.take_if_ended(4.0)
    assert [(n.start, n.duration, n.pitch) for n in phrase] == [(0.0, 1.0, 60), (1.0, 1.0, 64)]
    rec.key_down(0, 67, 90, 5.0)
    rec.force()
    assert [n.pitch for n in rec.take_if_ended(5.5)] == [67]
    assert rec.take_if_ended(99) is None


def test_port_names_must_match_exactly():
    listed = ["Midi Through:Midi Through Port-0 14:0", "recv:in"]
    assert find_port(listed, "recv:in", "output", "jack") == 1
    assert find_port(listed, "Midi Through:Midi Through Port-0", "output", "alsa") == 0  # ALSA numbers optional
    with pytest.raises(PortError) as e:
        find_port(listed, "recv:In", "output", "jack")
    assert "no output port called 'recv:In'" in str(e.value) and "  recv:in" in str(e.value)


def test_file_stream_is_the_live_stream():
    notes = [Note(0, 1, 60, 80, 0), Note(0.5, 1, 60, 80, 0), Note(1, 20, 62, 80, 0)]
    timed = file_messages(notes, max_note_beats=4, extra_channels={0})
    assert timed == [(0, [0x90, 60, 80]), (0.5, [0x80, 60, 0]), (0.5, [0x90, 60, 80]), (1, [0x90, 62, 80]),
                     (1.5, [0x80, 60, 0]), (5, [0x80, 62, 0]), (5, [0xB0, 123, 0]), (5, [0xB0, 120, 0])]


def test_the_timing_thread_collects_garbage_when_automatic_collection_is_off():
    threshold = gc.get_threshold()[0]
    gc.disable()
    try:
        kept = [[] for _ in range(threshold + 100)]  # containers that count towards a collection
        assert gc.get_count()[0] > threshold
        collect_garbage()
        assert gc.get_count()[0] < threshold
    finally:
        gc.enable()
    assert len(kept) == threshold + 100


def test_compensation_sends_early_and_moves_the_horizon_by_as_much():
    """Issue 22: following a DAW's clock with an output heard 125 ms after the DAW's audio (a
    quarter beat at 120 BPM), a note may go a quarter beat past the pulse horizon, no further."""
    rng, clock = random.Random(3), MidiClock()
    t, _ = feed_pulses(clock, 10.0, 120, 4, 0, rng)
    clock.message([START], t)
    feed_pulses(clock, t, 120, 24, 0, rng)  # the horizon is beat 1
    scheduler = Scheduler(Recorder(), clock, bar_beats=4.0)
    scheduler.transport_started(0.0)
    scheduler._offset = 0.0
    scheduler.push([Note(1.25, 0.5, 62, 90, 0)])
    assert scheduler._head() is None
    scheduler.compensation = 60 / clock.bpm / 4
    assert scheduler._head() == (1.25, False)
    scheduler.push([Note(1.3, 0.5, 64, 90, 0)])
    heapq.heappop(scheduler._ons)
    assert scheduler._head() is None  # past the moved horizon: waits
