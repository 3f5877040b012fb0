"""`atelier`: the engine's headless command line.

Every command runs in this process, or on a running engine with --engine HOST:PORT (--engine
alone: the one `atelier serve` recorded); both go through the same ops, so they behave the same.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine import __version__, paths
from engine.cli.session import RUNNING, open_session, output
from engine.client import EngineError

EPILOG = "Each command has its own --help. Docs: README.md and docs/PROTOCOL.md."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EngineError as e:
        return _fail(args, e.code, e.message)
    except (ValueError, FileNotFoundError, ConnectionError, OSError) as e:
        return _fail(args, "error", str(e))


def common_flags(inner: bool = False) -> argparse.ArgumentParser:
    """The flags every command takes. `inner` is the copy for a command's KIND parser: its flags
    default to unset, so `atelier train --models-dir X shape` keeps X (a default there would overwrite it)."""
    def default(value):
        return argparse.SUPPRESS if inner else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=default(False),
                        help="print machine-readable JSON instead of text")
    common.add_argument("--engine", nargs="?", const=RUNNING, default=default(None), metavar="HOST:PORT",
                        help="use a running engine instead of this process; alone: the one `atelier serve` "
                        f"recorded in {paths.engine_address_path()}")
    common.add_argument("--token-file", type=Path, default=default(None),
                        help=f"engine token (default {paths.token_path()})")
    common.add_argument("--models-dir", type=Path, default=default(None),
                        help=f"where models live (default $ATELIER_MODELS_DIR or {paths.models_dir()})")
    common.add_argument("--device", default=default("auto"), choices=("auto", "cpu", "cuda", "mps"),
                        help="compute device for in-process work; auto picks cuda, then mps, then cpu")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier: a local generative engine for artists.",
                                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    common = common_flags()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the engine for Blender, the MIDI bridge and "
                                "other clients", description="Run the engine until Ctrl-C or SIGTERM. It listens on "
                                "loopback only unless --host is given.")
    serve.add_argument("--host", default=paths.DEFAULT_HOST, help="address to listen on (default 127.0.0.1; "
                       "anything else exposes the engine to your network and needs --tls-cert and --tls-key, "
                       "or --insecure)")
    serve.add_argument("--port", type=int, default=paths.DEFAULT_PORT, help="TCP port; 0 picks a free one")
    serve.add_argument("--allow-path", dest="allow_paths", type=Path, action="append", default=[], metavar="DIR",
                       help="a folder whose files clients may name (images, meshes, MIDI to train on); repeatable. "
                       "Without it clients may name files only in the models folder")
    serve.add_argument("--max-connections", type=int, default=1024, metavar="N", help="clients at once (default 1024); "
                       "more are refused with too_many_connections")
    serve.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve TLS with this certificate (PEM); "
                       "clients find it in engine.json or are given it")
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without TLS "
                       "(the token then travels in clear text)")
    serve.set_defaults(handler=_serve)

    models = commands.add_parser("models", parents=[common], help="list, inspect, load, unload, delete or mix models",
                                 description="Manage stored models. Without an action, list them. `mix NAME MODEL "
                                 "MODEL...` stores one music model made of several trained with the same settings "
                                 "(other seeds): it plays and scores the mean of their next-note probabilities.")
    models.add_argument("action", nargs="?", default="list",
                        choices=("list", "info", "load", "unload", "delete", "mix"))
    models.add_argument("name", nargs="?", help="model name (unload without a name unloads all; mix: the new model)")
    models.add_argument("members", nargs="*", metavar="MODEL", help="mix: the models to mix (two or more)")
    models.set_defaults(handler=_models)

    jobs = commands.add_parser("jobs", parents=[common], help="list, watch or cancel a running engine's jobs",
                               description="Jobs of a running engine (needs --engine): detached training "
                               "keeps running after its client leaves.")
    jobs.add_argument("action", nargs="?", default="list", choices=("list", "watch", "cancel"))
    jobs.add_argument("job", nargs="?", help="job id (from `atelier jobs`)")
    jobs.set_defaults(handler=_jobs)

    from engine.cli import model_commands

    model_commands.add_commands(commands, common, common_flags(inner=True))

    demo = commands.add_parser("demo", parents=[common], help="start an engine and make a texture, a mesh and "
                               "a MIDI file in ./out", description="Start the engine headless and generate one "
                               "result of every model kind that ships with Atelier into --out.")
    demo.add_argument("--out", type=Path, default=Path("out"), help="output folder (default ./out)")
    demo.set_defaults(handler=_demo)
    return parser


def _fail(args: argparse.Namespace, code: str, message: str) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": code, "message": message}))
    else:
        print(f"atelier: {message}", file=sys.stderr)
    return 1


def _serve(args: argparse.Namespace) -> int:
    from engine.cli import serve

    exposure = serve.Exposure(args.host, args.allow_paths, args.max_connections, args.tls_cert, args.tls_key,
                              args.insecure)
    return serve.run(args.port, args.device, args.models_dir or paths.models_dir(), args.token_file, args.json,
                     exposure)


def _models(args: argparse.Namespace) -> int:
    if args.action in ("info", "load", "delete", "mix") and not args.name:
        raise ValueError(f"`atelier models {args.action}` needs a model name; `atelier models` lists them")
    if (args.action == "mix") != bool(args.members):
        raise ValueError("`atelier models mix NAME MODEL MODEL...` names the new model, then the models to mix; "
                         "the other actions take one name")
    session = open_session(args)
    try:
        if args.action == "mix":
            value = session.call("music.mix", {"name": args.name, "models": args.members})
            output(args, value, _mixed(value))
        elif args.action == "list":
            value = session.call("models.list", {})
            lines = [f"{m['name']:<28} {m.get('kind') or '?':<8} step {m.get('step')}"
                     f"{'  (ships with Atelier)' if m.get('builtin') else ''}"
                     f"{'  DAMAGED: ' + m['error'] if m.get('error') else ''}" for m in value["models"]]
            output(args, value, "\n".join(lines) or "no models yet; train one with `atelier train KIND`")
        elif args.action == "info":
            value = session.call("models.info", {"name": args.name})
            output(args, value, json.dumps(value["metadata"], indent=2))
        else:
            value = session.call(f"models.{args.action}", {"name": args.name})
            output(args, value, f"{args.action}: {value}")
    finally:
        session.close()
    return 0


def _mixed(value: dict) -> str:
    members = ", ".join(f"{m['name']} (step {m['step']}" + (f", held-out NLL {m['metrics']['valid_nll']:.3f}"
                        if "valid_nll" in m["metrics"] else "") + ")" for m in value["members"])
    nll = value["metrics"].get("valid_nll")
    return (f"saved {value['model']}: the mixture of {members}" + (f"; its held-out NLL {nll:.3f}" if nll else "")
            + f". Generate, stream or eval it as any music model: atelier generate music --model {value['model']}")


def _jobs(args: argparse.Namespace) -> int:
    if not args.engine:
        raise ValueError("`atelier jobs` talks to a running engine: add --engine (the one `atelier serve` "
                         "recorded) or --engine HOST:PORT")
    if args.action != "list" and not args.job:
        raise ValueError(f"`atelier jobs {args.action}` needs a job id; `atelier jobs --engine ...` lists them")
    from engine.cli.progress import ProgressBar

    session = open_session(args)
    try:
        if args.action == "list":
            value = session.call("jobs.list", {})
            lines = [f"{j['job']}  {j['op']:<18} {j['state']:<9} {j['fraction']:6.1%}  {j['message']}"
                     for j in value["jobs"]]
            output(args, value, "\n".join(lines) or "no jobs")
        else:
            bar = None if args.json or args.action == "cancel" else ProgressBar(f"job {args.job}")
            try:
                value = session.call(f"jobs.{args.action}", {"job": args.job}, bar)
            finally:
                if bar:
                    bar.close()
            output(args, value, json.dumps(value, default=str, indent=2))
    finally:
        session.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from engine.cli import demo

    return demo.run(args.out, args.device, args.json)


if __name__ == "__main__":
    sys.exit(main())
