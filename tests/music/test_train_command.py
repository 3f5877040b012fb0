"""`atelier train music` as a user types it, in-process: the defaults are the shipped recipe,
--config combines with --midi, and what was read and skipped is printed at train time."""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.config import build
from engine.music import ops as music_ops
from engine.music.config import MusicConfig
from engine.store.checkpoints import ModelStore
from engine.train.config import TrainConfig

RECIPE = Path(__file__).resolve().parents[2] / "engine" / "recipes" / "music.toml"


@pytest.fixture
def midi_folder(tmp_path, midi_writer, chorale_notes, long_note_midi):
    """Four good files, one that does not parse, and one 37-byte file holding a 5-million-beat note."""
    folder = tmp_path / "my midi"
    folder.mkdir()
    for i in range(4):
        midi_writer(folder / f"tune{i}.mid", [(s, d, p + i) for s, d, p in chorale_notes(8)])
    (folder / "broken.mid").write_bytes(b"MThd garbage")
    (folder / "stuck.mid").write_bytes(long_note_midi)
    return folder


def _train(tmp_path: Path, *args: str) -> list[str]:
    return ["train", "music", "--models-dir", str(tmp_path / "models"), "--device", "cpu", *args]


def test_the_defaults_are_the_recipe():
    recipe = tomllib.loads(RECIPE.read_text())
    assert build(MusicConfig, {}) == build(MusicConfig, recipe["model"])
    defaults = build(TrainConfig, music_ops.TRAIN_DEFAULTS)
    assert defaults == build(TrainConfig, music_ops.TRAIN_DEFAULTS, recipe["train"])
    assert set(recipe["train"]) <= {"steps", "minutes"}, "the recipe adds only the budget to the defaults"
    model = build(MusicConfig, {}).model
    assert (model.arch, model.holds, model.bar_steps) == ("frame", True, 16)
    assert (defaults.schedule, defaults.lr, defaults.warmup_steps) == ("cosine", 3e-3, 50)


def test_plain_train_with_midi_trains_the_recipe_and_reports_skipped_files(tmp_path, midi_folder, capsys):
    code = main(_train(tmp_path, "--midi", str(midi_folder), "--name", "mine", "--steps", "2"))
    out = capsys.readouterr().out
    assert code == 0, out
    metadata, _ = ModelStore(tmp_path / "models", builtin=None).load("mine")
    assert metadata["config"] == build(MusicConfig, {}).to_dict()  # the shipped architecture
    expected = asdict(build(TrainConfig, music_ops.TRAIN_DEFAULTS, {"steps": 2}))
    assert {k: metadata["train"][k] for k in expected} == expected  # and its schedule
    assert "read midi" in out and "4 pieces to train on" not in out  # one of the four is held out
    assert "skipped 2 file(s):" in out
    assert "  broken.mid: cannot parse" in out
    assert "  stuck.mid: a note (pitch 60, starting at beat 0) lasts 5,000,000 beats" in out
    assert out.index("skipped") < out.index("saved mine")
    assert metadata["data"]["voices"] == 4 and "the music has 4 voices" in out  # the voice limit generation uses
    assert metadata["data"]["parallels_per_100"] == 0.0  # and the part-writing rule's default: on
    assert "parallel fifths/octaves 0.00 times per 100 chord changes, so generation avoids them" in out


def test_config_combines_with_midi(tmp_path, midi_folder, capsys):
    config = tmp_path / "tiny.toml"  # like the shipped recipe, with a data source of its own
    config.write_text('[data]\ncorpus = "bach"\n\n[model]\nseq_steps = 16\n\n[model.model]\nd_hidden = 16\n'
                      'd_decoder = 16\nn_layers = 1\n\n[train]\nsteps = 3\nbatch_size = 4\n')
    code = main(_train(tmp_path, "--midi", str(midi_folder), "--config", str(config), "--name", "tiny", "--json"))
    out = capsys.readouterr().out
    assert code == 0, out
    value = json.loads(out)
    assert value["step"] == 3 and value["data"]["source"] == "midi"  # --midi replaced the file's corpus
    assert {s["file"] for s in value["data"]["files_skipped"]} == {"broken.mid", "stuck.mid"}
    metadata, _ = ModelStore(tmp_path / "models", builtin=None).load("tiny")
    assert metadata["config"]["model"]["d_hidden"] == 16 and metadata["config"]["seq_steps"] == 16
    assert metadata["config"]["model"]["arch"] == "frame" and metadata["train"]["lr"] == 3e-3  # the rest: defaults


def test_generation_plays_in_the_meter_and_tempo_the_training_music_was_in(tmp_path, midi_writer, capsys):
    import mido

    folder = tmp_path / "waltzes"
    folder.mkdir()
    for i in range(5):  # 3/4 at 90 BPM: a bass note and two chords a bar
        notes = [(b * 1440 + beat * 480, 480, p + i) for b in range(8) for beat, p in ((0, 48), (1, 64), (2, 67))]
        path = midi_writer(folder / f"waltz{i}.mid", notes)
        midi = mido.MidiFile(path)
        midi.tracks[0][:0] = [mido.MetaMessage("time_signature", numerator=3, denominator=4),
                              mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90))]
        midi.save(path)
    tiny = ["--set", "model.d_hidden=16", "--set", "model.d_decoder=16", "--set", "seq_steps=16"]
    assert main(_train(tmp_path, "--midi", str(folder), "--name", "waltz", "--steps", "2", *tiny)) == 0
    metadata, _ = ModelStore(tmp_path / "models", builtin=None).load("waltz")
    assert (metadata["data"]["meter"], metadata["data"]["bpm"]) == ("3/4", 90.0)
    out = tmp_path / "take.mid"
    assert main(["generate", "music", "--models-dir", str(tmp_path / "models"), "--device", "cpu", "--model", "waltz",
                 "--bars", "2", "--out", str(out)]) == 0
    meta = {m.type: m for m in mido.MidiFile(out).tracks[0] if m.is_meta}
    assert (meta["time_signature"].numerator, meta["time_signature"].denominator) == (3, 4)
    assert round(mido.tempo2bpm(meta["set_tempo"].tempo)) == 90
    # One note at a time in the training music: the generate op plays one voice (issue 21's voice limit).
    from engine.music.midi_files import read_midi

    assert metadata["data"]["voices"] == 1
    assert (read_midi(out, 4).roll > 0).sum(axis=1).max() <= 1
