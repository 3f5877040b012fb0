"""`atelier train|generate|eval KIND`: one subcommand per model kind, flags from the ops' parameters."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.kinds import KIND_MODULES, default_model, kind_module
from engine.ops import Param

TRAIN_SHORTCUTS = {"steps": int, "minutes": float, "batch_size": int, "lr": float, "optimizer": str, "seed": int,
                   "checkpoint_every": int}


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
                 kind_common: argparse.ArgumentParser) -> None:
    """train/generate/eval, each with a KIND subcommand; the common flags go before or after the kind."""
    for command, summary in (("train", "train a model on your own material"),
                             ("generate", "make textures, meshes or music with a trained model"),
                             ("eval", "measure a model and write a sheet of pictures")):
        parser = commands.add_parser(command, parents=[common], help=summary, description=summary + ".")
        kinds = parser.add_subparsers(dest="kind", metavar="KIND")
        parser.set_defaults(handler=_no_kind)
        for kind in KIND_MODULES:
            module = kind_module(kind)
            op = None if command == "train" else {o.name: o for o in module.OPS}.get(module.CLI_OPS.get(command))
            if command != "train" and op is None:
                continue
            sub = kinds.add_parser(kind, parents=[kind_common], help=(module.__doc__ or kind).strip().splitlines()[0])
            params = module.DATA_PARAMS if command == "train" else op.params
            if command == "generate":
                params = _with_input_ops(module, params)
                if hasattr(module, "cli_flags"):
                    module.cli_flags(sub)
            # generate and eval use the model that ships for the kind unless told otherwise
            _add_param_flags(sub, params, shipped_model=None if command == "train" else default_model(kind))
            if command == "train":
                _add_train_flags(sub)
                sub.set_defaults(handler=_train, module=module)
            else:
                sub.add_argument("--out", type=Path, help="file or folder to write the result to")
                request = getattr(module, "cli_request", None) if command == "generate" else None
                sub.set_defaults(handler=_run_op, module=module, op=op, flags=list(params), request=request)


def _with_input_ops(module, params: dict[str, Param]) -> dict[str, Param]:
    """The generate op's params, and those of the ops a kind runs on input files (CLI_INPUTS), except the
    params the files fill (CLI_FROM_FILES); the first op to declare a name gives its flag."""
    ops = {o.name: o for o in module.OPS}
    merged = dict(params)
    for name in getattr(module, "CLI_INPUTS", {}).values():
        for key, param in ops[name].params.items():
            if key not in merged and param.type != "array" and key not in getattr(module, "CLI_FROM_FILES", ()):
                merged[key] = param
    return merged


def _add_param_flags(parser: argparse.ArgumentParser, params: dict[str, Param],
                     shipped_model: str | None = None) -> None:
    # Flags default to None: the op fills in its own defaults, and a config file's values
    # are overridden only by flags the user actually gave. The one default of the CLI's own
    # is --model: the kind's shipped model.
    for name, param in params.items():
        flag = "--" + name.replace("_", "-")
        text = param.doc + (f" (default {param.default})" if param.default is not None else "")
        if name == "model" and shipped_model:
            parser.add_argument(flag, dest=name, default=shipped_model,
                                help=f"{param.doc} (default {shipped_model}, which ships with Atelier)")
            continue
        if param.type == "bool" and name.startswith("no_"):  # --no-parallels / --parallels, not --no-no-parallels
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=text)
            parser.add_argument("--" + name[3:].replace("_", "-"), dest=name, action="store_const", const=False,
                                help=f"the opposite of {flag}")
        elif param.type == "bool":
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=text)
        elif param.type == "array":  # e.g. a MIDI clip to continue: the file travels as its bytes
            parser.add_argument(flag, dest=name, type=_file_bytes, metavar="FILE", required=param.required,
                                help=param.doc.split(":")[0] + " (a file)")
        elif param.type in ("int", "float", "str"):
            kind = {"int": int, "float": float, "str": str}[param.type]
            parser.add_argument(flag, dest=name, type=kind, required=param.required, choices=param.choices,
                                help=text)


def _file_bytes(path: str):
    import numpy as np

    try:
        return np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {e.strerror}") from None


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="name to store the model under")
    parser.add_argument("--config", type=Path, help="JSON or TOML file with 'model' and 'train' sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set channels=64 --set train.lr=1e-3 (repeatable)")
    helps = {"minutes": "time budget: the run ends here, its learning-rate schedule spans it (default: the kind's)",
             "steps": "end the run after this many steps, if its time budget has not ended it first"}
    for name, kind in TRAIN_SHORTCUTS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind,
                            help=helps.get(name, f"trainer setting {name}"))
    parser.add_argument("--resume", action="store_true", help="continue from the model's last checkpoint")
    parser.add_argument("--detach", action="store_true",
                        help="with --engine: keep training after this command exits (see `atelier jobs`)")


def _no_kind(args: argparse.Namespace) -> int:
    known = ", ".join(KIND_MODULES)
    if not known:
        raise ValueError(f"`atelier {args.command}`: no model kinds are available in this version yet")
    raise ValueError(f"`atelier {args.command}` needs a model kind: {known}")


def _train(args: argparse.Namespace) -> int:
    from engine.cli.progress import ProgressBar
    from engine.cli.session import open_session, output
    from engine.config import parse_overrides, read_config_file
    from engine.train.config import TrainConfig

    sections = read_config_file(args.config) if args.config else {}
    overrides = parse_overrides(args.overrides, args.module.config_class(), TrainConfig)
    train = {**sections.get("train", {}), **overrides["train"]}
    train.update({k: getattr(args, k) for k in TRAIN_SHORTCUTS if getattr(args, k) is not None})
    data = {k: getattr(args, k) for k in args.module.DATA_PARAMS if getattr(args, k, None) is not None}
    file_data = sections.get("data", {})
    sources = getattr(args.module, "DATA_SOURCES", ())  # a kind's mutually exclusive sources (music: midi, corpus, jsb)
    if set(data) & set(sources):  # a source on the command line replaces the config file's (a recipe's corpus)
        file_data = {k: v for k, v in file_data.items() if k not in sources}
    params = {"kind": args.kind, "name": args.name, "resume": args.resume, "detach": args.detach,
              "model": {**sections.get("model", {}), **overrides["model"]}, "train": train,
              "data": {**file_data, **data}}
    if args.detach and not args.engine:
        raise ValueError("--detach keeps a run going on a running engine: add --engine (the one `atelier serve` "
                         "recorded) or --engine HOST:PORT")
    session = open_session(args)
    bar = None if args.json else ProgressBar(f"train {args.kind} {args.name}")
    try:
        if args.detach:
            request = session.client.submit("train", params)
            job = _first_job_id(request)
            output(args, {"job": job}, f"training detached as job {job}; watch it with "
                   f"`atelier jobs watch {job} --engine {args.engine}`")
            return 0
        value = session.call("train", params, bar)
        if bar:
            bar.close()
            bar = None
        report = _data_report(args.module, session, value["model"])
        warning = session.call("models.info", {"name": value["model"]})["metadata"].get("warning")
    finally:
        if bar:
            bar.close()
        session.close()
    describe = getattr(args.module, "describe_metrics", None)  # a kind's table of its figures (texture)
    figures = describe(value["metrics"]) if describe else ""
    saved = f"saved {value['model']} {_which_step(value)}; " + (
        f"loss curve and samples in {value['run_dir']}\n{figures}" if figures
        else f"metrics {json.dumps(value['metrics'])}; loss curve and samples in {value['run_dir']}")
    output(args, {**value, **({"data": report[0]} if report else {}), **({"warning": warning} if warning else {})},
           (report[1] + "\n" if report else "") + saved + (f"\nwarning: {warning}" if warning else ""))
    return 0


def _which_step(value: dict) -> str:
    if "kept_step" not in value:
        return f"at step {value['step']}"
    ended = (f"training stopped early at step {value['step']}" if value.get("stopped_early")
             else f"training went on to step {value['step']}")
    return (f"from step {value['kept_step']}, the one that scored best on the held-out data ({ended}: the steps after "
            "it fitted the training data more closely and the held-out data less)")


def _data_report(module, session, name: str) -> tuple[dict, str] | None:
    """(summary, text) of what training read, skipped and why, for kinds that describe it (`describe_data`)."""
    describe = getattr(module, "describe_data", None)
    if describe is None:
        return None
    summary = session.call("models.info", {"name": name})["metadata"].get("data") or {}
    return summary, describe(summary)


def _first_job_id(request) -> str:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if request.job_id:
            return request.job_id
        if request.done:
            request.result()
        time.sleep(0.02)
    raise TimeoutError("the engine did not start the training job within 30 s")


def _run_op(args: argparse.Namespace) -> int:
    from engine.cli.progress import ProgressBar
    from engine.cli.session import open_session, output

    op, params = args.op, {}
    if args.request:  # a kind that runs other ops on input files (shape --encode MESH)
        name, params = args.request(args)
        op = {o.name: o for o in args.module.OPS}[name]
    stray = [name for name in args.flags if name not in op.params and getattr(args, name, None) is not None]
    if stray:
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in stray)}: not a setting of {op.name}; "
                         f"see `atelier generate {args.kind} --help`")
    params.update({name: getattr(args, name) for name in op.params if getattr(args, name, None) is not None})
    session = open_session(args)
    bar = None if args.json else ProgressBar(op.name)
    try:
        value = session.call(op.name, params, bar)
    finally:
        if bar:
            bar.close()
        session.close()
    written = args.module.write_output(op.name, value, args.out) if args.out else []
    summary = _without_arrays(value)
    describe = getattr(args.module, "describe_result", None)  # a kind's words for its result, else JSON
    text = describe(op.name, value, written) if describe else json.dumps(summary, default=str)
    output(args, {**summary, "files": [str(p) for p in written]}, "\n".join([text] + [f"wrote {p}" for p in written]))
    return 0


def _without_arrays(value):
    """The result as text can show it: arrays become their dtype and shape."""
    if isinstance(value, dict):
        return {k: _without_arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_arrays(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<{value.dtype} array {'x'.join(map(str, value.shape))}>"
    return value
