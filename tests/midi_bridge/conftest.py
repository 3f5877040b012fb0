"""Fixtures for the MIDI bridge tests: JACK, a tiny trained music model, an engine, the
receiver and sender ports and the bridge process (helpers in midi_rig.py)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent))  # midi_rig; appended so `conftest` stays tests/conftest.py

from midi_rig import (Bridge, Delivery, FrameReceiver, JackServer, Receiver, Sender, match_log,  # noqa: E402
                      start_engine_in, tiny_model)


@pytest.fixture(scope="session")
def jack():
    try:
        # Realtime where the OS allows it (as a musician runs JACK): without it, a busy machine makes the
        # dummy backend skip hundreds of cycles in a test and frame timing means nothing.
        with JackServer(realtime=True) as server:
            yield server
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tiny_music_model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("music-model"))


@pytest.fixture(scope="session")
def music_engine(tmp_path_factory, tiny_music_model):
    engine = start_engine_in(tmp_path_factory.mktemp("engine"), tiny_music_model)
    yield engine
    engine.stop()


def _short(request) -> str:
    return "".join(c for c in request.node.name if c.isalnum())[-16:]


@pytest.fixture
def jack_troubles(jack):
    """The xruns jackd reports during one test: how many delivery incidents it may excuse."""
    start = jack.troubles()
    return lambda: jack.troubles() - start


@pytest.fixture
def check_delivery(jack_troubles):
    """Matches what arrived with what the bridge logged; differences must be explained by xruns."""

    def check(received: list, sent: list[dict]) -> Delivery:
        time.sleep(0.2)  # let jackd's log catch up
        found = match_log(received, sent)
        troubles = jack_troubles()
        assert found.incidents <= troubles and len(found.pairs) >= 0.8 * len(sent), (
            f"{found.lost} logged messages never arrived and {found.unlogged} arrived unlogged, in {found.incidents} "
            f"incidents, while jackd reported {troubles} xruns:\n{found.report}")
        return found

    return check


@pytest.fixture
def receiver(jack, request):
    r = Receiver(_short(request))
    yield r
    r.close()


@pytest.fixture
def frame_receiver(jack, request):
    r = FrameReceiver(_short(request))
    yield r
    r.close()


@pytest.fixture
def sender(jack, request):
    s = Sender(_short(request))
    yield s
    s.close()


@pytest.fixture
def start_bridge(jack, tmp_path):
    started: list[Bridge] = []

    def start(engine, *args: str, model: str = "tiny", api: str = "jack") -> Bridge:
        bridge = Bridge(list(args), engine, tmp_path, jack.env, model, api)
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        if bridge.process.poll() is None:
            bridge.process.kill()
            bridge.process.wait()
