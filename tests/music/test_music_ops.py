"""The music kind over a real engine process: train op, generate, eval, live sessions, bad params."""
from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from engine.client import EngineError
from engine.music.jsb import jsb_dir
from engine.music.sampling import scale_pitch_classes
from support.chorale_midi import write_midi

TINY = {"model": {"holds": True, "d_hidden": 32, "d_embed": 16, "n_layers": 1, "d_decoder": 32}, "seq_steps": 32,
        "valid_fraction": 0.25}
TRAIN = {"steps": 6, "batch_size": 4, "log_every": 3, "lr": 3e-3}


def data_folder(engine, name: str) -> Path:
    """A folder the engine may read over the socket: under its models folder (anything else needs --allow-path)."""
    folder = Path(engine.models_dir) / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def peak_rss_mb(engine) -> float:
    """The engine process's peak resident memory so far (VmHWM), in MB."""
    status = Path(f"/proc/{engine.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@pytest.fixture(scope="module")
def tiny(engine, tmp_path_factory):
    """A client and a tiny 16th-note model trained through the engine's `train` op on four MIDI files."""
    folder = data_folder(engine, "midi")
    for i in range(4):
        write_midi(folder / f"piece{i}.mid", shift=i)
    (folder / "broken.mid").write_bytes(b"MThd garbage")
    client = engine.client("music-test")
    value = client.call("train", {"kind": "music", "name": "tiny", "data": {"midi": str(folder)},
                                  "model": TINY, "train": TRAIN}, timeout=120)
    yield client, value, folder
    client.close()


def _events_ok(chunks: list[dict], channel: int) -> np.ndarray:
    """Each chunk's events lie in its span, in order; no two notes overlap on one pitch and channel."""
    last_end: dict[int, int] = {}
    previous = 0
    for chunk in chunks:
        ev = chunk["events"]
        assert ev.dtype == np.int32 and ev.ndim == 2 and ev.shape[1] == 5
        assert chunk["start"] == previous and chunk["position"] > chunk["start"]
        previous = chunk["position"]
        assert np.all(np.diff(ev[:, 0]) >= 0)
        assert np.all((ev[:, 0] >= chunk["start"]) & (ev[:, 0] < chunk["position"]))
        assert np.all(ev[:, 1] > 0) and np.all((ev[:, 2] >= 21) & (ev[:, 2] <= 108))
        assert np.all(ev[:, 4] == channel)
        for start, duration, pitch, _, _ in ev.tolist():
            assert start >= last_end.get(pitch, 0), f"overlapping notes on pitch {pitch}"
            last_end[pitch] = start + duration
    return np.concatenate([c["events"] for c in chunks])


def test_train_op_reports_and_stores_the_model(tiny, engine):
    client, value, _ = tiny
    assert value["model"] == "tiny" and value["step"] == TRAIN["steps"]
    assert np.isfinite(value["metrics"]["valid_nll"])
    listed = {m["name"]: m for m in client.call("models.list")["models"]}
    assert listed["tiny"]["kind"] == "music"
    info = client.call("models.info", {"name": "tiny"})["metadata"]
    assert info["data"]["files_skipped"][0]["file"] == "broken.mid"  # the corrupt file is reported
    assert "music.session.next" in engine.client("caps").info["capabilities"]["ops"]


def test_generate_holds_to_the_part_writing_of_the_training_music_unless_told(tiny):
    """The training chords (I IV V I in four voices) move no voices in parallel fifths or octaves, so the
    model's generation avoids them by default; no_parallels=false lets the model write them."""
    from engine.music.piece import Piece
    from engine.music.style import parallels

    client, _, _ = tiny
    info = client.call("models.info", {"name": "tiny"})["metadata"]["data"]
    assert (info["voices"], info["parallels_per_100"]) == (4, 0.0)

    def found(**params) -> int:
        rolls = [client.call("music.generate", {"model": "tiny", "bars": 4, "seed": s, "density": 3.0, **params},
                             timeout=60)["roll"] for s in range(4)]
        return sum(parallels(Piece("g", np.asarray(r, np.int8)))[0] for r in rolls)

    assert found() == 0
    assert found(no_parallels=False) > 0


def test_generate_returns_a_midi_file_in_key(tiny):
    client, _, _ = tiny
    value = client.call("music.generate", {"model": "tiny", "bars": 2, "seed": 3, "key": "D minor",
                                           "density": 3.0, "bpm": 90.0}, timeout=60)
    roll, midi = value["roll"], value["midi"]
    assert roll.shape == (32, 88) and midi.dtype == np.uint8
    mid = mido.MidiFile(file=io.BytesIO(midi.tobytes()))
    pitches = [m.note for m in mid.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert pitches and {p % 12 for p in pitches} <= scale_pitch_classes("D minor")
    tempo = next(m.tempo for m in mid.tracks[0] if m.type == "set_tempo")
    assert round(mido.tempo2bpm(tempo)) == 90
    assert value["provenance"]["model"] == "tiny" and value["provenance"]["params"]["key"] == "D minor"


def test_generate_reports_its_bars_and_can_be_cancelled(tiny):
    client, _, _ = tiny
    reports = []
    start = time.monotonic()
    client.call("music.generate", {"model": "tiny", "bars": 64, "seed": 1},
                on_progress=lambda f, msg, preview: reports.append(msg), timeout=60)
    seconds = time.monotonic() - start
    bars = [int(m.split()[1]) for m in reports if m.startswith("bar ")]
    assert bars == sorted(bars) and bars[-1] == 64, reports  # in order, and the last bar always
    # at most 20 reports a second: a report for each of 64 bars made in well under a second
    # flooded the engine's loop, and a cancel sent after the first bar was read after the last
    assert len(bars) <= 2 + 20 * seconds, f"{len(bars)} bar reports in {seconds:.2f} s"

    started = threading.Event()
    request = client.submit("music.generate", {"model": "tiny", "bars": 256, "seed": 1},
                            on_progress=lambda f, msg, preview: msg.startswith("bar ") and started.set())
    assert started.wait(60), "no bar was reported"
    request.cancel()
    with pytest.raises(EngineError) as caught:
        request.result(timeout=60)
    assert caught.value.code == "cancelled"
    assert client.ping() >= 0


def test_primed_generation_starts_with_the_primer(tiny, tmp_path):
    from engine.music.midi_files import read_midi

    client, _, _ = tiny
    path = write_midi(tmp_path / "clip.mid", beats=8)
    primer = np.frombuffer(path.read_bytes(), np.uint8)
    value = client.call("music.generate", {"model": "tiny", "bars": 1, "primer": primer}, timeout=60)
    head = read_midi(path, 4).roll
    assert value["primer_steps"] == len(head)
    assert np.array_equal(value["roll"][:len(head)], head) and len(value["roll"]) == len(head) + 16


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to read the engine's memory")
def test_a_37_byte_long_note_primer_is_refused_before_allocation(tiny, engine, long_note_midi):
    client, _, _ = tiny
    before, start = peak_rss_mb(engine), time.monotonic()
    with pytest.raises(EngineError) as e:
        client.call("music.generate", {"model": "tiny", "bars": 1, "primer": np.frombuffer(long_note_midi, np.uint8)},
                    timeout=60)
    assert e.value.code == "bad_params" and "5,000,000 beats" in e.value.message, e.value.message
    assert time.monotonic() - start < 5
    assert peak_rss_mb(engine) - before < 100, "the primer was allocated before it was refused"
    # a primer over the primer cap (8192 steps = 2048 beats) in short notes: refused before its roll too
    long = [(b * 480, 480, 60) for b in range(0, 4000, 100)]
    with pytest.raises(EngineError) as e:
        client.call("music.generate", {"model": "tiny", "primer": np.frombuffer(_notes_midi(long), np.uint8)})
    assert e.value.code == "bad_params" and "at most 8,192 steps" in e.value.message, e.value.message


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to read the engine's memory")
def test_a_long_note_file_in_a_training_folder_is_skipped_with_its_reason(tiny, engine, long_note_midi):
    client, _, _ = tiny
    folder = data_folder(engine, "long")
    for i in range(2):
        write_midi(folder / f"piece{i}.mid", shift=i)
    (folder / "stuck.mid").write_bytes(long_note_midi)
    before, start = peak_rss_mb(engine), time.monotonic()
    client.call("train", {"kind": "music", "name": "tiny-long", "data": {"midi": str(folder)}, "model": TINY,
                          "train": {**TRAIN, "steps": 2}}, timeout=120)
    assert time.monotonic() - start < 60
    assert peak_rss_mb(engine) - before < 200, "the long note became a roll before it was skipped"
    data = client.call("models.info", {"name": "tiny-long"})["metadata"]["data"]
    assert data["files_used"] == 2 and data["train_steps"] < 1000
    skipped = {s["file"]: s["reason"] for s in data["files_skipped"]}
    assert "5,000,000 beats" in skipped["stuck.mid"] and "note-off" in skipped["stuck.mid"]


def test_a_phrase_too_long_to_feed_is_refused(tiny):
    client, _, _ = tiny
    far = np.array([[2**31 - 1, 480, 60, 90, 0]], np.int64)  # at 480 ticks a beat: 18 million steps away
    with pytest.raises(EngineError) as e:
        client.call("music.session.open", {"model": "tiny", "priming": far})
    assert e.value.code == "bad_params" and "feed at most" in e.value.message, e.value.message


def _notes_midi(notes: list[tuple[int, int, int]]) -> bytes:
    track, now = mido.MidiTrack(), 0
    for t, on, p in sorted([(s, 1, p) for s, d, p in notes] + [(s + d, 0, p) for s, d, p in notes]):
        track.append(mido.Message("note_on" if on else "note_off", note=p, velocity=90 if on else 0, time=t - now))
        now = t
    buffer = io.BytesIO()
    mido.MidiFile(type=1, ticks_per_beat=480, tracks=[track]).save(file=buffer)
    return buffer.getvalue()


def styled_primer(meter: tuple[int, int], bpm: float, key: str | None, bars: int = 2) -> np.ndarray:
    """A clip with a time signature, tempo and (optionally) key signature: a D major arpeggio in 8ths."""
    track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1]),
                            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))])
    if key:
        track.append(mido.MetaMessage("key_signature", key=key))
    pitches = [62, 66, 69, 74, 69, 66]
    for i in range(int(bars * meter[0] * 8 / meter[1])):  # 8ths
        track += [mido.Message("note_on", note=pitches[i % 6], velocity=90, time=0),
                  mido.Message("note_off", note=pitches[i % 6], velocity=0, time=240)]
    buffer = io.BytesIO()
    mido.MidiFile(type=1, ticks_per_beat=480, tracks=[track]).save(file=buffer)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def _meta(midi: np.ndarray) -> dict:
    mid = mido.MidiFile(file=io.BytesIO(midi.tobytes()))
    found = {m.type: m for m in mid.tracks[0] if m.is_meta}
    ts = found["time_signature"]
    return {"meter": (ts.numerator, ts.denominator), "bpm": round(mido.tempo2bpm(found["set_tempo"].tempo), 2),
            "key": found["key_signature"].key if "key_signature" in found else None}


@pytest.mark.parametrize("meter, bpm, key", [((3, 4), 90.0, "D"), ((6, 8), 150.0, None)])
def test_a_primed_continuation_keeps_the_primers_meter_tempo_and_key(tiny, meter, bpm, key):
    client, _, _ = tiny
    value = client.call("music.generate", {"model": "tiny", "bars": 2, "seed": 4,
                                           "primer": styled_primer(meter, bpm, key)}, timeout=60)
    assert _meta(value["midi"]) == {"meter": meter, "bpm": bpm, "key": "D"}  # no signature: the notes say D major
    assert value["meter"] == f"{meter[0]}/{meter[1]}" and value["bpm"] == bpm and value["steps_per_bar"] == 12
    assert len(value["roll"]) == value["primer_steps"] + 2 * 12  # two bars of 12 16ths


def test_a_primed_continuation_takes_what_it_is_told(tiny):
    client, _, _ = tiny
    value = client.call("music.generate", {"model": "tiny", "bars": 1, "primer": styled_primer((3, 4), 90.0, "D"),
                                           "meter": "4/4", "bpm": 100.0, "key": "Bb dorian"}, timeout=60)
    assert _meta(value["midi"]) == {"meter": (4, 4), "bpm": 100.0, "key": "Bbm"}
    assert len(value["roll"]) == value["primer_steps"] + 16
    plain = client.call("music.generate", {"model": "tiny", "bars": 1, "meter": "6/8"}, timeout=60)
    assert _meta(plain["midi"]) == {"meter": (6, 8), "bpm": 120.0, "key": None} and len(plain["roll"]) == 12
    with pytest.raises(EngineError) as e:
        client.call("music.generate", {"model": "tiny", "meter": "7/9"})
    assert e.value.code == "bad_params" and "'3/4'" in e.value.message


def test_write_output_and_demo(tiny, tmp_path):
    from engine.music import ops as music_ops
    from engine.music.output import fluidsynth_available

    client, _, _ = tiny
    files = music_ops.demo(client, "tiny", tmp_path)
    assert files[0] == tmp_path / "music.mid" and mido.MidiFile(files[0]).length > 0
    assert files[1].suffix == ".png" and files[1].stat().st_size > 0
    assert (len(files) == 3) == fluidsynth_available()


def test_session_streams_with_state_set_and_feed(tiny):
    client, _, _ = tiny
    priming = np.array([[0, 480, 60, 90, 0], [480, 480, 64, 90, 0], [960, 960, 67, 90, 0]], np.int32)
    opened = client.call("music.session.open", {"model": "tiny", "seed": 5, "priming": priming, "channel": 2,
                                                "density": 2.0})
    sid = opened["session"]
    assert opened["position"] == 0 and opened["event_columns"][0] == "start" and opened["steps_per_bar"] == 16
    waltz = client.call("music.session.open", {"model": "tiny", "meter": "3/4"})
    assert waltz["steps_per_bar"] == 12 and len(client.call("music.session.next", {"session": waltz["session"],
                                                                                 "beats": 3})["events"]) >= 0
    chunks = []
    for i in range(6):
        chunks.append(client.call("music.session.next", {"session": sid, "beats": 2}))
        if i == 1:
            changed = client.call("music.session.set", {"session": sid, "key": "E minor", "max_polyphony": 3})
            assert changed["controls"]["key"] == "E minor" and changed["controls"]["density"] == 2.0
        if i == 3:
            fed = client.call("music.session.feed", {"session": sid, "notes": priming[:2]})
            assert fed["fed"] == 2 and fed["position"] == chunks[-1]["position"]
    events = _events_ok(chunks, channel=2)
    assert len(events) > 5
    after_set = events[events[:, 0] >= chunks[1]["position"]]
    assert {p % 12 for p in after_set[:, 2].tolist()} <= scale_pitch_classes("E minor")
    client.call("music.session.set", {"session": sid, "key": ""})  # lock off again
    assert client.call("music.session.close", {"session": sid}) == {"closed": sid}
    with pytest.raises(EngineError) as e:
        client.call("music.session.next", {"session": sid, "beats": 1})
    assert e.value.code == "not_found"


def test_session_state_carries_across_calls(tiny):
    client, _, _ = tiny
    a = client.call("music.session.open", {"model": "tiny", "seed": 9})["session"]
    b = client.call("music.session.open", {"model": "tiny", "seed": 9})["session"]
    split = [client.call("music.session.next", {"session": a, "beats": n})["events"] for n in (3, 5)]
    whole = client.call("music.session.next", {"session": b, "beats": 8})["events"]
    assert np.array_equal(np.concatenate(split), whole)


def test_session_belongs_to_its_connection_and_ends_with_it(tiny, engine):
    other = engine.client("owner")
    sid = other.call("music.session.open", {"model": "tiny"})["session"]
    client, _, _ = tiny
    with pytest.raises(EngineError) as e:  # another connection cannot use it
        client.call("music.session.next", {"session": sid, "beats": 1})
    assert e.value.code == "not_found"
    other.close()
    with pytest.raises(EngineError) as e:
        client.call("music.session.next", {"session": sid, "beats": 1})
    assert e.value.code == "not_found"


def test_sessions_are_engine_sessions_closed_with_their_owner(tmp_path):
    """In-process: a music session is registered with the engine, so a disconnect (close_sessions) ends it."""
    import threading

    from engine.config import build
    from engine.music.config import MusicConfig, build_music_net
    from engine.server.core import Engine
    from engine.store.checkpoints import ModelStore

    cfg = build(MusicConfig, TINY)
    store = ModelStore(tmp_path, builtin=None)
    store.save("t", {f"rnn.{k}": v for k, v in build_music_net(cfg.model).state_dict().items()},
               {"kind": "music", "config": cfg.to_dict()})
    eng = Engine(tmp_path, "cpu", builtin=None, general_workers=1)

    def call(op: str, params: dict) -> dict:
        done, out = threading.Event(), {}
        eng.submit(op, params, owner=7, listener=lambda ev: ev["type"] != "progress" and (out.update(ev), done.set()))
        assert done.wait(30)
        return out

    try:
        sid = call("music.session.open", {"model": "t"})["value"]["session"]
        assert call("music.session.next", {"session": sid, "beats": 1})["type"] == "result"
        eng.close_sessions(7)
        assert call("music.session.next", {"session": sid, "beats": 1})["code"] == "not_found"
    finally:
        eng.close()


@pytest.mark.parametrize("op, params, words", [
    ("music.generate", {"key": "H major"}, "tonic"),
    ("music.generate", {"key": "C bebop"}, "unknown mode"),
    ("music.generate", {"temperature": 0.0}, "temperature"),
    ("music.generate", {"low": 90, "high": 60}, "'low'"),
    ("music.generate", {"bars": 0}, "bars"),
    ("music.generate", {"primer": np.frombuffer(b"not a midi file", np.uint8)}, "cannot prime"),
    ("music.generate", {"primer": np.zeros(8, np.float32)}, "uint8"),
    ("music.generate", {"top_p": 1.5}, "top_p"),
    ("music.session.open", {"priming": np.zeros((2, 4), np.int32)}, "N×5"),
    ("music.session.open", {"priming": np.array([[0, 480, 10, 90, 0]], np.int32)}, "pitch"),
    ("music.session.open", {"ticks_per_beat": 6}, "multiple"),
    ("music.session.open", {"channel": 16}, "channel"),
    ("music.session.open", {"meter": "5/3"}, "beats/unit"),
    ("music.eval", {"jsb": "{models}/nonexistent"}, "JSB"),
    ("music.eval", {"split": "dev"}, "split"),
])
def test_bad_params_are_explained(tiny, engine, op, params, words):
    client, _, _ = tiny
    params = {k: v.format(models=engine.models_dir) if isinstance(v, str) else v for k, v in params.items()}
    with pytest.raises(EngineError) as e:
        client.call(op, {"model": "tiny", **params}, timeout=30)
    assert e.value.code == "bad_params" and words in e.value.message, e.value.message


def test_bad_session_requests(tiny):
    client, _, _ = tiny
    sid = client.call("music.session.open", {"model": "tiny"})["session"]
    for params, words in (({"beats": 0.3}, "whole number"), ({"beats": 0}, "beats")):
        with pytest.raises(EngineError) as e:
            client.call("music.session.next", {"session": sid, **params})
        assert e.value.code == "bad_params" and words in e.value.message
    for params, words in (({}, "at least one control"), ({"key": "X"}, "tonic"), ({"low": 100, "high": 90}, "'low'")):
        with pytest.raises(EngineError) as e:
            client.call("music.session.set", {"session": sid, **params})
        assert e.value.code == "bad_params" and words in e.value.message
    with pytest.raises(EngineError) as e:
        client.call("music.session.feed", {"session": sid, "notes": np.array([[0, -1, 60, 90, 0]], np.int64)})
    assert e.value.code == "bad_params" and "duration" in e.value.message
    with pytest.raises(EngineError) as e:
        client.call("music.generate", {"model": "nope"})
    assert e.value.code == "not_found"
    with pytest.raises(EngineError) as e:
        client.call("train", {"kind": "music", "name": "x", "data": {}, "train": {"steps": 1}})
    assert e.value.code == "bad_params" and "exactly one source" in e.value.message


def test_eval_scores_held_out_files(tiny):
    client, _, _ = tiny
    value = client.call("music.eval", {"model": "tiny"}, timeout=60)
    assert value["scored_on"]["source"] == "midi" and np.isfinite(value["metrics"]["nll"])
    sheet = value["sheet"]
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3


@pytest.mark.skipif(jsb_dir() is None or not (jsb_dir() / "jsb-chorales-quarter.json").is_file(),
                    reason=f"needs the JSB split, not found at ATELIER_JSB_DIR={jsb_dir()} (a user's clone has no "
                           "../shared/datasets)")
def test_jsb_model_and_baseline_through_train_and_eval(tiny, engine):
    client, _, _ = tiny
    model = {"model": {"d_hidden": 24, "d_embed": 16, "n_layers": 1, "bar_steps": 4}, "steps_per_quarter": 1,
             "seq_steps": 16, "baseline": {"d_hidden": 16}}
    jsb = data_folder(engine, "jsb")  # over the socket the engine reads only under its allowed folders
    shutil.copy(jsb_dir() / "jsb-chorales-quarter.json", jsb)
    client.call("train", {"kind": "music", "name": "jsb-tiny", "data": {"jsb": str(jsb)},
                          "model": model, "train": {"steps": 3, "batch_size": 4}}, timeout=120)
    value = client.call("music.eval", {"model": "jsb-tiny", "split": "valid"}, timeout=120)
    metrics = value["metrics"]
    assert value["scored_on"]["source"] == "jsb" and metrics["steps"] > 1000
    assert 0 < metrics["nll"] < 100 and 0 < metrics["baseline_nll"] < 100


def test_cli_generate_and_eval_against_the_engine_in_words(tiny, engine, tmp_path, capsys, monkeypatch):
    from engine.cli.main import main
    from engine.music import output

    out = tmp_path / "take.mid"
    remote = ["--engine", f"{engine.host}:{engine.port}", "--token-file", str(Path(engine.state_dir) / "token"),
              "--model", "tiny"]
    monkeypatch.setattr(output.shutil, "which", lambda name: None)  # as on a machine without fluidsynth
    code = main(["generate", "music", *remote, "--bars", "1", "--key", "G major", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file() and out.with_suffix(".png").is_file() and not out.with_suffix(".wav").exists()
    assert text.startswith("1 bar of 4/4 at 120 BPM in G: ") and " notes" in text, text
    assert "no WAV preview: the fluidsynth command is not installed (Debian: apt install fluidsynth" in text
    assert f"wrote {out}" in text and "{" not in text  # words, not JSON
    assert main(["eval", "music", *remote]) == 0
    text = capsys.readouterr().out
    assert " nats per time step (exact frame NLL) over " in text and "held-out" in text and "{" not in text, text
