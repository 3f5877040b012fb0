import numpy as np
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


# -- the shipped model through a real engine ------------------------------------------------

SHIPPED = "music-default"
HIGH_PHRASE = [84, 88, 91, 96, 91, 88, 84, 86, 88, 91, 89, 86, 84, 79, 84, 88]  # 8ths around C6


def _session(client, **params) -> str:
    return client.call("music.session.open", {"model": SHIPPED, **params})["session"]


def _next(client, session: str, beats: float) -> np.ndarray:
    return client.call("music.session.next", {"session": session, "beats": beats})["events"]


def test_density_scales_new_notes_per_bar_from_the_next_beat(engine):
    """Issue 22/21: density 0.25 against 4 on the shipped model differ at least 3x in notes per bar."""
    client = engine.client("density")
    per_bar = {}
    for density in (0.25, 1.0, 4.0):
        counts = []
        for seed in range(3):
            sid = _session(client, seed=seed)
            _next(client, sid, 4)  # a bar at the default, then the change
            client.call("music.session.set", {"session": sid, "density": density})
            counts.append(len(_next(client, sid, 16)) / 4)
            client.call("music.session.close", {"session": sid})
        per_bar[density] = float(np.mean(counts))
    client.close()
    print(f"notes per bar over 4 bars, seeds 0-2: {per_bar}")
    assert per_bar[0.25] < per_bar[1.0] < per_bar[4.0]
    assert per_bar[4.0] >= 3 * per_bar[0.25], per_bar


def _answer_offsets(client, free: bool) -> list[float]:
    """Mean pitch of the answer minus the phrase's, fed in a running session and as priming."""
    notes = np.array([[i * 240, 240, p, 90, 0] for i, p in enumerate(HIGH_PHRASE)], np.int32)
    offsets = []
    for seed in range(3):
        fed = _session(client, seed=seed, free=free)
        _next(client, fed, 4)
        client.call("music.session.feed", {"session": fed, "notes": notes})
        primed = _session(client, seed=seed, free=free, priming=notes)
        for sid in (fed, primed):
            answer = _next(client, sid, 8)
            # The retrained chorale model (12945 steps) answers a phrase this far above its register
            # thinly: 1-8 notes in 8 beats (the model before: 6-14; free: 12-36). Open under issue 21.
            assert len(answer) >= 1, "the answer is silent"
            offsets.append(float(answer[:, 2].mean() - np.mean(HIGH_PHRASE)))
            client.call("music.session.close", {"session": sid})
    return offsets


def test_an_answer_to_a_high_phrase_stays_in_its_register_unless_free(engine):
    """Issue 21: the answer to a phrase two octaves above middle C has its mean pitch within 7
    semitones of the phrase's; free=true drops the pull (the shipped chorale model answers an
    octave and more below)."""
    client = engine.client("register")
    pulled, free = _answer_offsets(client, False), _answer_offsets(client, True)
    client.close()
    print(f"answer mean pitch - phrase mean pitch: pulled {np.round(pulled, 1)}, free {np.round(free, 1)}")
    assert max(abs(o) for o in pulled) <= 7, pulled
    assert np.mean(free) < -10, free
