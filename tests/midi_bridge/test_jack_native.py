"""The native JACK output: each message at its intended frame.

The bridge logs, for every message, the frame it was handed over for (its due time on
JACK's clock); a JACK client of our own records the frame each message arrives at (the
cycle's last_frame_time plus the message's offset). Real JACK server (dummy backend), real
engine and bridge processes.
"""
from __future__ import annotations

import time

from midi_rig import percentile

from midi_bridge.notes import still_sounding


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
