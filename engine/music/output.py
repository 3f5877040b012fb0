"""What generation hands the user: a standard MIDI file, a piano-roll picture, a WAV preview."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mido
import numpy as np
from PIL import Image

from engine.music.piece import LOWEST, roll_notes

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")


def roll_to_midi(roll: np.ndarray, steps_per_quarter: int, bpm: float = 120.0, velocity: int = 80,
                 program: int = 0, ticks_per_beat: int = 480, meter: tuple[int, int] = (4, 4),
                 key: str | None = None) -> mido.MidiFile:
    """A type-1 MIDI file with one piano track on channel 1, with its tempo, time signature and
    (if given, as mido spells it: "D", "Bm") key signature."""
    step_ticks = ticks_per_beat // steps_per_quarter
    events = []
    for start, end, k in roll_notes(roll):
        events.append((start * step_ticks, 1, k))  # at equal ticks, note-offs (0) go before note-ons (1)
        events.append((end * step_ticks, 0, k))
    events.sort()
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
                            mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1], time=0),
                            *([mido.MetaMessage("key_signature", key=key, time=0)] if key else []),
                            mido.Message("program_change", program=program, channel=0, time=0)])
    now = 0
    for tick, is_on, k in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, note=LOWEST + k, velocity=velocity if is_on else 0, channel=0,
                                  time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat, tracks=[track])


def roll_image(roll: np.ndarray, steps_per_bar: int = 16, scale: int = 4, split_at: int | None = None) -> np.ndarray:
    """uint8 (H, W, 3) piano roll: time to the right, high notes up, bar lines, onsets brighter.

    `split_at`: a step drawn with a red line (where a primer ends and the continuation starts).
    """
    r = np.asarray(roll)[:, ::-1].T  # (88, steps), row 0 the highest key
    img = np.full(r.shape + (3,), 24, np.uint8)
    black = np.isin((LOWEST + np.arange(88))[::-1] % 12, (1, 3, 6, 8, 10))
    img[black] = 16
    img[:, ::max(1, steps_per_bar)] = 60
    img[r == 1] = (90, 170, 230)
    img[r == 2] = (200, 235, 255)
    if split_at is not None and 0 <= split_at < r.shape[1]:
        img[:, split_at] = (220, 60, 60)
    return img.repeat(scale, 0).repeat(scale, 1)


def save_png(roll: np.ndarray, path: str | Path, steps_per_bar: int = 16, split_at: int | None = None) -> Path:
    Image.fromarray(roll_image(roll, steps_per_bar, split_at=split_at)).save(path)
    return Path(path)


def fluidsynth_available() -> bool:
    return shutil.which("fluidsynth") is not None and any(Path(s).is_file() for s in SOUNDFONTS)


def render_wav(midi_path: str | Path, wav_path: str | Path, soundfont: str | Path | None = None) -> Path | None:
    """Render with the fluidsynth command; None when fluidsynth or a GM soundfont is missing
    (Debian: apt install fluidsynth fluid-soundfont-gm)."""
    sf = Path(soundfont) if soundfont else next((Path(s) for s in SOUNDFONTS if Path(s).is_file()), None)
    if shutil.which("fluidsynth") is None or sf is None or not sf.is_file():
        return None
    subprocess.run(["fluidsynth", "-ni", "-F", str(wav_path), "-r", "44100", "-g", "0.8", str(sf), str(midi_path)],
                   check=True, capture_output=True, timeout=120)
    return Path(wav_path)
