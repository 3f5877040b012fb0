"""Rebuild bench/data/meshes/: the CC0 development collection of real meshes (issue 20, point 1).

Every mesh comes from one public repository that re-hosts Kenney and Quaternius kits with
each kit's own licence file (all CC0 1.0); the files taken, the commit and the licence
files are written to SOURCES.md by this script. Nothing here runs at product time.

Steps to reproduce (what was run to build the committed folder):

1. Bring the source repository here as a bare git directory (any clone works; the commit is
   pinned below and checked):
       git clone --bare https://github.com/beep2bleep/FreeAssetsByKenneyNLandQuaternius \
           /work/.mirror/beep2bleep+FreeAssetsByKenneyNLandQuaternius/repo/.git
   (in a session, the search tool's `fetch github:beep2bleep/FreeAssetsByKenneyNLandQuaternius`
   puts it exactly there). The repository's OBJ exports are not in git; the FBX ones are.
2. The Open Asset Import Library's command-line tool converts FBX (ASCII and binary) to GLB,
   baking every node transform into the vertices (`-ptv`), so each model keeps its own scale
   and position. It ships in the PyPI package cmeel-assimp:
       pip install --target /tmp/assimp_pkg cmeel-assimp
   and fast-simplification for trimesh's quadric decimation:
       pip install fast-simplification
3. python bench/make_mesh_collection.py [--mirror GITDIR] [--assimp PATH]

What it does to each model: FBX -> GLB (assimp, Y-up as glTF requires), all geometry merged
into one triangle mesh, materials, UVs and normals dropped, coincident vertices merged, and
decimated to at most MAX_FACES faces when larger. Nothing else: no centring, no rescaling,
no axis change beyond the FBX file's own axis settings (every output file is Y-up: load it
with up="y"). The held-out split is stratified by category and seeded (SEED).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import trimesh

REPO = "beep2bleep/FreeAssetsByKenneyNLandQuaternius"
COMMIT = "dea756baf3b3a4889d8c245e456a4791f961578a"
DEFAULT_MIRROR = "/work/.mirror/beep2bleep+FreeAssetsByKenneyNLandQuaternius/repo/.git"
DEFAULT_ASSIMP = "/tmp/assimp_pkg/cmeel.prefix/bin/assimp"
OUT = Path(__file__).resolve().parent / "data" / "meshes"
MAX_FACES = 5000
HELD_OUT_SHARE = 0.15
SEED = 20
CATEGORIES = ("furniture", "props", "nature", "plants")

Q = "FreeModels by Quaternius[Patreon]"
Q_LICENCE = f"{Q}/License.txt"
# (slug, folder in the repository, its licence file, author, default category, original up axis)
KITS = [
    ("kenney-furniture", "Kenny NL Assets/Furniture Pack (1.0)/Models",
     "Kenny NL Assets/Furniture Pack (1.0)/License.txt", "Kenney", "furniture", "FBX ASCII, Y-up"),
    ("kenney-platformer", "Kenny NL Assets/Platformer Kit (1.0)/Models/FBX format",
     "Kenny NL Assets/Platformer Kit (1.0)/License.txt", "Kenney", "props", "FBX ASCII, Y-up"),
    ("kenney-graveyard", "Kenny NL Assets/Graveyard Kit (0.2)/Models",
     "Kenny NL Assets/Graveyard Kit (0.2)/License.txt", "Kenney", "props", "FBX ASCII, Y-up"),
    ("kenney-space", "Kenny NL Assets/Space Kit (1.0)/Models",
     "Kenny NL Assets/Space Kit (1.0)/License.txt", "Kenney", "nature", "FBX ASCII, Y-up"),
    ("quaternius-dungeon-2018", f"{Q}/Medieval/Modular Dungeon Pack - Jan 2018/FBX",
     Q_LICENCE, "Quaternius", "nature", "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-furniture-2019", f"{Q}/Home and Buildings/Furniture Pack - March 2019/FBX",
     f"{Q}/Home and Buildings/Furniture Pack - March 2019/License.txt", "Quaternius", "furniture",
     "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-furniture-2017", f"{Q}/Home and Buildings/Furniture Pack - Oct 2017/FBX",
     Q_LICENCE, "Quaternius", "furniture", "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-platformer-2018", f"{Q}/Nature/Platformer Pack - Nov 2018/FBX",
     Q_LICENCE, "Quaternius", "props", "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-nature-essentials3", f"{Q}/Nature/.Nature Pack Essentials vol.3 - Dec 2016/FBX",
     Q_LICENCE, "Quaternius", "plants", "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-fantasy-nature", f"{Q}/Nature/.Textured Fantasy Nature - Mar 2017/FBX",
     Q_LICENCE, "Quaternius", "plants", "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-christmas", f"{Q}/Nature/Christmas Pack [Patreon Exclusive]/FBX",
     Q_LICENCE, "Quaternius", "props", "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-holiday", f"{Q}/Miscellaneous/Holiday pack - Nov 2016/FBX",
     Q_LICENCE, "Quaternius", "props", "FBX binary (Blender export), axes from the file's GlobalSettings"),
    ("quaternius-junkfood", f"{Q}/Miscellaneous/Junk Food Pack - Apr 2017/FBX",
     Q_LICENCE, "Quaternius", "props", "FBX binary (Blender export), axes from the file's GlobalSettings"),
]

# Kits of which only some models are taken (the rest are spaceships, walls, floors).
ONLY = {
    "kenney-space": re.compile(r"^(crater|meteor|rocks)", re.IGNORECASE),
    "quaternius-dungeon-2018": re.compile(r"^Rock\d$"),
}
# Not objects: architecture tiles, paper-thin rugs and floors, tiling terrain blocks, clouds, animals.
EXCLUDE = re.compile(
    r"^(wall|floor|door|paneling|rug|block|platform_|cloud|reindeer|elk|seagull|cabin|igloo)",
    re.IGNORECASE)
PLANTS = re.compile(r"(tree|bush|plant|flower|grass|hedge|cactus|fern)", re.IGNORECASE)
NATURE = re.compile(r"^(rocks?\d*|mushrooms?\d*|terrain\d*)$", re.IGNORECASE)
# Small hand-held things in the furniture kits are props, not furniture.
SMALL = re.compile(r"^(bear|books|cardboardbox|computerkeyboard|computermouse|laptop|radio|pillow|kitchenblender|"
                   r"kitchencoffeemachine|speakersmall|vase)", re.IGNORECASE)


def category(default: str, stem: str) -> str:
    if NATURE.match(stem):
        return "nature"
    if PLANTS.search(stem):
        return "plants"
    if SMALL.match(stem):
        return "props"
    return default


def git(mirror: str, *args: str, binary: bool = False):
    out = subprocess.run(["git", "--git-dir", mirror, *args], check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode()


def slug(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-")


def convert(assimp: str, fbx_bytes: bytes, tmp: Path) -> trimesh.Trimesh:
    src, dst = tmp / "in.fbx", tmp / "out.glb"
    src.write_bytes(fbx_bytes)
    dst.unlink(missing_ok=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(Path(assimp).resolve().parent.parent / "lib"))
    subprocess.run([assimp, "export", str(src), str(dst), "-ptv"], check=True, capture_output=True, env=env)
    scene = trimesh.load(dst, force="scene", process=False)
    parts = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not parts:
        raise ValueError("no triangles")
    vertices = np.concatenate([p.vertices for p in parts])
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    mesh = trimesh.Trimesh(vertices, faces, process=True)  # merges coincident vertices, drops degenerate faces
    return mesh


def simplify(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if len(mesh.faces) <= MAX_FACES:
        return mesh
    out = mesh.simplify_quadric_decimation(face_count=MAX_FACES)
    return trimesh.Trimesh(out.vertices, out.faces, process=True)


def make_split(categories: dict[str, str]) -> dict[str, list[str]]:
    rng = np.random.default_rng(SEED)
    train, held = [], []
    for cat in CATEGORIES:
        names = sorted(n for n, c in categories.items() if c == cat)
        k = max(1, round(HELD_OUT_SHARE * len(names))) if names else 0
        order = rng.permutation(len(names))
        held += [names[i] for i in order[:k]]
        train += [names[i] for i in order[k:]]
    return {"seed": SEED, "held_out_share": HELD_OUT_SHARE, "up": "y",
            "train": sorted(train), "held_out": sorted(held)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", default=DEFAULT_MIRROR, help="bare git directory of " + REPO)
    ap.add_argument("--assimp", default=DEFAULT_ASSIMP, help="assimp command-line tool")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    if git(args.mirror, "cat-file", "-t", COMMIT).strip() != "commit":
        sys.exit(f"{args.mirror} lacks commit {COMMIT}")
    listing = git(args.mirror, "ls-tree", "-r", "--name-only", COMMIT).splitlines()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.glb"):
        old.unlink()
    rows, categories, licences = [], {}, {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for kit, folder, licence, author, default_cat, up_note in KITS:
            text = git(args.mirror, "show", f"{COMMIT}:{licence}")
            if "CC0" not in text and "Creative Commons Zero" not in text:
                sys.exit(f"{licence} does not say CC0")
            licences[licence] = next(line.strip() for line in text.splitlines() if "CC0" in line)
            files = sorted(p for p in listing if p.startswith(folder + "/") and p.lower().endswith(".fbx")
                           and "/" not in p[len(folder) + 1:])
            for path in files:
                stem = Path(path).stem
                if EXCLUDE.match(stem) or (kit in ONLY and not ONLY[kit].match(stem)):
                    continue
                name = f"{kit}__{slug(stem)}.glb"
                try:
                    mesh = convert(args.assimp, git(args.mirror, "show", f"{COMMIT}:{path}", binary=True), tmp)
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"skip {path}: {e}", file=sys.stderr)
                    continue
                faces_in = len(mesh.faces)
                mesh = simplify(mesh)
                mesh.export(out / name, file_type="glb")
                cat = category(default_cat, stem)
                categories[name] = cat
                rows.append((name, cat, kit, author, path, licence, faces_in, len(mesh.faces), up_note))
                print(f"{name:60s} {cat:9s} {faces_in:6d} -> {len(mesh.faces):5d}", flush=True)
    split = make_split(categories)
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    pkg = Path(args.assimp).resolve().parents[2]  # <target>/cmeel.prefix/bin/assimp
    assimp_version = next((d.name.removesuffix(".dist-info").split("-")[1] for d in pkg.glob("cmeel_assimp-*.dist-info")), "(unknown)")
    write_sources(out, rows, licences, split, assimp_version)
    counts = {c: sum(1 for v in categories.values() if v == c) for c in CATEGORIES}
    print(f"{len(rows)} meshes {counts}; held out {len(split['held_out'])}")
    return 0


def _version(dist: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed here)"


def write_sources(out: Path, rows, licences: dict[str, str], split, assimp_version: str) -> None:
    held = set(split["held_out"])
    lines = [
        "# Sources and licences of the development mesh collection",
        "",
        "Built by `bench/make_mesh_collection.py` (see its docstring for the fetch step). Every file is",
        "CC0 1.0 (public domain dedication), as its kit's licence file in the source repository says.",
        "",
        "## Source repository",
        "",
        f"- URL: https://github.com/{REPO}",
        f"- Commit: `{COMMIT}`",
        "- The repository re-hosts free kits by Kenney (www.kenney.nl) and Quaternius (quaternius.com),",
        "  each folder with the kit's own licence file. Licence files used:",
        "",
    ]
    for path, line in sorted(licences.items()):
        lines.append(f"  - `{path}`: \"{line}\"")
    lines += [
        "",
        "## Kits",
        "",
        "| kit | folder in the repository | author | licence file | original format and up axis |",
        "|---|---|---|---|---|",
    ]
    for kit, folder, licence, author, _cat, up_note in KITS:
        lines.append(f"| {kit} | `{folder}` | {author} | `{licence}` | {up_note} |")
    lines += [
        "",
        "Every output file is GLB, Y-up (glTF's convention; assimp applies each FBX file's axis",
        "settings), in the kit's own units, which differ between kits: a Kenney bookcase is about",
        "8.5 units tall, a Quaternius one about 340 (Blender exports at centimetre scale). Read the",
        "folder with `up=\"y\"`.",
        "Simplified to at most 5,000 faces where larger (faces column: original -> committed).",
        f"Built with trimesh {trimesh.__version__}, fast-simplification {_version('fast-simplification')},",
        f"and assimp's command-line tool from cmeel-assimp {assimp_version}.",
        "",
        "## Files",
        "",
        "| file | category | split | kit | source path | faces |",
        "|---|---|---|---|---|---|",
    ]
    for name, cat, kit, _author, path, _licence, fin, fout, _up in rows:
        sp = "held_out" if name in held else "train"
        lines.append(f"| {name} | {cat} | {sp} | {kit} | `{path}` | {fin} -> {fout} |")
    (out / "SOURCES.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
