"""The music kind as the engine serves it: training-data options, ops, live sessions and CLI output.

Kept light (no mido, music21 or PIL at import) so the engine starts fast; the work happens
in engine.music.objective and engine.music.generation, imported on first use. Live sessions (`music.session.*`) run in the
LIVE lane and keep the RNN state between requests; each belongs to the connection that
opened it and ends when that client disconnects.

Note events travel as int32 arrays N×5 with columns EVENT_COLUMNS (ticks from the session
start; `ticks_per_beat` per quarter note).
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import protocol
from engine.ops import MODEL, Context, JobFailed, Op, Param, Priority, provenance

if TYPE_CHECKING:
    from engine.music.config import MusicConfig


EVENT_COLUMNS = ("start", "duration", "pitch", "velocity", "channel")
MAX_PRIMER_BYTES = 1 << 20  # 8192 steps of dense chords fit in ~0.7 MB; parsing 1 MB peaks near 150 MB
MAX_PRIMER_STEPS = 8192
MAX_NOTES = 20_000

DATA_PARAMS = {
    "midi": Param("str", path=True, doc="folder of MIDI files to train on (searched recursively)"),
    "corpus": Param("str", choices=("bach",), doc="a corpus that ships with music21: 'bach' (the chorales)"),
    "jsb": Param("str", path=True, doc="folder of the JSB chorales benchmark split (jsb-chorales-quarter.json, ...)"),
}

# Trainer settings of a plain `atelier train music`: the shipped model's schedule and budget
# (engine/recipes/music.toml; tests/music/test_train_command.py checks they agree).
TRAIN_DEFAULTS = {"minutes": 20.0, "batch_size": 16, "optimizer": "adam", "lr": 3e-3,
                  "schedule": "cosine", "warmup_steps": 50, "grad_clip": 1.0, "checkpoint_every": 200,
                  "log_every": 20, "seed": 0,
                  # A small folder is learnt by heart long before the budget ends (essen: best held-out
                  # NLL at step 3000, 0.966; 1.10 by step 6000 and 1.39 after 20 minutes): keep the model
                  # that scored best on the held-out pieces, and stop once 6 evaluations in a row (3000
                  # steps) found none better. An evaluation costs 0.3-1 s; 500 steps take 30-80 s.
                  "eval_every": 500, "keep_best": "valid_nll", "patience": 6}
DATA_SOURCES = ("midi", "corpus", "jsb")  # one of them: a source given on the command line replaces a config file's

CONTROLS = {
    "temperature": Param("float", 1.0, min=0.05, max=5.0, doc="lower is safer, higher is wilder"),
    "top_p": Param("float", 1.0, min=1e-6, max=1.0, doc="nucleus sampling: keep the likeliest tokens up to this mass"),
    "key": Param("str", doc="scale lock, e.g. 'C', 'F# minor', 'Bb dorian', 'A minor pentatonic'"),
    "low": Param("int", 21, min=21, max=108, doc="lowest MIDI pitch allowed"),
    "high": Param("int", 108, min=21, max=108, doc="highest MIDI pitch allowed"),
    "max_polyphony": Param("int", 0, min=0, max=88, doc="most notes sounding at once; 0 = as many as the "
                           "training music's voices (4 for the shipped chorale model; no limit for older models)"),
    "density": Param("float", 1.0, min=0.05, max=20.0, doc="new notes: >1 more, <1 fewer (the shipped model at "
                     "0.25: about two fifths as many per bar, at 4: about 1.3x; it sounds 4 voices at most)"),
    "free": Param("bool", False, doc="no pull toward the key and register of the music continued (primer, "
                  "priming or the player's phrase)"),
    "no_parallels": Param("bool", None, doc="part-writing rule: a step that moves two voices in parallel fifths or "
                          "octaves is drawn again (up to 16 times); unset: on when the training music is part writing "
                          "that avoids them (the shipped chorale model), off otherwise"),
}


def config_class() -> type:
    from engine.music.config import MusicConfig

    return MusicConfig


def objective(config: MusicConfig, data: dict[str, Any], device):
    from engine.music.objective import MusicObjective

    sources = {k: v for k, v in data.items() if v is not None}
    if len(sources) != 1:
        raise ValueError("train music on exactly one source: midi=FOLDER (--midi), corpus='bach' (--corpus bach) "
                         f"or jsb=FOLDER (--jsb); got {sorted(sources) or 'none'}")
    return MusicObjective(config, device=device, **sources)


def load(config: dict, weights: dict, device):
    from engine.music import generation as music

    return music.load(config, weights, device)


def _model(engine, name: str):
    """(metadata, MusicModel) with the voice limit, part-writing rule and bar repeats of its training music."""
    from engine.music.generation import avoids_parallels, trained_repeats, trained_voices

    metadata, model = engine.model(name, "music")
    model.voices = trained_voices(metadata)
    model.avoids_parallels = avoids_parallels(metadata)
    model.bar_repeats = trained_repeats(metadata)
    return metadata, model


def _bad(op: str, message: str) -> JobFailed:
    return JobFailed(protocol.BAD_PARAMS, f"{op}: {message}")


def _controls(op: str, params: dict, only_given: bool = False):
    """Controls from the op's parameters (only those given, for session.set); bad_params if they clash."""
    from engine.music.sampling import Controls, scale_pitch_classes

    values = {k: params[k] for k in CONTROLS if params.get(k) is not None or not only_given}
    if values.get("key") is not None:
        key = values["key"].strip()
        if key.lower() in ("", "none", "off"):
            values["key"] = None  # lock off
        else:
            try:
                scale_pitch_classes(key)
            except ValueError as e:
                raise _bad(op, str(e)) from None
    if "low" in values and "high" in values and values["low"] > values["high"]:
        raise _bad(op, f"'low' ({values['low']}) must not be above 'high' ({values['high']})")
    if only_given:
        return values
    return Controls(**values)


def _notes(op: str, name: str, array: Any) -> list:
    """Note events from an int array N×5 (start, duration, pitch, velocity, channel)."""
    from engine.music.session import NoteEvent

    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape[1] != 5 or array.dtype.kind not in "iu":
        shape = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise _bad(op, f"'{name}' must be an integer array N×5 of {', '.join(EVENT_COLUMNS)}, got {shape}")
    if len(array) > MAX_NOTES:
        raise _bad(op, f"'{name}' holds {len(array)} notes; send at most {MAX_NOTES} at once")
    a = array.astype(np.int64)
    checks = [(a[:, 0] >= 0, "start must be >= 0"), (a[:, 1] > 0, "duration must be > 0"),
              ((a[:, 2] >= 21) & (a[:, 2] <= 108), "pitch must be 21..108 (the piano keys)"),
              ((a[:, 3] >= 0) & (a[:, 3] <= 127), "velocity must be 0..127"),
              ((a[:, 4] >= 0) & (a[:, 4] <= 15), "channel must be 0..15")]
    for ok, rule in checks:
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise _bad(op, f"'{name}' row {row} {a[row].tolist()}: {rule}")
    return [NoteEvent(*map(int, row)) for row in a]


def _primer(op: str, model, primer: Any):
    if primer is None:
        return None
    if not isinstance(primer, np.ndarray) or primer.dtype != np.uint8 or primer.ndim != 1 or not len(primer):
        raise _bad(op, "'primer' must be the bytes of a MIDI file as a 1-D uint8 array")
    if len(primer) > MAX_PRIMER_BYTES:
        raise _bad(op, f"'primer' is {len(primer)} bytes; send a clip under {MAX_PRIMER_BYTES >> 20} MB")
    try:  # the length is checked from the file's ticks before a roll is built
        return model.read_primer(primer.tobytes(), max_steps=MAX_PRIMER_STEPS)
    except ValueError as e:
        raise _bad(op, str(e)) from None


def _generate(engine, context: Context, **params) -> dict:
    import io

    from engine.music.output import roll_to_midi

    op = "music.generate"
    metadata, model = _model(engine, params["model"])
    controls = _controls(op, params)
    primer = _primer(op, model, params["primer"])
    meter, bpm, key = _style(op, params, primer, controls, metadata.get("data") or {})
    context.progress(0.0, f"playing {params['bars']:g} bars of {meter[0]}/{meter[1]}")
    roll = model.generate(params["bars"], controls, seed=params["seed"], primer=primer, meter=meter,
                          progress=context.progress)
    buffer = io.BytesIO()
    roll_to_midi(roll, model.steps_per_quarter, bpm, meter=meter, key=key).save(file=buffer)
    return {"roll": roll.astype(np.int8), "midi": np.frombuffer(buffer.getvalue(), np.uint8).copy(),
            "primer_steps": primer.steps if primer is not None else 0,
            "steps_per_quarter": model.steps_per_quarter, "steps_per_bar": model.bar_of(primer, meter),
            "bpm": bpm, "meter": f"{meter[0]}/{meter[1]}", "key": key, "provenance": provenance(metadata, op, params)}


def _style(op: str, params: dict, primer, controls, trained_on: dict) -> tuple[tuple[int, int], float, str | None]:
    """(meter, bpm, key signature) of the music made: what the params say, else the primer's
    (its key signature, or the key its notes imply), else the meter and tempo most of the
    training music had (4/4 at 120 BPM for models that did not record them), with no key."""
    from engine.music.keys import estimate_key, parse_meter, signature_of

    try:
        meter = (parse_meter(params["meter"]) if params["meter"] else primer.meter if primer is not None
                 else parse_meter(trained_on.get("meter") or "4/4"))
    except ValueError as e:
        raise _bad(op, str(e)) from None
    bpm = params["bpm"] or (primer.bpm if primer is not None else float(trained_on.get("bpm") or 120.0))
    if controls.key is not None:
        key = signature_of(controls.key)
    else:
        key = (primer.key or estimate_key(primer.roll)) if primer is not None else None
    return meter, min(max(bpm, 20.0), 400.0), key


def _eval(engine, context: Context, **params) -> dict:
    from engine.music.evaluation import frame_nll
    from engine.music.output import roll_image

    op = "music.eval"
    metadata, model = _model(engine, params["model"])
    context.progress(0.05, "reading held-out music")
    try:
        pieces, scored_on = _eval_pieces(metadata, model, params,
                                         lambda f, message: context.progress(0.05 + 0.15 * f, message))
        context.progress(0.2, f"scoring {len(pieces)} pieces ({scored_on['source']})")
        device = next(model.rnn.parameters()).device
        metrics = {"nll": frame_nll(model.rnn, pieces, device)["nll"]}
        if model.baseline is not None:
            context.progress(0.6, "scoring the independent-Bernoulli baseline")
            metrics["baseline_nll"] = frame_nll(model.baseline, pieces, device)["nll"]
    except (ValueError, FileNotFoundError) as e:
        raise _bad(op, str(e)) from None
    metrics["steps"] = int(sum(p.steps for p in pieces))
    context.progress(0.8, "drawing a continuation of the first held-out piece")
    first = pieces[0]
    head = min(first.steps, 4 * model.steps_per_bar)
    primer = replace(first, roll=first.roll[:head])
    roll = model.generate(4, seed=params["seed"], primer=primer)
    return {"metrics": metrics, "unit": "nats per time step (exact frame NLL)", "scored_on": scored_on,
            "sheet": roll_image(roll, model.steps_per_bar, split_at=head),
            "provenance": provenance(metadata, op, params)}


def _eval_pieces(metadata: dict, model, params: dict, progress=None) -> tuple[list, dict]:
    """The held-out pieces to score: the JSB split if asked (or trained on), else the
    held-out files of the model's own training source, split as in training."""
    from engine.music.config import stored_config
    from engine.music.jsb import jsb_dir, load_jsb
    from engine.music.objective import load_pieces

    data = metadata.get("data") or {}
    jsb = params["jsb"] or (data.get("path") if data.get("source") == "jsb" else None)
    if params["midi"] is None and params["corpus"] is None and (jsb or data.get("source") is None):
        jsb = jsb or jsb_dir()
        if jsb is None:
            raise ValueError("say what to score this model on: jsb=FOLDER (--jsb, or set ATELIER_JSB_DIR), "
                             "corpus='bach' (--corpus bach) or midi=FOLDER (--midi)")
    if jsb is not None:
        res = {1: "quarter", 4: "16th"}.get(model.steps_per_quarter)
        if res is None or model.rnn.config.holds:
            raise ValueError("this model cannot be scored on the JSB split: it needs steps_per_quarter 1 or 4 and "
                             "model.holds=false (train it with --jsb); score it on --corpus or --midi instead")
        return load_jsb(jsb, res)[params["split"]], {"source": "jsb", "path": str(jsb), "split": params["split"],
                                                      "resolution": res}
    cfg = stored_config(metadata["config"])
    midi = params["midi"] or (data.get("path") if params["corpus"] is None and data.get("source") == "midi" else None)
    corpus = params["corpus"] or (data.get("corpus") if midi is None else None)
    _, valid, _ = load_pieces(cfg, midi=midi, corpus=corpus, progress=progress)
    if not valid:
        raise ValueError("no held-out pieces: the source has too few files to hold some out")
    return valid, {"source": "midi" if midi else "corpus", "path_or_corpus": midi or corpus,
                   "split": f"held-out {cfg.valid_fraction:.0%} of files (seed {cfg.seed})"}


def _mix(engine, context: Context, name: str, models: list) -> dict:
    """Stores the equal-weight mixture of trained music models (engine/music/mixture.py) as `name`;
    where the members were scored on the JSB split (trained with --jsb), the mixture is scored on
    its valid split as they were."""
    from engine.music.evaluation import frame_nll
    from engine.music.generation import load
    from engine.music.jsb import load_jsb
    from engine.music.mixture import mix_checkpoints
    from engine.store.checkpoints import ModelCorrupt, ModelNotFound, check_name

    op = "music.mix"
    if not all(isinstance(m, str) for m in models):
        raise _bad(op, "'models' must be a list of model names")
    if len(set(models)) != len(models):
        raise _bad(op, "'models' names a model twice; mix each model once")
    if name in models:
        raise _bad(op, f"{name!r} is one of the models mixed; give the mixture a new name")
    try:
        check_name(name)
    except ValueError as e:
        raise _bad(op, str(e)) from None
    members = []
    for i, member in enumerate(models):
        context.progress(0.3 * i / len(models), f"reading {member}")
        try:
            metadata, weights = engine.store.load(member)
        except ModelNotFound as e:
            raise JobFailed(protocol.NOT_FOUND, f"{op}: {e}") from None
        except ModelCorrupt as e:
            raise JobFailed(protocol.MODEL_CORRUPT, f"{op}: {e}") from None
        members.append((member, metadata, weights))
    try:
        weights, metadata = mix_checkpoints(members)
        model = load(metadata["config"], weights)  # the file loads as any model does
    except ValueError as e:
        raise _bad(op, str(e)) from None
    sources = [m.get("data") or {} for _, m, _ in members]
    jsb = sources[0].get("path") if all(d.get("source") == "jsb" for d in sources) else None
    if jsb is not None and Path(jsb).is_dir():
        context.progress(0.4, "scoring the mixture on the JSB valid split, as its members were")
        pieces = load_jsb(jsb, sources[0].get("resolution", "quarter"))["valid"]
        metadata["metrics"]["valid_nll"] = frame_nll(model.rnn, pieces)["nll"]
        baseline = members[0][1].get("metrics", {}).get("valid_baseline_nll")  # the baseline is the first member's
        if model.baseline is not None and baseline is not None:
            metadata["metrics"]["valid_baseline_nll"] = baseline
    context.progress(0.9, f"saving {name}")
    stored = engine.store.save(name, weights, metadata)
    engine.unload(name)  # the next use loads the new file
    return {"model": name, "members": [{k: m[k] for k in ("name", "step", "metrics")} for m in stored["mixture"]],
            "metrics": stored["metrics"], "content_hash": stored["content_hash"]}


# -- live sessions --------------------------------------------------------------------------

class _Live:
    """A MusicSession with a lock: two requests for one session never interleave."""

    def __init__(self, session, model_name: str):
        self.session = session
        self.model = model_name
        self.lock = threading.Lock()


def _live(engine, context: Context, session_id: str) -> _Live:
    live = engine.session(session_id, context.job.owner)
    if not isinstance(live, _Live):
        raise JobFailed(protocol.NOT_FOUND, f"session {session_id!r} is not a music session")
    return live


def _events(events: list) -> np.ndarray:
    rows = [[e.start, e.duration, e.pitch, e.velocity, e.channel] for e in events]
    return np.asarray(rows, np.int32).reshape(-1, 5)


def _session_open(engine, context: Context, **params) -> dict:
    op = "music.session.open"
    _, model = _model(engine, params["model"])
    controls = _controls(op, params)
    priming = _notes(op, "priming", params["priming"]) if params["priming"] is not None else None
    if params["ticks_per_beat"] % model.steps_per_quarter:
        raise _bad(op, f"'ticks_per_beat' {params['ticks_per_beat']} must be a multiple of the model's "
                   f"{model.steps_per_quarter} steps per beat")
    from engine.music.keys import parse_meter

    try:
        meter = parse_meter(params["meter"]) if params["meter"] else None
        session = model.session(seed=params["seed"], controls=controls, priming=priming,
                                ticks_per_beat=params["ticks_per_beat"], channel=params["channel"],
                                velocity=params["velocity"], meter=meter)
    except ValueError as e:
        raise _bad(op, str(e)) from None
    session_id = engine.open_session(_Live(session, params["model"]), context.job.owner)
    return {"session": session_id, "position": session.position, "ticks_per_beat": session.ticks_per_beat,
            "steps_per_quarter": model.steps_per_quarter, "steps_per_bar": session.bar_steps,
            "event_columns": list(EVENT_COLUMNS)}


def _session_next(engine, context: Context, session: str, beats: float) -> dict:
    live = _live(engine, context, session)
    with live.lock:
        start = live.session.position
        try:
            events = live.session.next_beats(beats)
        except ValueError as e:
            raise _bad("music.session.next", str(e)) from None
        return {"events": _events(events), "start": start, "position": live.session.position}


def _session_set(engine, context: Context, session: str, **controls) -> dict:
    op = "music.session.set"
    live = _live(engine, context, session)
    changes = _controls(op, controls, only_given=True)
    if not changes:
        raise _bad(op, f"give at least one control to change: {', '.join(CONTROLS)}")
    with live.lock:
        current = live.session.controls
        low, high = changes.get("low", current.low), changes.get("high", current.high)
        if low > high:
            raise _bad(op, f"'low' ({low}) must not be above 'high' ({high})")
        live.session.set(**changes)
        return {"position": live.session.position, "controls": vars(live.session.controls)}


def _session_feed(engine, context: Context, session: str, notes: np.ndarray) -> dict:
    op = "music.session.feed"
    live = _live(engine, context, session)
    events = _notes(op, "notes", notes)
    with live.lock:
        try:
            live.session.feed(events)
        except ValueError as e:
            raise _bad(op, str(e)) from None
        return {"position": live.session.position, "fed": len(events)}


def _session_close(engine, context: Context, session: str) -> dict:
    _live(engine, context, session)
    engine.close_session(session, context.job.owner)
    return {"closed": session}


_SEED = Param("int", 0, min=0, max=2**31 - 1, doc="same seed, same music")
_SESSION = Param("str", required=True, doc="session id from music.session.open")
_JSB = Param("str", path=True, doc="folder of the JSB split; default: what the model was trained on")
_LIVE = Priority.LIVE

OPS = [
    Op("music.generate", _generate, {
        "model": MODEL, "bars": Param("float", 8.0, min=0.25, max=256, doc="length of the new music in bars"),
        "seed": _SEED, **CONTROLS,
        "bpm": Param("float", min=20, max=400, doc="tempo of the MIDI file (default: the primer's, else 120)"),
        "meter": Param("str", doc="time signature, e.g. '3/4' or '6/8' (default: the primer's, else the one most of "
                       "the model's training music is in)"),
        "primer": Param("array", doc="a MIDI clip to continue: the file's bytes as a uint8 array; the music "
                        "keeps its tempo, meter and key unless told otherwise")},
        doc="new music (or a continuation of a primer) as a piano roll and a MIDI file"),
    Op("music.eval", _eval, {
        "model": MODEL, "jsb": _JSB,
        "corpus": Param("str", choices=("bach",), doc="score on the held-out files of this corpus"),
        "midi": Param("str", path=True, doc="score on the held-out files of this MIDI folder"),
        "split": Param("str", "test", choices=("test", "valid", "train"), doc="JSB split"),
        "seed": _SEED},
        doc="exact frame NLL (nats per step) of the model and its baseline, and a piano-roll picture"),
    Op("music.mix", _mix, {
        "name": Param("str", required=True, doc="name to store the mixture under"),
        "models": Param("list", required=True, doc="two or more trained music models with the same settings "
                        "(other seeds), e.g. ['jsb-a', 'jsb-b']")},
        doc="one model from several: the mean of their next-note probabilities (generate, eval and live "
            "sessions use it as any model)"),
    Op("music.session.open", _session_open, {
        "model": MODEL, "seed": _SEED, **CONTROLS,
        "priming": Param("array", doc="notes to continue: int array N×5 of start, duration, pitch, velocity, "
                         "channel (ticks)"),
        "ticks_per_beat": Param("int", 480, min=1, max=15360, doc="tick resolution of the events"),
        "channel": Param("int", 0, min=0, max=15, doc="MIDI channel of the notes (0-15)"),
        "velocity": Param("int", 80, min=1, max=127, doc="velocity of the notes"),
        "meter": Param("str", doc="time signature of the stream, e.g. '3/4' or '6/8' (default 4/4): the model "
                       "hears where each step falls in its bar")},
        priority=_LIVE, doc="start a live stream of notes; it ends with music.session.close or the connection"),
    Op("music.session.next", _session_next, {
        "session": _SESSION, "beats": Param("float", 4.0, min=0.25, max=256, doc="how many beats ahead")},
        priority=_LIVE, doc="the notes starting in the next beats: int32 N×5 events, sorted by start"),
    Op("music.session.set", _session_set, {"session": _SESSION, **{k: Param(p.type, None, min=p.min, max=p.max,
                                                                            doc=p.doc + " ('' for key: lock off)"
                                                                            if k == "key" else p.doc)
                                                                   for k, p in CONTROLS.items()}},
       priority=_LIVE, doc="change controls from the next beat on"),
    Op("music.session.feed", _session_feed, {
        "session": _SESSION, "notes": Param("array", required=True, doc="the player's notes: int array N×5 of "
                                            "start, duration, pitch, velocity, channel (ticks from their start)")},
        priority=_LIVE, doc="call and response: the next notes answer the phrase fed in"),
    Op("music.session.close", _session_close, {"session": _SESSION}, priority=_LIVE, doc="end a live stream"),
]
CLI_OPS = {"generate": "music.generate", "eval": "music.eval"}


def describe_data(summary: dict) -> str:
    """What training read, as lines for the terminal: pieces used and held out, every skipped file
    with its reason, and what was dropped inside files (`atelier train` prints it)."""
    source = summary.get("source", "?")
    where = summary.get("corpus") if source == "corpus" else summary.get("path")
    lines = [f"read {source} {where}: {summary.get('train_pieces', '?')} pieces to train on, "
             f"{summary.get('valid_pieces', '?')} held out ({summary.get('train_steps', 0):,} steps to train on)"]
    skipped = summary.get("files_skipped") or summary.get("skipped") or []
    if skipped:
        lines.append(f"skipped {len(skipped)} file(s):")
        lines += [f"  {s['file']}: {s['reason']}" for s in skipped]
    dropped = summary.get("dropped") or {}
    if dropped:
        lines.append("dropped inside files: " + ", ".join(f"{n} {what}" for what, n in sorted(dropped.items())))
    if summary.get("voices"):
        lines.append(f"the music has {summary['voices']} voices: generation sounds at most {summary['voices']} "
                     "notes at once unless max_polyphony says otherwise")
    if summary.get("parallels_per_100") is not None:
        from engine.music.generation import avoids_parallels

        rule = ("so generation avoids them (no_parallels) unless told otherwise" if avoids_parallels({"data": summary})
                else "so generation leaves them to the model unless no_parallels is asked for")
        lines.append(f"the music moves voices in parallel fifths/octaves {summary['parallels_per_100']:.2f} times per "
                     f"100 chord changes, {rule}")
    if summary.get("bar_repeats"):
        lines.append(f"the music plays {100 * sum(summary['bar_repeats']):.1f} % of its bars again 1-4 bars later: "
                     "generation repeats bars as often")
    lines += summary.get("notes") or []
    return "\n".join(lines)


def describe_result(op: str, value: dict, written: list[Path]) -> str:
    """A result in words for the terminal (`atelier generate|eval music` without --json)."""
    from engine.music.output import fluidsynth_missing
    from engine.music.piece import LOWEST, roll_notes

    if op == "music.eval":
        m, on = value["metrics"], value["scored_on"]
        where = on.get("path") or on.get("path_or_corpus")
        base = f"; the independent-Bernoulli baseline {m['baseline_nll']:.3f}" if "baseline_nll" in m else ""
        return (f"{m['nll']:.3f} {value['unit']} over {m['steps']:,} steps of {on['source']} "
                f"{where}, {on['split']}{base}")
    roll, head = np.asarray(value["roll"]), int(value.get("primer_steps") or 0)
    notes = roll_notes(roll[head:])
    bars = (len(roll) - head) / int(value["steps_per_bar"])
    lines = [f"{bars:g} bar{'' if bars == 1 else 's'} of {value.get('meter', '4/4')} at {value['bpm']:g} BPM"
             + (f" in {value['key']}" if value.get("key") else "")
             + (f", continuing a {head}-step primer" if head else "")
             + f": {len(notes)} notes" + (f", MIDI pitches {min(k for _, _, k in notes) + LOWEST}-"
                                           f"{max(k for _, _, k in notes) + LOWEST}, at most "
                                           f"{int((roll[head:] > 0).sum(axis=1).max())} at once" if notes else "")]
    if not written:
        lines.append("add --out FILE.mid to keep the MIDI file, its piano roll and a WAV preview")
    elif not any(p.suffix == ".wav" for p in written) and fluidsynth_missing():
        lines.append(f"no WAV preview: {fluidsynth_missing()}")
    return "\n".join(lines)


def write_output(op: str, value: dict, out: Path) -> list[Path]:
    """music.generate: a .mid, a piano-roll .png and (with fluidsynth) a .wav; music.eval: the sheet .png."""
    from engine.music.output import render_wav, save_png
    from engine.train.plots import save_png as save_image

    if "sheet" in value:
        path = out if out.suffix == ".png" else out / "music-eval.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(value["sheet"], path)
        return [path]
    midi = out if out.suffix in (".mid", ".midi") else out / "music.mid"
    midi.parent.mkdir(parents=True, exist_ok=True)
    midi.write_bytes(np.asarray(value["midi"], np.uint8).tobytes())
    split = int(value.get("primer_steps") or 0) or None
    png = save_png(np.asarray(value["roll"]), midi.with_suffix(".png"), int(value["steps_per_bar"]), split_at=split)
    wav = render_wav(midi, midi.with_suffix(".wav"))
    return [midi, png] + ([wav] if wav else [])


def demo(client, model: str, out: Path) -> list[Path]:
    value = client.call("music.generate", {"model": model, "bars": 8, "seed": 7, "temperature": 0.9}, timeout=300)
    return write_output("music.generate", value, out / "music.mid")
