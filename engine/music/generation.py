"""A trained music model: MIDI files, piano rolls and WAV previews, live sessions, and the
JSB benchmark's frame NLL.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.music.baseline import MusicBaseline
from engine.music.blas import one_blas_thread
from engine.music.config import build_music_net, stored_config
from engine.music.evaluation import frame_nll
from engine.music.frame_model import MusicFrameRNN
from engine.music.jsb import load_jsb
from engine.music.keys import bar_steps
from engine.music.midi_files import MAX_PIECE_STEPS, MidiSkip, read_midi
from engine.music.mixture import MAX_MEMBERS, MusicMixture
from engine.music.output import render_wav, roll_to_midi, save_png
from engine.music.phrase import Phrase
from engine.music.piece import N_KEYS, Piece
from engine.music.sampling import Controls, Stepper, repeat_distance
from engine.music.session import MusicSession, NoteEvent
from engine.music.token_model import MusicRNN


class MusicModel:
    """A trained music model: generation to files, and live sessions."""

    def __init__(self, rnn: MusicRNN | MusicFrameRNN | MusicMixture, config: dict, baseline: MusicBaseline | None = None,
                 voices: int = 0, avoids_parallels: bool = False, bar_repeats: list[float] | None = None):
        self.rnn = rnn.eval()
        self.config = config
        self.baseline = baseline  # the benchmark baseline, when it was trained alongside
        # The voice limit when the controls set none: the training music's (`trained_voices`); 0 = none.
        self.voices = voices
        # The part-writing rule when the controls say nothing (`avoids_parallels`).
        self.avoids_parallels = avoids_parallels
        # How often the training music repeats the bar 1, 2, 3, 4 bars back (`trained_repeats`): generate() does too.
        self.bar_repeats = bar_repeats
        self.steps_per_quarter = int(config.get("steps_per_quarter", 4))
        self.steps_per_bar = rnn.config.bar_steps or 4 * self.steps_per_quarter

    def read_primer(self, primer: str | Path | bytes | Piece, max_steps: int = MAX_PIECE_STEPS) -> Piece:
        """A MIDI clip (path or bytes) quantised to this model's grid; raises ValueError if unusable
        or longer than `max_steps` (checked before its roll is built)."""
        if isinstance(primer, Piece):
            return primer
        try:
            return read_midi(primer, self.steps_per_quarter, max_steps=max_steps)
        except MidiSkip as e:
            raise ValueError(f"cannot prime from this MIDI clip: {e}") from e

    def bar_of(self, primer: Piece | None = None, meter: tuple[int, int] | None = None) -> int:
        """Steps per bar of the music made: the meter asked for, else the primer's, else the model's bar."""
        if meter is not None:
            return bar_steps(meter, self.steps_per_quarter)
        return primer.steps_per_bar if primer is not None else self.steps_per_bar

    def generate(self, bars: float = 8, controls: Controls | None = None, *, seed: int = 0,
                 primer: str | Path | bytes | Piece | None = None, meter: tuple[int, int] | None = None,
                 progress: Callable[[float, str], None] | None = None) -> np.ndarray:
        """A roll (steps, 88) of the primer (if any) followed by `bars` bars of continuation, in
        `meter` if given, else the primer's (3/4 and 6/8 bars are 12 16ths), else the model's bar.
        The position-in-bar conditioning follows that bar. A new bar replays the one 1-4 bars before it
        as often as the training music does (`bar_repeats`; not into a step the part-writing rule
        forbids), else the model draws it. `progress(fraction, message)` hears
        after each bar, and may raise to stop (the engine's raises engine.ops.Cancelled once the op
        is cancelled)."""
        controls = (controls or Controls()).checked()
        clip = self.read_primer(primer) if primer is not None else None
        bar = self.bar_of(clip, meter)
        steps = int(round(bars * bar))
        if steps <= 0:
            raise ValueError(f"bars must be > 0, got {bars}")
        rng = np.random.default_rng(seed)
        head = clip.roll if clip is not None else np.zeros((0, N_KEYS), np.int8)
        # Start the primer where it starts in its bar, so the continuation is bar-aligned.
        stepper = Stepper(self.rnn, bar_phase=clip.bar_phase % bar if clip is not None else 0, steps_per_bar=bar,
                          voices=self.voices, avoids_parallels=self.avoids_parallels)
        allowed = controls.allowed_keys()
        body = []
        with one_blas_thread():  # small matrix-vector products: threads only wait on a busy machine
            for frame in head:
                stepper.force(frame)
            stepper.hear(Phrase.of(head))
            repeat: list[np.ndarray] = []  # the rest of a bar being played again
            for step in range(steps):
                if self.bar_repeats and (stepper.bar_phase + len(head) + step) % bar == 0:
                    back = repeat_distance(rng, self.bar_repeats) * bar
                    repeat = body[step - back:step] if back and step >= back else []
                    if repeat and not stepper.may_play(controls, repeat[0], np.zeros(N_KEYS, bool)):
                        repeat = []  # a new bar instead
                if repeat:
                    frame = repeat.pop(0).copy()
                    frame[(frame == 1) & (stepper.prev == 0)] = 2  # a note held into the bar before starts here
                    stepper.force(frame)
                    body.append(frame)
                else:
                    body.append(stepper.sample(controls, rng, allowed))
                if progress and (step + 1) % bar == 0:
                    progress((step + 1) / steps, f"bar {(step + 1) // bar} of {bars:g}")
        return np.concatenate([head, np.stack(body)]).astype(np.int8)

    def write(self, roll: np.ndarray, out_dir: str | Path, stem: str = "music", *, bpm: float = 120.0,
              primer_steps: int | None = None, meter: tuple[int, int] = (4, 4),
              key: str | None = None) -> dict[str, Path | None]:
        """{"midi", "png", "wav"} files for a roll; "wav" is None without fluidsynth."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        midi = out / f"{stem}.mid"
        roll_to_midi(roll, self.steps_per_quarter, bpm, meter=meter, key=key).save(midi)
        png = save_png(roll, out / f"{stem}.png", bar_steps(meter, self.steps_per_quarter), split_at=primer_steps)
        return {"midi": midi, "png": png, "wav": render_wav(midi, out / f"{stem}.wav")}

    def session(self, *, seed: int = 0, controls: Controls | None = None,
                priming: list[NoteEvent | dict] | None = None, ticks_per_beat: int = 480,
                channel: int = 0, velocity: int = 80, meter: tuple[int, int] | None = None) -> MusicSession:
        """A live stream, in `meter` if given (else the model's bar, 4/4 for the shipped model); it
        repeats bars as `generate` does, where the controls then in force allow the bar."""
        return MusicSession(self.rnn, self.steps_per_quarter, seed=seed, controls=controls, priming=priming,
                            ticks_per_beat=ticks_per_beat, channel=channel, velocity=velocity,
                            steps_per_bar=self.bar_of(meter=meter) if meter else None, voices=self.voices,
                            avoids_parallels=self.avoids_parallels, bar_repeats=self.bar_repeats)


def load(config: dict, weights: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> MusicModel:
    """The finished model from a checkpoint: `weights` keys are "<net>.<param>" ("rnn.head.weight")."""
    cfg = stored_config(config)
    if not 1 <= cfg.members <= MAX_MEMBERS:
        raise ValueError(f"members must be 1 to {MAX_MEMBERS}, not {cfg.members}")
    nets = [build_music_net(cfg.model) for _ in range(cfg.members)]
    rnn = nets[0] if cfg.members == 1 else MusicMixture(nets)  # a mixture's weights: "rnn.members.<i>.<param>"
    own = {k[len("rnn."):]: v for k, v in weights.items() if k.startswith("rnn.")}
    if not own:
        raise ValueError(f"no 'rnn.*' weights in this checkpoint (keys start with "
                         f"{sorted({k.split('.')[0] for k in weights})}); is it a music model?")
    try:
        rnn.load_state_dict(own)
    except RuntimeError as e:
        raise ValueError(f"this checkpoint's weights do not fit its config (arch={cfg.model.arch!r}, "
                         f"d_hidden={cfg.model.d_hidden}); was it saved with another config? ({str(e)[:300]})") from None
    return MusicModel(rnn.to(device), cfg.to_dict(), load_baseline(config, weights, device))


def trained_repeats(metadata: dict) -> list[float] | None:
    """How often a stored model's training music repeats a bar 1-4 bars back (its data summary);
    None, no repeats drawn, for models stored before the summary recorded it."""
    return (metadata.get("data") or {}).get("bar_repeats")


def trained_voices(metadata: dict) -> int:
    """The voices of a stored model's training music (its data summary, engine.music.objective.voices_of);
    0, no limit, for models stored before the summary recorded them."""
    return int((metadata.get("data") or {}).get("voices") or 0)


# Part writing whose voices move in parallel fifths/octaves at most this often (per 100 chord
# changes, engine.music.style.parallels) avoids them: the real chorales 0.75-1.1, a generated
# chorale without the rule 7-9. At least this many voices make it part writing.
PARALLELS_AVOIDED, PART_WRITING_VOICES = 2.0, 3


def avoids_parallels(metadata: dict) -> bool:
    """Whether a stored model's training music avoids parallel fifths and octaves (its data
    summary: voices and parallels_per_100): the no_parallels default. False for models stored
    before the summary recorded the rate."""
    data = metadata.get("data") or {}
    rate = data.get("parallels_per_100")
    return rate is not None and int(data.get("voices") or 0) >= PART_WRITING_VOICES and rate <= PARALLELS_AVOIDED


def load_baseline(config: dict, weights: dict[str, torch.Tensor], device: torch.device | str = "cpu",
                  ) -> MusicBaseline | None:
    """The benchmark baseline from the same checkpoint, or None if it was not trained."""
    cfg = stored_config(config)
    own = {k[len("baseline."):]: v for k, v in weights.items() if k.startswith("baseline.")}
    if cfg.baseline is None or not own:
        return None
    net = MusicBaseline(cfg.baseline)
    net.load_state_dict(own)
    return net.to(device).eval()


def evaluate_jsb(model: MusicModel, baseline: MusicBaseline | None, jsb: str | Path,
                 split: str = "test") -> dict[str, float]:
    """The benchmark: exact frame NLL (nats per step) on a JSB quarter-note split, for the
    token model and (if given) the independent-Bernoulli baseline."""
    if model.steps_per_quarter != 1 or model.rnn.config.holds:
        raise ValueError("the JSB benchmark needs a model trained on quarter-note steps without holds "
                         "(train with jsb=PATH and steps_per_quarter=1)")
    pieces = load_jsb(jsb, "quarter")[split]
    device = next(model.rnn.parameters()).device
    ours = frame_nll(model.rnn, pieces, device)
    out = {"nll": ours["nll"], "steps": ours["steps"]}
    if baseline is not None:
        out["baseline_nll"] = frame_nll(baseline, pieces, device)["nll"]
    return out
