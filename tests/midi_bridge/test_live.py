"""The bridge as a real process, with a real engine process and a real JACK MIDI receiver.

Every test compares what arrived at the receiver with the bridge's own log of what it sent
(numbered messages). The JACK dummy backend's xruns can lose or garble a period's worth of
events; a difference between the two streams is excused only when jackd reported an xrun
during the test, one incident per xrun -- counted, never hidden.
"""
from __future__ import annotations

import signal
import time

import pytest
from midi_rig import ClockSource, Delivery, Engine, percentile, start_engine_in

from midi_bridge.notes import ALL_NOTES_OFF, ALL_SOUND_OFF, still_sounding


def assert_silent(received: list, sent: list[dict], delivery: Delivery, channel: int = 0,
                  until: float | None = None) -> None:
    """The bridge sent a note-off for every note-on, then CC 123 and CC 120 on the channel; at
    the receiver nothing sounds, except notes whose note-off an excused xrun lost.
    With `until`: the same for what was sent and received before that moment."""
    if until is not None:
        received = [(t, m) for t, m in received if t < until]
        sent = [r for r in sent if r["sent"] < until]
    logged = [r["msg"] for r in sent]
    assert not still_sounding(logged, honour_cc123=False), "the bridge left a note without its note-off"
    assert logged[-2:] == [[0xB0 | channel, ALL_NOTES_OFF, 0], [0xB0 | channel, ALL_SOUND_OFF, 0]]
    left = still_sounding([m for _, m in received], honour_cc123=False)
    lost_offs = {(m[0] & 0x0F, m[1]) for m in delivery.missing if m[0] & 0xF0 == 0x80}
    assert left <= lost_offs, f"notes left sounding at the receiver: {sorted(left - lost_offs)}"
    assert not still_sounding([m for _, m in received]), "CC 123 did not reach the receiver"


def note_ons(pairs):
    return [(r, t) for r, t in pairs if r["msg"][0] & 0xF0 == 0x90]


def test_notes_arrive_in_order_with_their_scheduled_spacing(music_engine, receiver, start_bridge, check_delivery):
    # Arrival times on the wall clock: the rtmidi output, which sends each message when it is due
    # (the native JACK output hands them over early, for their exact frame: test_jack_native.py).
    bridge = start_bridge(music_engine, "--port", receiver.name, "--bpm", "150", api="rtmidi-jack")
    bridge.wait_for("ready")
    time.sleep(2.5)
    assert bridge.stop() == 0, bridge.stderr()
    time.sleep(0.3)
    received, sent = receiver.snapshot(), bridge.sent()
    delivery = check_delivery(received, sent)  # in order: matched as a sequence
    pairs = delivery.pairs
    ons = note_ons(pairs)
    assert len(ons) >= 15, f"too few notes: {len(ons)}\n{bridge.stderr()}"
    beats = [r["beat"] for r, _ in ons]
    assert beats == sorted(beats)
    # Spacing: each arrival minus its due time is a constant latency plus jitter.
    errors = [(t - r["due"]) * 1000 for r, t in pairs if r.get("why") is None]
    spread = percentile(errors, 95) - percentile(errors, 5)
    assert 0 <= percentile(errors, 50) < 15 and spread < 20, f"p50 {percentile(errors, 50):.1f} spread {spread:.1f}"
    # Due times follow the beats at 150 BPM.
    (r0, _), (r1, _) = ons[0], ons[-1]
    assert abs((r1["due"] - r0["due"]) - (r1["beat"] - r0["beat"]) * 60 / 150) < 1e-3
    assert_silent(received, sent, delivery)


def test_follows_midi_clock_in_phase_through_a_tempo_change_stop_and_continue(music_engine, receiver, sender,
                                                                             start_bridge, check_delivery):
    bridge = start_bridge(music_engine, "--port", receiver.name, "--input", sender.name, "--clock", "midi",
                          api="rtmidi-jack")  # arrival times on the wall clock, as sent (see above)
    bridge.wait_for("ready")
    clock = ClockSource(sender)
    clock.pulses_at(100, 24, None)            # the transport is stopped: tempo only
    clock.mark("start", [0xFA])
    pos = clock.pulses_at(100, 96, 0)         # bar 1 at 100 BPM
    pos = clock.pulses_at(140, 144, pos)      # bars 2-3.5 at 140 BPM
    clock.mark("stop", [0xFC])
    clock.pulses_at(140, 48, None)            # stopped for a second, clock still running
    clock.mark("continue", [0xFB])
    pos = clock.pulses_at(140, 96, pos)       # from beat 10 to beat 14
    clock.mark("stop2", [0xFC])
    time.sleep(0.4)
    received, sent = receiver.snapshot(), bridge.sent()
    assert bridge.stop() == 0, bridge.stderr()
    delivery = check_delivery(received, sent)
    ons = note_ons(delivery.pairs)
    before = [(r, t) for r, t in ons if t < clock.marks["stop"]]
    after = [(r, t) for r, t in ons if t > clock.marks["continue"]]
    assert len(before) >= 15 and len(after) >= 5, f"{len(before)} notes before the stop, {len(after)} after\n" \
                                                   f"{bridge.stderr()}"
    # In phase: each note arrives with the clock pulse of its song position (plus JACK's latency).
    errors = []
    for r, t in before + after:
        position = r["beat"] * 24
        assert abs(position - round(position)) < 1e-6
        errors.append((t - clock.time_of(round(position))) * 1000)
    median = percentile(errors, 50)
    worst = max(abs(e - median) for e in errors)
    print(f"clock-following error ms: median {median:.1f}, worst {worst:.1f} from the median")
    assert -5 < median < 30, f"notes arrive {median:.1f} ms after their pulse"
    assert worst < 50, f"a note arrived {worst:.1f} ms off (a 16th at 140 BPM is 107 ms)"
    # Stopped: nothing new plays, and nothing is left sounding.
    window = [m for t, m in received if clock.marks["stop"] + 0.03 < t < clock.marks["continue"]]
    assert not [m for m in window if m[0] & 0xF0 == 0x90]
    assert_silent(received, sent, delivery, until=clock.marks["continue"])
    # Continue at beat 10: the stream resumes on the next bar line, beat 12.
    assert min(r["beat"] for r, _ in after) >= 12
    assert_silent(received, sent, delivery)  # the second Stop


def test_a_clock_that_stops_without_stop_plays_no_note_past_its_last_pulse(music_engine, receiver, sender,
                                                                          start_bridge, check_delivery):
    bpm = 150
    interval = 60 / bpm / 24
    bridge = start_bridge(music_engine, "--port", receiver.name, "--input", sender.name, "--clock", "midi")
    bridge.wait_for("ready")
    clock = ClockSource(sender)
    clock.pulses_at(bpm, 24, None)
    clock.mark("start", [0xFA])
    last = clock.pulses_at(bpm, 130, 0) - 1   # 5 beats and a bit, then the pulses just stop (no Stop)
    last_sent = clock.time_of(last)
    time.sleep(0.5)
    lost = next(r for r in bridge.records() if r.get("event") == "transport" and r["state"] == "stopped")
    received, sent = receiver.snapshot(), bridge.sent()
    assert bridge.stop() == 0, bridge.stderr()
    delivery = check_delivery(received, sent)
    ons = note_ons(delivery.pairs)
    assert len(ons) >= 8, f"too few notes: {len(ons)}\n{bridge.stderr()}"
    # In song positions: no note-on past the last pulse plus one.
    assert max(r["beat"] for r, _ in ons) <= (last + 1) / 24 + 1e-9
    # In time: none arrives after the last pulse plus one pulse interval, plus JACK's delivery
    # of the pulse to the bridge and of the note to the receiver (a period each) and 3 ms of slack.
    latest = max(t for _, t in ons)
    limit = last_sent + interval + 2 * 256 / 48000 + 0.003
    print(f"last note-on {(latest - last_sent) * 1000:.1f} ms after the last pulse (pulse interval "
          f"{interval * 1000:.1f} ms); transport stopped {(lost['t'] - last_sent) * 1000:.0f} ms after it")
    assert latest <= limit, f"a note-on arrived {(latest - last_sent) * 1000:.1f} ms after the last pulse"
    assert lost["reason"] == "clock lost" and lost["t"] - last_sent < 0.2
    assert_silent(received, sent, delivery)


def test_call_and_response_continues_the_played_phrase(music_engine, receiver, sender, start_bridge, check_delivery):
    bridge = start_bridge(music_engine, "--port", receiver.name, "--input", sender.name, "--respond",
                          "--respond-after", "1", "--respond-bars", "1", "--bpm", "120")
    bridge.wait_for("ready")
    phrase = [60, 64, 67, 72]
    time.sleep(0.3)
    for pitch in phrase:
        sender.send([0x90, pitch, 100])
        time.sleep(0.2)
        sender.send([0x80, pitch, 0])
        time.sleep(0.05)
    phrase_end = time.monotonic()
    answer = bridge.wait_for("respond", timeout=10)
    time.sleep(2.6)  # one bar at 120 BPM, and then some
    assert bridge.stop() == 0, bridge.stderr()
    time.sleep(0.2)
    received, sent = receiver.snapshot(), bridge.sent()
    assert answer["pitches"] == phrase
    delivery = check_delivery(received, sent)
    ons = note_ons(delivery.pairs)
    assert ons, f"no answer arrived\n{bridge.stderr()}"
    assert all(t > phrase_end + 0.4 for _, t in ons), "the bridge played before the phrase had ended"
    start = answer["from_beat"]
    assert start % 4 == 0 and all(start <= r["beat"] < start + 4 for r, _ in ons)
    assert_silent(received, sent, delivery)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_bridge_leaves_no_note_sounding(music_engine, receiver, start_bridge, check_delivery, sig):
    bridge = start_bridge(music_engine, "--port", receiver.name, "--bpm", "200", "--channel", "3")
    bridge.wait_for("ready")
    deadline = time.monotonic() + 10
    while not still_sounding([m for _, m in receiver.snapshot()]) and time.monotonic() < deadline:
        time.sleep(0.01)  # stop it while notes sound
    assert still_sounding([m for _, m in receiver.snapshot()]), "no note sounded"
    assert bridge.stop(sig) == 0, bridge.stderr()
    time.sleep(0.2)
    received, sent = receiver.snapshot(), bridge.sent()
    assert_silent(received, sent, check_delivery(received, sent), channel=2)


def test_losing_the_engine_plays_out_the_buffer_falls_silent_and_reconnects(tmp_path, tiny_music_model, receiver,
                                                                            start_bridge, check_delivery):
    engine = start_engine_in(tmp_path / "doomed", tiny_music_model)
    try:
        bridge = start_bridge(engine, "--port", receiver.name, "--bpm", "180", "--lookahead", "4")
        bridge.wait_for("ready")
        time.sleep(1.0)
        killed = time.monotonic()
        engine.process.kill()
        engine.process.wait()
        lost = bridge.wait_for("engine_lost", timeout=5)
        silent = next(r for r in _wait_records(bridge, "panic") if r["reason"] == "engine lost")
        received = receiver.snapshot()
        ons_after_kill = [t for t, m in received if m[0] & 0xF0 == 0x90 and t > killed + 0.05]
        assert ons_after_kill, "the queued notes did not play out after the engine died"
        assert silent["t"] >= max(ons_after_kill) - 0.05
        assert lost["until_beat"] >= 4
        time.sleep(0.3)
        received, sent = receiver.snapshot(), bridge.sent()
        assert_silent(received, sent, check_delivery(received, sent))
        assert bridge.process.poll() is None, "the bridge gave up instead of reconnecting"
        # The engine comes back (on a new port, found through its address file): the music resumes.
        engine = Engine(**{**engine.__dict__, "process": start_engine_in(tmp_path / "doomed").process})
        back = bridge.wait_for("engine_back", timeout=30)
        deadline = time.monotonic() + 6  # it resumes on the next bar line (at most 1.3 s at 180 BPM)
        while time.monotonic() < deadline:
            if [t for t, m in receiver.snapshot() if m[0] & 0xF0 == 0x90 and t > back["t"]]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no notes after the engine came back\n{bridge.stderr()}")
        time.sleep(0.3)
        assert bridge.stop() == 0
        time.sleep(0.2)
        received, sent = receiver.snapshot(), bridge.sent()
        assert_silent(received, sent, check_delivery(received, sent))
    finally:
        engine.stop()


def _wait_records(bridge, event: str, timeout: float = 15) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in bridge.records() if r.get("event") == event]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no '{event}' within {timeout} s:\n{bridge.stderr()}")


def test_an_unknown_port_name_is_an_error_that_lists_the_ports(music_engine, receiver, start_bridge):
    bridge = start_bridge(music_engine, "--port", "recv-typo:in")
    assert bridge.process.wait(timeout=30) == 3
    err = bridge.stderr()
    assert "no output port called 'recv-typo:in'" in err and receiver.name in err and "--list-ports" in err


def test_list_ports_shows_jack_ports(jack, receiver):
    import subprocess
    import sys

    from midi_rig import REPO

    done = subprocess.run([sys.executable, "-m", "midi_bridge", "--api", "jack", "--list-ports"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and "MIDI system: jack" in done.stdout
    assert done.stdout.index(receiver.name) > done.stdout.index("outputs:")
