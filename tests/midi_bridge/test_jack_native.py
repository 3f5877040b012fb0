"""The native JACK output: each message at its intended frame.

The bridge logs, for every message, the frame it was handed over for (its due time on
JACK's clock); a JACK client of our own records the frame each message arrives at (the
cycle's last_frame_time plus the message's offset). Real JACK server (dummy backend), real
engine and bridge processes.
"""
from __future__ import annotations

import time

import jack as jack_client_lib
import numpy as np
from midi_rig import FrameReceiver, JackClock, percentile

from midi_bridge.clock import MidiClock
from midi_bridge.jack_in import JackInput
from midi_bridge.notes import ALL_NOTES_OFF, ALL_SOUND_OFF, still_sounding


def test_each_message_arrives_at_its_intended_frame(music_engine, frame_receiver, start_bridge, check_delivery):
    bridge = start_bridge(music_engine, "--port", frame_receiver.name, "--bpm", "150")
    bridge.wait_for("ready")
    output = bridge.wait_for("output")
    time.sleep(3.0)
    assert bridge.stop() == 0, bridge.stderr()
    time.sleep(0.2)
    sent = bridge.sent()
    delivery = check_delivery(frame_receiver.snapshot(), sent)
    pairs = [(r, t) for r, t in delivery.pairs if r.get("why") is None]
    timed = [(r, frame_receiver.error_frames(t, r["due"])) for r, t in pairs]
    assert len(timed) >= 20, f"too few notes: {len(timed)}\n{bridge.stderr()}"
    errors = [e for _, e in timed]
    period = output["period"]
    print(f"native JACK: {len(timed)} timed messages; arrival frame - intended frame: min {min(errors):.2f}, "
          f"p50 {percentile(errors, 50):.2f}, max {max(errors):.2f} (period {period} frames at {output['rate']} Hz)")
    exact = sum(1 for e in errors if abs(e) <= 1)
    late = [(round(e, 1), r["msg"]) for r, e in timed if abs(e) > 1]
    groups = len({e for e, _ in late})  # messages of one moment share a cycle
    record = next(r for r in bridge.records() if r.get("event") == "jack_output")
    print(f"  {exact} of {len(timed)} within 1 frame; {len(late)} late in {groups} groups; the receiver saw "
          f"{len(frame_receiver.irregular)} skipped or repeated cycles, the bridge {record['late']} messages whose "
          f"cycle had run before they were handed over")
    # On a quiet server every message is exact. The dummy backend's xruns (skipped, repeated or
    # early cycles) can leave a cycle's messages late: counted, and bounded by the xruns seen.
    assert groups <= len(frame_receiver.irregular) + record["late"], late
    assert exact >= 0.8 * len(timed), late
    assert not still_sounding([m for _, m in frame_receiver.snapshot()])
    flushed = [r for r in bridge.records() if r.get("event") == "flushed"]
    assert flushed and flushed[0]["confirmed"], "the JACK output did not confirm the panic left"
    # The CCs go once more in a later cycle: a receiver that missed the panic's cycle (an xrun) still
    # gets its notes ended.
    with frame_receiver._lock:
        last = [(start, m) for _, _, start, _, m in frame_receiver.events[-4:]]
    assert [m for _, m in last] == [[0xB0, ALL_NOTES_OFF, 0], [0xB0, ALL_SOUND_OFF, 0]] * 2, last
    assert last[2][0] > last[1][0], "the second reset came in the panic's own cycle"


SYNTH_FRAMES = 960  # a synth heard 20 ms after audio written in the same frame (48 kHz)


def test_following_a_daws_clock_notes_go_early_by_what_the_output_adds_to_the_daws_latency(
        music_engine, jack, start_bridge, check_delivery, request):
    """Issue 22: the DAW's clock offset compensated. The bridge's port leads to a synth whose
    playback latency is SYNTH_FRAMES beyond the system's audio outputs: following the DAW's
    clock, each note is written that many frames before the DAW's pulse of its beat, so it is
    heard with the DAW's audio of that beat. The same JACK client records pulses and notes.

    When the dummy backend drops the clock's own pulses into later cycles (a loaded machine: in
    CI, 97 of 192 pulses once came late and the notes wandered ±1000 frames), the DAW's clock
    itself was broken and the play-along is measured again, up to three times."""
    runs = []
    for attempt in range(3):
        run = _play_along_a_daws_clock(music_engine, start_bridge, check_delivery, f"{request.node.name[-5:]}{attempt}")
        runs.append(run)
        if run["late_pulses"] <= run["pulses"] // 10:
            break
        print(f"the JACK server put {run['late_pulses']} of {run['pulses']} clock pulses off their frame; measuring again")
    else:
        raise AssertionError("the JACK server could not keep the DAW clock's time in three tries: pulses off their "
                             f"frame {[r['late_pulses'] for r in runs]} of {runs[0]['pulses']}")
    errors, compensation, bridge = run["errors"], run["compensation"], run["bridge"]
    assert len(errors) >= 10, f"too few notes: {len(errors)}\n{bridge.stderr()}"
    median = percentile(errors, 50)
    jack_input = next(r for r in bridge.records() if r.get("event") == "jack_input")
    print(f"note frame - the DAW's beat's frame over {len(errors)} notes: median {median:.0f}, p10 "
          f"{percentile(errors, 10):.0f}, p90 {percentile(errors, 90):.0f} (compensation {compensation['ms']} ms = "
          f"{SYNTH_FRAMES} frames); pulses heard off their frame: {run['late_pulses']}; the bridge's input missed "
          f"{jack_input['missed_cycles']} cycles and dropped {jack_input['repeated_messages']} repeated messages")
    assert compensation["ms"] == SYNTH_FRAMES / run["rate"] * 1000
    assert abs(median + SYNTH_FRAMES) <= 128, (
        f"notes {median:.0f} frames from the DAW's beat: errors {[round(e) for e in errors]}; "
        f"pulses heard off their frame: {run['late_pulses']} of {run['pulses']}\n{bridge.stderr()[-3000:]}")


def _play_along_a_daws_clock(music_engine, start_bridge, check_delivery, name: str) -> dict:
    """One bridge following 8 beats of a JACK clock at 120 BPM into a slow synth: each note's frame
    minus the DAW's frame of its beat, and how many of the clock's pulses the synth heard late."""
    clock = JackClock(name)
    synth = FrameReceiver(f"synth{name}", extra_latency=SYNTH_FRAMES)
    try:
        synth.client.connect(clock.name, synth.name)  # the DAW's clock, as the bridge hears it
        bridge = start_bridge(music_engine, "--port", synth.name, "--input", clock.name, "--clock", "midi")
        bridge.wait_for("ready")
        compensation = bridge.wait_for("compensation")
        beats = 8
        grid = clock.play(120, stopped=24, running=24 * beats)  # a beat of tempo, then 8 beats at 120 BPM
        assert clock.finished.wait(10), "the clock did not finish"
        time.sleep(0.3)
        assert bridge.stop() == 0, bridge.stderr()
        events = [e for e in synth.events if e[4] not in ([0xF8], [0xFA], [0xFC])]  # the DAW clock's own
        heard = [frame for _, frame, _, _, m in synth.events if m == [0xF8]][-len(grid):]
        delivery = check_delivery([(e[0], e[4]) for e in events], bridge.sent())
    finally:
        synth.close()
        clock.close()

    # The DAW's beat grid: the clock's own frames. The synth hears each pulse at its frame unless
    # the dummy backend skipped a cycle (then that pulse came late).
    late_pulses = sum(h != g for h, g in zip(heard, grid))
    slope, origin = np.polyfit(range(len(grid)), grid, 1)  # exact but for rounding to whole frames
    errors = [events[i][1] - (origin + slope * r["beat"] * 24)
              for (r, _), i in zip(delivery.pairs, delivery.indices)
              if r["msg"][0] & 0xF0 == 0x90 and r.get("why") is None and r["beat"] * 24 < len(grid)]
    return {"errors": errors, "late_pulses": late_pulses, "pulses": len(grid), "compensation": compensation,
            "bridge": bridge, "rate": synth.rate}


def test_a_clock_follower_that_misses_cycles_counts_the_pulses_it_lost_and_hears_none_twice(jack, request):
    """On a loaded machine the bridge's JACK input can miss cycles: JACK goes on without a client
    that is not ready, and the pulses of those cycles never reach it (in CI, notes then came one
    and two pulses late for the rest of the run). A call that comes back late can also run on
    into the next cycle and read its messages, and JACK then runs the client for that cycle too:
    the same pulse twice (in CI, every later note a pulse early). Here the follower's listener
    stalls for 11-65 ms on every 8th pulse, and the first call after each stall is slow; the
    follower still ends on the song position the DAW's clock reached, each pulse heard once."""
    clock = JackClock(f"stall{request.node.name[-5:]}")
    follower = MidiClock()
    inp = JackInput(jack_client_lib.Client(f"follow{request.node.name[-5:]}", no_start_server=True), source=clock.name)
    stalls = [0.011, 0.021, 0.027, 0.04, 0.065, 0.016, 0.033]
    heard, pulse_times = [], []

    def missed() -> None:
        follower.missed()
        time.sleep(0.002)

    def listen(message: list[int], t: float) -> None:
        follower.message(message, t)
        heard.append(message)
        if message == [0xF8]:
            pulse_times.append(t)
        running = len(heard) - 25
        if message == [0xF8] and 8 <= running <= 80 and running % 8 == 0:
            time.sleep(stalls[running // 8 % len(stalls)])

    inp.on_missed = missed
    try:
        inp.listen(listen)
        clock.play(120, stopped=24, running=96)
        assert clock.finished.wait(10), "the clock did not finish"
        time.sleep(0.2)
    finally:
        inp.close()
        clock.close()
    assert inp.missed_cycles >= 10 and len(pulse_times) < 24 + 96, (inp.missed_cycles, len(pulse_times))
    assert all(b > a for a, b in zip(pulse_times, pulse_times[1:])), f"a pulse heard twice ({inp.repeated_messages} repeats dropped)"
    assert heard[-1] == [0xFC] and not follower.running
    assert follower.beat_at(0.0) == 96 / 24, f"{24 + 96 - len(pulse_times)} pulses lost, position {follower.beat_at(0.0) * 24}"
    print(f"missed cycles {inp.missed_cycles}, pulses lost {24 + 96 - len(pulse_times)}, repeats dropped {inp.repeated_messages}")
