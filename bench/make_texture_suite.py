"""Rebuild bench/data/textures/: the CC0 development suite of texture exemplars (issue 19, point 1).

Every exemplar is an ambientCG or Poly Haven (formerly Texture Haven) material, both published
as CC0 1.0, taken from a public repository that re-hosts it; SOURCES.md names, per file, the
repository, the commit, the original path, the original asset and its licence. Nothing here runs
at product time.

Steps to reproduce (what was run to build the committed folder):

1. Bring the source repositories here as bare git directories (any clone works; the commits are
   pinned below and checked), e.g.
       git clone --bare https://github.com/umerkay/fly /work/.mirror/umerkay+fly/repo
   (in a session, the search tool's `fetch github:OWNER/NAME` puts each exactly there).
2. python bench/make_texture_suite.py [--mirrors DIR]

What it does to each map: decoded, downscaled with Lanczos to the side given below (never
enlarged), written as `<name>_<Map>.<ext>` in one folder per material: colour, roughness and AO
as JPEG quality 90, normal (OpenGL convention) and displacement as PNG. A colour-only exemplar
whose source is already a JPEG at most MAX_SIDE px is copied byte for byte (re-encoding would
only add loss and bytes). Full PBR sets are kept at 512 px so that the folder stays a few MB.
"""
from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "data" / "textures"
MAX_SIDE = 1024
PBR_SIDE = 512
CATEGORIES = ("stochastic", "structured", "flowing")

# slug -> (repository, commit, licence statement of the asset as published, where it says so)
REPOS = {
    "umerkay/fly": ("68430ee39f74a7be830d7ff722e1c922ac09785f",
                    "ambientCG, CC0 1.0 (https://ambientcg.com/license). The repository (MIT for its code, "
                    "per its README) re-hosts ambientCG's downloads unchanged, file names included."),
    "shaiyon/shaiyonV2": ("dc42cda9320de5c389dbdf3bde2d5a1f39d769d2",
                          "Poly Haven, CC0 1.0 (https://polyhaven.com/license). The repository (no licence file "
                          "of its own) re-hosts Poly Haven's 1k downloads unchanged, file names included."),
    "KILLTUBE/libwebgame_maps": ("ac9e21d404635553f93097202bca30226cd26b0e",
                                 "Texture Haven (now Poly Haven), CC0 1.0 (https://polyhaven.com/license). The "
                                 "repository's LICENSE is the Unlicense and its README says \"Public Domain / CC0\"."),
}

A = "textures/ground"  # umerkay/fly: ambientCG 1K-JPG downloads
PH = "public/textures"  # shaiyon/shaiyonV2: Poly Haven 1k downloads
TH = "textures"  # KILLTUBE/libwebgame_maps: Texture Haven 1k maps

# name -> (category, what it is, repository, original asset, side, {map: source path})
MATERIALS = {
    "grass": ("stochastic", "grass", "umerkay/fly", "ambientCG Grass008", PBR_SIDE, {
        "Color": f"{A}/grass/Grass008_1K-JPG_Color.jpg", "NormalGL": f"{A}/grass/Grass008_1K-JPG_NormalGL.jpg",
        "Roughness": f"{A}/grass/Grass008_1K-JPG_Roughness.jpg",
        "Displacement": f"{A}/grass/Grass008_1K-JPG_Displacement.jpg",
        "AmbientOcclusion": f"{A}/grass/Grass008_1K-JPG_AmbientOcclusion.jpg"}),
    "ground": ("stochastic", "forest ground, dirt and twigs", "umerkay/fly", "ambientCG Ground048", PBR_SIDE, {
        "Color": f"{A}/dirt/Ground048_1K-JPG_Color.jpg", "NormalGL": f"{A}/dirt/Ground048_1K-JPG_NormalGL.jpg",
        "Roughness": f"{A}/dirt/Ground048_1K-JPG_Roughness.jpg",
        "Displacement": f"{A}/dirt/Ground048_1K-JPG_Displacement.jpg",
        "AmbientOcclusion": f"{A}/dirt/Ground048_1K-JPG_AmbientOcclusion.jpg"}),
    "sand": ("stochastic", "sand with ripples", "umerkay/fly", "ambientCG Ground079L", PBR_SIDE, {
        "Color": f"{A}/sand/Ground079L_1K-JPG_Color.jpg", "NormalGL": f"{A}/sand/Ground079L_1K-JPG_NormalGL.jpg",
        "Roughness": f"{A}/sand/Ground079L_1K-JPG_Roughness.jpg",
        "Displacement": f"{A}/sand/Ground079L_1K-JPG_Displacement.jpg",
        "AmbientOcclusion": f"{A}/sand/Ground079L_1K-JPG_AmbientOcclusion.jpg"}),
    "gravel": ("stochastic", "small pebbles and gravel", "KILLTUBE/libwebgame_maps", "Poly Haven floor_pebbles_01",
               MAX_SIDE, {"Color": f"{TH}/texturehaven_floor/floor_pebbles_01_diff_1k.jpg"}),
    "denim": ("structured", "woven fabric (denim twill, with a stitched seam)", "shaiyon/shaiyonV2",
              "Poly Haven denim_fabric", PBR_SIDE, {
                  "Color": f"{PH}/denim_fabric_diff_1k.jpg", "NormalGL": f"{PH}/denim_fabric_nor_gl_1k.png",
                  "Roughness": f"{PH}/denim_fabric_rough_1k.jpg", "Displacement": f"{PH}/denim_fabric_disp_1k.png"}),
    "bricks": ("structured", "red brick wall, running bond", "KILLTUBE/libwebgame_maps", "Poly Haven red_brick_03",
               PBR_SIDE, {  # Texture Haven's `nor` maps are OpenGL (+Y up: checked against the displacement)
                   "Color": f"{TH}/texturehaven_bricks/red_brick_03_diff_1k.jpg",
                   "NormalGL": f"{TH}/texturehaven_bricks/red_brick_03_nor_1k.jpg",
                   "Roughness": f"{TH}/texturehaven_bricks/red_brick_03_rough_1k.jpg",
                   "Displacement": f"{TH}/texturehaven_bricks/red_brick_03_disp_1k.jpg",
                   "AmbientOcclusion": f"{TH}/texturehaven_bricks/red_brick_03_ao_1k.jpg"}),
    "tiles": ("structured", "square stone floor tiles", "KILLTUBE/libwebgame_maps", "Poly Haven floor_tiles_08",
              MAX_SIDE, {"Color": f"{TH}/texturehaven_floor/floor_tiles_08_diff_1k.jpg"}),
    "planks": ("structured", "weathered vertical wooden planks", "KILLTUBE/libwebgame_maps",
               "Poly Haven brown_planks_03", PBR_SIDE, {
                   "Color": f"{TH}/texturehaven_wood/brown_planks_03_diff_1k.jpg",
                   "NormalGL": f"{TH}/texturehaven_wood/brown_planks_03_Nor_1k.jpg",
                   "Roughness": f"{TH}/texturehaven_wood/brown_planks_03_rough_1k.jpg",
                   "Displacement": f"{TH}/texturehaven_wood/brown_planks_03_Disp_1k.jpg",
                   "AmbientOcclusion": f"{TH}/texturehaven_wood/brown_planks_03_AO_1k.jpg"}),
    "cobblestone": ("structured", "cobblestones (discrete elements)", "KILLTUBE/libwebgame_maps",
                    "Poly Haven cobblestone_floor_05", MAX_SIDE,
                    {"Color": f"{TH}/texturehaven_floor/cobblestone_floor_05_diff_1k.jpg"}),
    "roof_tiles": ("structured", "clay roof tiles (no normal map in the source snapshot)", "shaiyon/shaiyonV2",
                   "Poly Haven clay_roof_tiles_02", PBR_SIDE, {
                       "Color": f"{PH}/clay_roof_tiles_02_diff_1k.jpg",
                       "Roughness": f"{PH}/clay_roof_tiles_02_rough_1k.png",
                       "Displacement": f"{PH}/clay_roof_tiles_02_disp_1k.png"}),
    "lava": ("flowing", "cooled lava with glowing flow streaks", "umerkay/fly", "ambientCG Lava002", PBR_SIDE, {
        "Color": f"{A}/lava/Lava002_1K-JPG_Color.jpg", "NormalGL": f"{A}/lava/Lava002_1K-JPG_NormalGL.jpg",
        "Roughness": f"{A}/lava/Lava002_1K-JPG_Roughness.jpg",
        "Displacement": f"{A}/lava/Lava002_1K-JPG_Displacement.jpg"}),
    "rock": ("flowing", "banded sandstone rock face", "umerkay/fly", "ambientCG Rock029", PBR_SIDE, {
        "Color": f"{A}/rock/Rock029_1K-JPG_Color.jpg", "NormalGL": f"{A}/rock/Rock029_1K-JPG_NormalGL.jpg",
        "Roughness": f"{A}/rock/Rock029_1K-JPG_Roughness.jpg",
        "Displacement": f"{A}/rock/Rock029_1K-JPG_Displacement.jpg",
        "AmbientOcclusion": f"{A}/rock/Rock029_1K-JPG_AmbientOcclusion.jpg"}),
    "marble": ("flowing", "marble slabs with faint veins", "KILLTUBE/libwebgame_maps", "Poly Haven marble_01",
               MAX_SIDE, {"Color": f"{TH}/texturehaven_floor/marble_01_diff_1k.jpg"}),
    "bark": ("flowing", "tree bark with moss", "KILLTUBE/libwebgame_maps", "Poly Haven bark_brown_02", MAX_SIDE,
             {"Color": f"{TH}/texturehaven_wood/bark_brown_02_diff_1k.jpg"}),
}

EXT = {"Color": "jpg", "Roughness": "jpg", "AmbientOcclusion": "jpg", "NormalGL": "png", "Displacement": "png"}
MODE = {"Color": "RGB", "NormalGL": "RGB", "Roughness": "L", "AmbientOcclusion": "L", "Displacement": "L"}
FULL_PBR = ("Color", "NormalGL", "Roughness", "Displacement")


def git_show(mirrors: Path, repo: str, commit: str, path: str) -> bytes:
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    out = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"], capture_output=True)
    if out.returncode:
        sys.exit(f"{repo}@{commit[:8]}:{path}: {out.stderr.decode().strip()} (fetch the repository first)")
    return out.stdout


def write_map(data: bytes, kind: str, side: int, dst: Path) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    if kind == "Color" and img.format == "JPEG" and max(img.size) <= side:
        dst.write_bytes(data)
        return img.size
    if img.mode.startswith("I"):  # 16-bit greyscale (Poly Haven's displacement PNGs): keep the top 8 bits
        img = Image.fromarray((np.asarray(img, np.uint32) >> 8).astype(np.uint8))
    img = img.convert(MODE[kind])
    if max(img.size) > side:
        scale = side / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    if EXT[kind] == "jpg":
        img.save(dst, quality=90, subsampling=0 if kind == "Color" else 2)
    else:
        img.save(dst, optimize=True)
    return img.size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"), help="folder of OWNER+NAME/repo git dirs")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (category, what, repo, asset, side, maps) in MATERIALS.items():
        folder = args.out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        commit = REPOS[repo][0]
        for kind, path in maps.items():
            dst = folder / f"{name}_{kind}.{EXT[kind]}"
            w, h = write_map(git_show(args.mirrors, repo, commit, path), kind, side, dst)
            rows.append((f"{name}/{dst.name}", name, category, what, repo, path, asset, w, h))
            print(f"{dst.relative_to(args.out)!s:45} {w}x{h} {dst.stat().st_size / 1024:7.0f} KB", flush=True)
    write_sources(args.out, rows)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    full = sum(all(k in maps for k in FULL_PBR) for *_, maps in MATERIALS.values())
    print(f"{len(MATERIALS)} materials, {full} full PBR sets, {total / 2 ** 20:.1f} MB")
    return 0


def write_sources(out: Path, rows) -> None:
    lines = [
        "# Sources and licences of the texture development suite",
        "",
        "Built by `bench/make_texture_suite.py` (see its docstring for the fetch step) from public",
        "repositories that re-host CC0 materials. Every file here is CC0 1.0 (public domain dedication)",
        "as published by ambientCG or Poly Haven; no other material is in this folder.",
        "",
        "## Source repositories",
        "",
        "| repository | commit | licence |",
        "|---|---|---|",
    ]
    for repo, (commit, licence) in REPOS.items():
        lines.append(f"| https://github.com/{repo} | `{commit}` | {licence} |")
    lines += [
        "",
        "Maps were downscaled with Lanczos (never enlarged); colour, roughness and AO are JPEG",
        "quality 90, normal (OpenGL, +Y up) and displacement PNG. Colour-only exemplars that were",
        f"already JPEG at most {MAX_SIDE} px are the source bytes unchanged. Categories: stochastic,",
        "structured (regular elements), flowing (large-scale structure).",
        "",
        "## Files",
        "",
        "| file | material | category | what it shows | source repository | source path | original asset | size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for file, name, category, what, repo, path, asset, w, h in rows:
        lines.append(f"| {file} | {name} | {category} | {what} | {repo} | `{path}` | {asset} | {w}x{h} |")
    (out / "SOURCES.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
