"""Fixtures shared by the music tests: tiny MIDI files, a tiny model of each architecture, and
the one-step-at-a-time reference for token probabilities."""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
import torch

from engine.music.frame_model import MusicFrameRNN
from engine.music.tokens import token_context


def write_midi(path: Path, notes: list[tuple[int, int, int]], channel: int = 0, tpb: int = 480,
               extra_tracks: int = 0) -> Path:
    """A type-1 file; notes are (start tick, duration ticks, pitch)."""
    events = sorted([(s, 1, p) for s, d, p in notes] + [(s + d, 0, p) for s, d, p in notes])
    track, now = mido.MidiTrack(), 0
    for t, on, p in events:
        track.append(mido.Message("note_on" if on else "note_off", note=p, velocity=90 if on else 0,
                                  channel=channel, time=t - now))
        now = t
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="empty", time=0)]) if extra_tracks else track)
    if extra_tracks:
        mid.tracks.append(track)
    mid.save(path)
    return path


def chorale_like(n_beats: int = 16, tpb: int = 480) -> list[tuple[int, int, int]]:
    """Four voices of quarter notes on a C major progression."""
    chords = [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 71), (48, 55, 64, 72)]
    return [(b * tpb, tpb, p) for b in range(n_beats) for p in chords[b % 4]]


def _long_note_midi() -> bytes:
    """37 bytes: one middle C lasting 5 million beats (issue 24): 1.7 GB as a 16th-note roll."""
    import struct

    ticks, vlq = 5_000_000 * 48, b""
    vlq = bytes([ticks & 0x7F])
    while ticks := ticks >> 7:
        vlq = bytes([0x80 | ticks & 0x7F]) + vlq
    track = b"\x00\x90\x3c\x40" + vlq + b"\x80\x3c\x40" + b"\x00\xff\x2f\x00"
    data = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 48) + b"MTrk" + struct.pack(">I", len(track)) + track
    assert len(data) == 37
    return data


@pytest.fixture
def long_note_midi() -> bytes:
    return _long_note_midi()


@pytest.fixture
def midi_writer():
    return write_midi


@pytest.fixture
def chorale_notes():
    return chorale_like


@pytest.fixture(params=["token", "frame"])
def tiny_model(request):
    """An untrained 16th-note model with onset/held tokens: small, fast, deterministic; each architecture."""
    import torch

    from engine.config import build
    from engine.music.config import MusicConfig, build_music_net
    from engine.music.generation import MusicModel

    torch.manual_seed(0)
    cfg = build(MusicConfig, {"model": {"holds": True, "d_hidden": 32, "d_embed": 16, "n_layers": 1,
                                           "arch": request.param, "d_decoder": 32}})
    return MusicModel(build_music_net(cfg.model), cfg.to_dict())


def _step_logprobs(model: torch.nn.Module, frame: np.ndarray, prev: np.ndarray, t: int, state=None):
    """(log p of each token of the step, STEP_END included, new state). The token model's state
    continues after the step's last key; STEP_END is fed as the next step's first input."""
    lay = model.config.layout
    tokens = np.array(lay.step_tokens(frame, prev))
    ctx = token_context(tokens, lay)
    as_t = lambda a: torch.as_tensor(a).unsqueeze(0)  # noqa: E731
    prev_t = torch.as_tensor(np.tile(prev > 0, (len(tokens), 1)), dtype=torch.float32).unsqueeze(0)
    if isinstance(model, MusicFrameRNN):
        step_ctx, state = model.step_context(prev_t[:, :1], torch.tensor([[t]]), state)
        logits = model.decode(step_ctx.expand(-1, len(tokens), -1), as_t(ctx["inputs"]),
                              as_t(ctx["written"]).float())
    else:
        logits, state = model(as_t(ctx["inputs"]), as_t(np.full(len(tokens), t)), prev_t, state)
    logp = torch.log_softmax(model.mask(logits, as_t(ctx["floor"]), prev_t), -1)[0]
    return logp[torch.arange(len(tokens)), torch.as_tensor(tokens)], state


@pytest.fixture
def step_logprobs():
    """A network's masked log-probabilities of one step's tokens, computed one step at a time
    with the recurrent state carried by hand (no batching, no padding):
    step_logprobs(model, frame, prev, t, state) -> (log p per token, STEP_END included; state)."""
    return _step_logprobs


@pytest.fixture
def bar_positions(monkeypatch) -> list[int]:
    """The position in the bar each time step the generating network opens is conditioned on, in order."""
    from engine.music import sampling

    seen, real = [], sampling.fast_net

    def recording(model):
        net = real(model)
        opened = net.open
        net.open = lambda state, pos, prev: (seen.append(pos), opened(state, pos, prev))[1]
        return net

    monkeypatch.setattr(sampling, "fast_net", recording)
    return seen

