import pytest
import torch

from engine.music.sampling import Controls, scale_pitch_classes
from engine.music.session import NoteEvent

torch.set_num_threads(1)


def _check_well_formed(events: list[NoteEvent]) -> None:
    starts = [e.start for e in events]
    assert starts == sorted(starts)
    last_end: dict[tuple[int, int], int] = {}
    for e in events:
        assert e.duration > 0 and 21 <= e.pitch <= 108 and 1 <= e.velocity <= 127 and 0 <= e.channel <= 15
        key = (e.channel, e.pitch)
        assert e.start >= last_end.get(key, 0), f"overlapping notes on {key}"
        last_end[key] = e.start + e.duration


def test_events_well_formed_across_calls_set_and_feed(tiny_model):
    s = tiny_model.session(seed=2, controls=Controls(density=2.0), channel=3)
    events = []
    for i in range(6):
        chunk = s.next_beats(2)
        assert all(s.position - 2 * 480 <= e.start < s.position for e in chunk)
        events += chunk
        if i == 1:
            s.set(key="E minor", max_polyphony=3)
        if i == 3:
            s.feed([{"start": 0, "duration": 480, "pitch": 64, "velocity": 90, "channel": 0},
                    NoteEvent(480, 960, 67, 90, 0)])
    assert len(events) > 10 and all(e.channel == 3 for e in events)
    _check_well_formed(events)
    later = [e for e in events if e.start >= 2 * 2 * 480]  # after set(): scale lock holds for new onsets
    assert {e.pitch % 12 for e in later} <= scale_pitch_classes("E minor")


def test_state_carries_over_between_calls(tiny_model):
    a = tiny_model.session(seed=7)
    b = tiny_model.session(seed=7)
    split = a.next_beats(3) + a.next_beats(5)
    whole = b.next_beats(8)
    assert split == whole


def test_priming_changes_the_stream(tiny_model):
    plain = tiny_model.session(seed=1).next_beats(8)
    primed = tiny_model.session(seed=1, priming=[NoteEvent(0, 1920, 48, 90, 0)]).next_beats(8)
    assert plain != primed


def test_faster_than_real_time(tiny_model):
    import time
    s = tiny_model.session(seed=0)
    t = time.perf_counter()
    s.next_beats(16)
    assert time.perf_counter() - t < 8 * 0.5  # 16 beats last 8 s at 120 BPM


def test_bad_requests_are_explained(tiny_model):
    s = tiny_model.session()
    with pytest.raises(ValueError, match="whole number of steps"):
        s.next_beats(0.1)
    with pytest.raises(ValueError, match="unknown control"):
        s.set(tempo=3)
    with pytest.raises(ValueError, match="pitch must be"):
        s.feed([NoteEvent(0, 10, 5, 90, 0)])


def test_a_session_in_three_four_hears_twelve_step_bars(tiny_model, bar_positions):
    s = tiny_model.session(seed=1, meter=(3, 4))
    s.next_beats(6)  # two bars of 3/4 (and the look-ahead past them)
    assert s.bar_steps == 12 and bar_positions[:24] == [t % 12 for t in range(24)]
