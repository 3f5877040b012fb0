"""What generation hands the user: a standard MIDI file, a piano-roll picture, a WAV preview."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mido
import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


AXIS_PX, HEADER_PX = 26, 12  # the pitch axis left of the roll, the bar numbers above it


def roll_image(roll: np.ndarray, steps_per_bar: int = 16, scale: int = 4, split_at: int | None = None) -> np.ndarray:
    """uint8 (H, W, 3) piano roll: time to the right, high notes up, onsets brighter; a pitch axis
    on the left (each octave's C named, C4 = middle C, its row lighter), bar lines numbered along the top.

    `split_at`: a step drawn with a red line (where a primer ends and the continuation starts).
    """
    r = np.asarray(roll)[:, ::-1].T  # (88, steps), row 0 the highest key
    pitches = (LOWEST + np.arange(88))[::-1]
    img = np.full(r.shape + (3,), 24, np.uint8)
    img[np.isin(pitches % 12, (1, 3, 6, 8, 10))] = 16
    img[pitches % 12 == 0] = 34
    bar = max(1, steps_per_bar)
    img[:, ::bar] = 80
    img[r == 1] = (90, 170, 230)
    img[r == 2] = (200, 235, 255)
    if split_at is not None and 0 <= split_at < r.shape[1]:
        img[:, split_at] = (220, 60, 60)
    img = img.repeat(scale, 0).repeat(scale, 1)
    canvas = np.full((img.shape[0] + HEADER_PX, img.shape[1] + AXIS_PX, 3), 8, np.uint8)
    canvas[HEADER_PX:, AXIS_PX:] = img
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for row in np.flatnonzero(pitches % 12 == 0):
        y = HEADER_PX + row * scale + scale // 2
        draw.line([(AXIS_PX - 4, y), (AXIS_PX - 1, y)], fill=(150, 150, 150))
        draw.text((1, y - 6), f"C{pitches[row] // 12 - 1}", fill=(190, 190, 190), font=font)
    every = max(1, -(-24 // (bar * scale)))  # bar numbers at least 24 px apart
    for b in range(0, r.shape[1], bar * every):
        draw.text((AXIS_PX + b * scale + 2, 0), str(b // bar + 1), fill=(190, 190, 190), font=font)
    return np.asarray(picture)


def save_png(roll: np.ndarray, path: str | Path, steps_per_bar: int = 16, split_at: int | None = None) -> Path:
    Image.fromarray(roll_image(roll, steps_per_bar, split_at=split_at)).save(path)
    return Path(path)


def fluidsynth_available() -> bool:
    return fluidsynth_missing() is None


def fluidsynth_missing() -> str | None:
    """Why no WAV preview can be rendered here, or None when it can."""
    if shutil.which("fluidsynth") is None:
        return "the fluidsynth command is not installed (Debian: apt install fluidsynth fluid-soundfont-gm)"
    if not any(Path(s).is_file() for s in SOUNDFONTS):
        return f"no General MIDI soundfont at {' or '.join(SOUNDFONTS)} (Debian: apt install fluid-soundfont-gm)"
    return None


def render_wav(midi_path: str | Path, wav_path: str | Path, soundfont: str | Path | None = None) -> Path | None:
    """Render with the fluidsynth command; None when fluidsynth or a GM soundfont is missing
    (Debian: apt install fluidsynth fluid-soundfont-gm)."""
    sf = Path(soundfont) if soundfont else next((Path(s) for s in SOUNDFONTS if Path(s).is_file()), None)
    if shutil.which("fluidsynth") is None or sf is None or not sf.is_file():
        return None
    subprocess.run(["fluidsynth", "-ni", "-F", str(wav_path), "-r", "44100", "-g", "0.8", str(sf), str(midi_path)],
                   check=True, capture_output=True, timeout=120)
    return Path(wav_path)
