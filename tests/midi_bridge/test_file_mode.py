"""File mode and engine errors: the bridge process against a real engine, no MIDI system needed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import mido
from midi_rig import REPO

from midi_bridge import exits
from midi_bridge.notes import still_sounding


def run_bridge(engine, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATELIER_STATE_DIR": str(engine.state_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "midi_bridge", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_file_mode_writes_the_stream_to_a_midi_file(music_engine, tmp_path):
    out = tmp_path / "stream.mid"
    done = run_bridge(music_engine, "--file", str(out), "--model", "tiny", "--bars", "2", "--bpm", "90",
                      "--channel", "3", "--program", "5", "--velocity-scale", "0.5", "--max-note-beats", "1")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model"] == "tiny" and summary["notes"] > 0
    midi = mido.MidiFile(out)
    track = midi.tracks[0]
    assert abs(mido.tempo2bpm(next(m for m in track if m.type == "set_tempo").tempo) - 90) < 1e-3
    channel_messages = [m for m in track if not m.is_meta]
    assert channel_messages[0].type == "program_change" and channel_messages[0].program == 4
    assert all(m.channel == 2 for m in channel_messages)
    ons = [m for m in channel_messages if m.type == "note_on"]
    assert len(ons) == summary["notes"] and all(m.velocity == 40 for m in ons)  # 80 scaled by 0.5
    assert not still_sounding([m.bytes() for m in channel_messages], honour_cc123=False)
    assert [m.bytes() for m in channel_messages[-2:]] == [[0xB2, 123, 0], [0xB2, 120, 0]]
    # Bar 1 and 2 only; each note at most one beat long.
    now, start = 0, {}
    for m in track:
        now += m.time
        if m.type == "note_on":
            assert now < 2 * 4 * 480
            start[m.note] = now
        elif m.type == "note_off":
            assert now - start[m.note] <= 480


def test_a_missing_model_or_engine_is_a_clear_error(music_engine, tmp_path):
    done = run_bridge(music_engine, "--file", str(tmp_path / "x.mid"), "--model", "nope")
    assert done.returncode == exits.ENGINE_REFUSED and "cannot open a music session with model 'nope'" in done.stderr
    done = run_bridge(music_engine, "--file", str(tmp_path / "x.mid"), "--engine", "127.0.0.1:9")
    assert done.returncode == exits.ENGINE_UNREACHABLE and "cannot reach the Atelier engine at 127.0.0.1:9" in done.stderr
    assert "atelier serve" in done.stderr and "Traceback" not in done.stderr
