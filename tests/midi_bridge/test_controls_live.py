"""Live controls act within a bar: a density, temperature or key change heard from the next
bar line, not after the queued beats; the density knob's ends (0.25 and 4) differ at least 3x
in notes per bar (issue 22).

Real JACK server, real engine (with the music model that ships) and bridge processes; the
CCs come from a JACK sender, the notes go to a JACK receiver of our own.
"""
from __future__ import annotations

import time

from midi_bridge import controls

BPM, BAR = 240, 4.0  # a bar a second
BARS = 6             # bars played at each setting


def turn(bridge, sender, name: str, value: int, timeout: float = 10) -> tuple[float, dict]:
    """Send the control's CC until the bridge applies it (an xrun of the dummy backend can drop
    a CC); returns when it was last sent and the bridge's record of applying it."""
    meaning = getattr(controls, name)(value)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        turned = sender.send([0xB0, controls.DEFAULT_CCS[name], value])
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            found = [r for r in bridge.records() if r.get("event") == "controls" and r.get(name) == meaning]
            if found:
                return turned, found[0]
            time.sleep(0.02)
    raise AssertionError(f"the bridge did not apply {name}={meaning} within {timeout} s:\n{bridge.stderr()}")


def test_density_and_key_act_from_the_next_bar_line_and_density_spans_3x(music_engine, receiver, sender,
                                                                         start_bridge, check_delivery):
    # 8 beats queued ahead: the old bridge changed nothing for 2 bars after a knob moved.
    bridge = start_bridge(music_engine, "--port", receiver.name, "--input", sender.name, "--bpm", str(BPM),
                          "--lookahead", "8", model="music-default")
    bridge.wait_for("ready")
    time.sleep(1.0)
    phases = []
    for value in (0, 127):  # the knob's ends: density 0.25 and 4
        turned, applied = turn(bridge, sender, "density", value)
        phases.append((turned, applied["from_beat"]))
        time.sleep((BARS + 1) * BAR * 60 / BPM)  # the change waits for a bar line: a bar more
    keyed, applied = turn(bridge, sender, "key", 6)  # C major
    key_from = applied["from_beat"]
    time.sleep(2 * BAR * 60 / BPM + 0.3)
    # Stopped first: a thread writes the bridge's log, so a running bridge's last sends can have
    # arrived before they are in it.
    assert bridge.stop() == 0, bridge.stderr()
    time.sleep(0.3)
    received, sent = receiver.snapshot(), bridge.sent()
    delivery = check_delivery(received, sent)
    ons = [r for r, _ in delivery.pairs if r["msg"][0] & 0xF0 == 0x90 and r.get("why") is None]
    # The stream beat playing at a moment, from any note's due time (internal clock, fixed offset).
    ref = ons[0]

    def beat_at(t: float) -> float:
        return ref["beat"] + (t - ref["due"]) * BPM / 60

    per_bar = []
    for turned, from_beat in phases:
        playhead = beat_at(turned)
        assert from_beat % BAR == 0 and playhead < from_beat <= playhead + BAR + 0.75, (
            f"the change came in at beat {from_beat} with the playhead at {playhead:.2f}: not the next bar line")
        bars = [sum(1 for r in ons if from_beat + b * BAR <= r["beat"] < from_beat + (b + 1) * BAR)
                for b in range(BARS)]
        per_bar.append(bars)
    assert phases[0][1] + BARS * BAR <= phases[1][1] and phases[1][1] + BARS * BAR <= key_from
    assert beat_at(keyed) < key_from <= beat_at(keyed) + BAR + 0.75
    keyed_notes = [r["msg"][1] for r in ons if r["beat"] >= key_from]
    assert len(keyed_notes) >= 10 and {p % 12 for p in keyed_notes} <= {0, 2, 4, 5, 7, 9, 11}, keyed_notes
    low, high = (sum(bars) / BARS for bars in per_bar)
    print(f"notes per bar from the next bar line: density {controls.density(0)} -> {per_bar[0]} (mean {low:.1f}), "
          f"density {controls.density(127)} -> {per_bar[1]} (mean {high:.1f}); x{high / max(low, 0.25):.1f}")
    assert high >= 3 * max(low, 0.25), f"density barely moves the stream: {per_bar}"
