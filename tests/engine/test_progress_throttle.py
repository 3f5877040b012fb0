"""ProgressThrottle on a real event loop: a flood of progress from a job's thread is thinned, in order, never losing the last word."""
from __future__ import annotations

import asyncio
import json
import threading

from engine.server.progress import ProgressThrottle


def _events(flood: list[dict], hz: float) -> list[dict]:
    """What `deliver` saw, in order, when a job's thread emitted `flood` as fast as it could."""
    delivered: list[dict] = []

    async def main() -> None:
        loop, done = asyncio.get_running_loop(), asyncio.Event()

        def deliver(frame: bytes, final: bool) -> None:
            delivered.append(json.loads(frame))
            if final:
                done.set()

        throttle = ProgressThrottle(loop, hz, deliver, lambda event: json.dumps(event).encode())
        job = threading.Thread(target=lambda: [throttle(event) for event in flood])
        job.start()
        await asyncio.wait_for(done.wait(), 10)
        job.join()

    asyncio.run(main())
    return delivered


def test_a_flood_of_progress_is_thinned_and_its_last_report_comes_before_the_outcome():
    reports = [{"type": "progress", "fraction": i / 5000, "message": f"bar {i}"} for i in range(1, 5001)]
    delivered = _events(reports + [{"type": "result", "value": 1}], hz=20)
    progress = [e["message"] for e in delivered[:-1]]
    assert delivered[-1] == {"type": "result", "value": 1}
    assert 1 <= len(progress) <= 5, f"{len(progress)} of 5000 reports reached the loop"
    assert progress[-1] == "bar 5000"
    assert [int(m.split()[1]) for m in progress] == sorted(int(m.split()[1]) for m in progress)


def test_a_report_with_a_preview_is_never_thinned_away():
    flood = []
    for frame in range(3):
        flood += [{"type": "progress", "fraction": 0.0, "message": f"frame {frame} step {i}"} for i in range(500)]
        flood.append({"type": "progress", "fraction": 0.0, "message": f"frame {frame}", "preview": frame})
    delivered = _events(flood + [{"type": "error", "code": "cancelled"}], hz=20)
    assert [e["preview"] for e in delivered if "preview" in e] == [0, 1, 2]
    for frame in range(3):  # what was held back before a preview comes right before it
        at = next(i for i, e in enumerate(delivered) if e.get("preview") == frame)
        assert delivered[at - 1]["message"] == f"frame {frame} step 499"
    assert delivered[-1]["code"] == "cancelled" and len(delivered) <= 3 * 3 + 1
