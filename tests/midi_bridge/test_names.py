"""Names as they are: the bridge prints the JACK names other programs see, a second bridge
and --virtual-input get their documented names, nothing from ALSA or libjack comes before
the bridge's own words, and each kind of failure has its own exit code."""
from __future__ import annotations

import os
import subprocess
import sys

import jack
from midi_rig import REPO

from midi_bridge import exits


def jack_ports() -> list[str]:
    return subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()


def test_two_bridges_and_a_virtual_input_get_the_names_they_print(music_engine, start_bridge):
    """Each bridge opens its JACK clients once, under their final names: no probe client comes
    and goes at start-up (closing one now and then hung a bridge there)."""
    watcher = jack.Client("names-watcher", no_start_server=True)
    registered: list[str] = []
    watcher.set_client_registration_callback(lambda name, added: added and registered.append(name))
    watcher.activate()
    first = start_bridge(music_engine, "--virtual-input")
    first.wait_for("ready")
    second = start_bridge(music_engine)
    second.wait_for("ready")
    watcher.close()
    assert sorted(registered) == ["Atelier", "Atelier 2", "Atelier in"], registered
    listed = jack_ports()
    assert {"Atelier:out", "Atelier in:in", "Atelier 2:out"} <= set(listed), listed
    assert "a new JACK port 'Atelier:out'" in first.stderr() and "'Atelier in:in'" in first.stderr()
    assert "a new JACK port 'Atelier 2:out'" in second.stderr()
    for bridge in (first, second):
        assert bridge.stderr().startswith("atelier-midi: "), bridge.stderr()  # no library noise first
        assert bridge.stop() == exits.OK


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midi_bridge", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={**os.environ, **(env or {})})


def test_each_kind_of_failure_has_its_exit_code(jack, music_engine, receiver):
    state = {"ATELIER_STATE_DIR": str(music_engine.state_dir)}
    no_server = run_cli("--api", "jack", env={"JACK_DEFAULT_SERVER": "atelier-nobody-runs-this"})
    assert no_server.returncode == exits.MIDI and no_server.stderr.startswith("atelier-midi: cannot open a MIDI system")
    assert "JackShmReadWritePtr" not in no_server.stderr
    assert run_cli("--api", "jack", "--port", "nothing:here").returncode == exits.MIDI
    assert run_cli("--bpm", "9000").returncode == exits.USAGE
    assert run_cli("--api", "jack", "--port", receiver.name, "--engine", "nowhere").returncode == exits.USAGE
    unreachable = run_cli("--api", "jack", "--port", receiver.name, "--engine", "127.0.0.1:9")
    assert unreachable.returncode == exits.ENGINE_UNREACHABLE, unreachable.stderr
    refused = run_cli("--api", "jack", "--port", receiver.name, "--model", "no-such-model", env=state)
    assert refused.returncode == exits.ENGINE_REFUSED, refused.stderr
    assert all(r.stderr.startswith("atelier-midi: ") for r in (unreachable, refused))
    assert "exit codes:" in run_cli("--help").stdout
