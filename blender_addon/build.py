"""Build the installable Blender extension zip:

    python blender_addon/build.py            # -> dist/atelier-<version>.zip

Next to the zip it writes `index.json`, the listing of a static extension repository (what
`blender --command extension server-generate` makes): host the folder over HTTP and artists
add `<url>/index.json` as a remote repository under Preferences > Get Extensions >
Repositories, and get updates from there.

Any Python 3.9+ will do (standard library only). The zip holds the add-on's modules and its
manifest at the top level, plus the engine's stdlib-only client (engine/protocol.py,
engine/client.py, engine/paths.py) vendored as the add-on's own sub-package `_vendor`, so
Blender needs nothing installed: no pip at run time, no torch. Install the zip in Blender with
Edit > Preferences > Get Extensions > Install from Disk, or `blender --command extension install-file`.

The panel's ranges and defaults come from the engine's op declarations through op_params.py,
a generated table that goes into the zip with the add-on. After changing an op's params,
regenerate it with the engine's Python (it imports the kinds' ops modules, which need numpy):

    .venv/bin/python blender_addon/build.py --op-params
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

ADDON = Path(__file__).resolve().parent
REPO = ADDON.parent
VENDORED = ("protocol.py", "client.py", "paths.py")
OP_PARAMS = ADDON / "op_params.py"
# Fixed timestamp: the same sources give the same zip, byte for byte.
STAMP = (2024, 1, 1, 0, 0, 0)


def manifest_version() -> str:
    text = (ADDON / "blender_manifest.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("blender_manifest.toml has no version")
    return match.group(1)


def engine_version() -> str:
    match = re.search(r'__version__\s*=\s*"([^"]+)"', (REPO / "engine" / "__init__.py").read_text())
    if not match:
        raise SystemExit("engine/__init__.py has no __version__")
    return match.group(1)


def vendored_sources() -> dict[str, str]:
    """The engine's client modules, rewritten to import each other relatively."""
    files = {"_vendor/__init__.py": (
        '"""The Atelier engine\'s stdlib-only client, vendored by blender_addon/build.py. Do not edit."""\n\n'
        f'__version__ = "{engine_version()}"\n')}
    for name in VENDORED:
        text = (REPO / "engine" / name).read_text()
        text = re.sub(r"^from engine import ", "from . import ", text, flags=re.M)
        text = re.sub(r"^from engine\.(\w+) import ", r"from .\1 import ", text, flags=re.M)
        if re.search(r"^\s*(import engine|from engine)\b", text, re.M):
            raise SystemExit(f"engine/{name} imports the engine in a way build.py cannot vendor; update build.py")
        if re.search(r"^\s*(import|from)\s+torch\b", text, re.M):
            raise SystemExit(f"engine/{name} imports torch: it cannot go into Blender")
        files[f"_vendor/{name}"] = text
    return files


def op_params() -> dict[str, dict[str, dict]]:
    """op -> param -> its declared min, max, default and choices, for every op of every model kind."""
    sys.path.insert(0, str(REPO))
    from engine.kinds import KIND_MODULES, kind_module  # the kinds' ops modules import no torch

    table: dict[str, dict[str, dict]] = {}
    for kind in KIND_MODULES:
        for op in kind_module(kind).OPS:
            params = {}
            for name, param in op.params.items():
                spec = {key: getattr(param, key) for key in ("min", "max", "default", "choices")
                        if getattr(param, key) is not None}
                if param.type == "float":  # bpy's FloatProperty wants floats, even for a bound written 0
                    spec.update({k: float(v) for k, v in spec.items() if k != "choices"})
                if "choices" in spec:
                    spec["choices"] = list(spec["choices"])
                if spec:
                    params[name] = spec
            table[op.name] = params
    return table


def op_params_source() -> str:
    lines = ['"""The engine\'s op parameters: min, max, default and choices as the ops declare them.',
             "",
             "Generated from engine/<kind>/ops.py by `python blender_addon/build.py --op-params`; do not edit.",
             '"""', "", "OP_PARAMS = {"]
    for op, params in op_params().items():
        if not params:
            lines.append(f"    {op!r}: {{}},")
            continue
        lines.append(f"    {op!r}: {{")
        lines += [f"        {name!r}: {spec!r}," for name, spec in params.items()]
        lines.append("    },")
    return "\n".join(lines + ["}", ""])


def addon_sources() -> dict[str, bytes]:
    files: dict[str, bytes] = {"blender_manifest.toml": (ADDON / "blender_manifest.toml").read_bytes()}
    for path in sorted(ADDON.glob("*.py")):
        if path.name != "build.py":
            files[path.name] = path.read_bytes()
    for name, text in vendored_sources().items():
        files[name] = text.encode()
    return files


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"atelier-{manifest_version()}.zip"
    tmp = path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(addon_sources().items()):
            info = zipfile.ZipInfo(name, STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    tmp.replace(path)
    return path


# The manifest's fields in the order Blender's repository listing gives them (its PkgManifest).
INDEX_FIELDS = ("schema_version", "id", "name", "tagline", "version", "type", "maintainer", "license",
                "blender_version_min", "blender_version_max", "website", "copyright", "permissions", "tags",
                "platforms")


def read_manifest(text: str) -> dict:
    """blender_manifest.toml as a dict: tomllib where there is one (3.11+), else the small subset
    of TOML the manifest uses (strings, lists of strings, tables of strings, comments)."""
    try:
        import tomllib
    except ImportError:
        tomllib = None
    if tomllib is not None:
        return tomllib.loads(text)
    data: dict = {}
    table = data
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[([\w.-]+)\]", line)
        if header:
            table = data.setdefault(header.group(1), {})
            continue
        key, _, value = line.partition("=")
        table[key.strip()] = json.loads(value.strip())  # "str" and ["a", "b"] read as JSON
    return data


def repository_index(archive: Path) -> dict:
    """The static repository listing of one extension zip, as Blender's server-generate writes it."""
    manifest = read_manifest((ADDON / "blender_manifest.toml").read_text())
    entry = {key: manifest[key] for key in INDEX_FIELDS if manifest.get(key) is not None}
    data = archive.read_bytes()
    entry.update(archive_url=f"./{archive.name}", archive_size=len(data),
                 archive_hash=f"sha256:{hashlib.sha256(data).hexdigest()}")
    return {"version": "v1", "blocklist": [], "data": [entry]}


def write_index(archive: Path) -> Path:
    path = archive.parent / "index.json"
    path.write_text(json.dumps(repository_index(archive), indent=2), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Atelier Blender extension zip.")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--op-params", action="store_true", help=f"write {OP_PARAMS.name} from the engine's op "
                        "declarations (needs the engine's Python) instead of building")
    args = parser.parse_args(argv)
    if args.op_params:
        OP_PARAMS.write_text(op_params_source())
        print(OP_PARAMS)
        return 0
    archive = build(args.out)
    write_index(archive)
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
