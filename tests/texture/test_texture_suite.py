"""The texture development suite in bench/data/textures/ (issue 19, point 1) is what SOURCES.md says it is."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SUITE = Path(__file__).resolve().parents[2] / "bench" / "data" / "textures"
FULL_PBR = ("Color", "NormalGL", "Roughness", "Displacement")
NAMING = re.compile(r"^(?P<material>[a-z0-9_]+)_(?P<map>Color|NormalGL|Roughness|Displacement|Metalness|"
                    r"AmbientOcclusion)\.(jpg|png)$")


def table(heading: str) -> list[dict[str, str]]:
    """Rows of the markdown table under `## heading` in SOURCES.md, as dicts by column name."""
    text = (SUITE / "SOURCES.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.fixture(scope="module")
def files() -> list[dict[str, str]]:
    return table("Files")


def test_every_file_is_listed_and_every_listed_file_exists(files):
    on_disk = {p.relative_to(SUITE).as_posix() for p in SUITE.rglob("*") if p.is_file() and p.name != "SOURCES.md"}
    listed = {row["file"] for row in files}
    assert on_disk == listed
    for row in files:
        folder, name = row["file"].split("/")
        match = NAMING.match(name)
        assert match and match["material"] == folder == row["material"], row["file"]


def test_sizes_are_at_most_1024_and_as_listed(files):
    for row in files:
        with Image.open(SUITE / row["file"]) as img:  # reads the header only
            assert max(img.size) <= 1024, row["file"]
            assert f"{img.width}x{img.height}" == row["size"], row["file"]
            assert min(img.size) >= 256, row["file"]  # big enough for the bench's 256-px crops


def test_maps_of_one_material_share_a_size(files):
    sizes: dict[str, set[str]] = {}
    for row in files:
        sizes.setdefault(row["material"], set()).add(row["size"])
    assert all(len(s) == 1 for s in sizes.values()), sizes


def test_at_least_12_materials_4_full_pbr_sets_and_every_category(files):
    maps: dict[str, set[str]] = {}
    categories: dict[str, set[str]] = {}
    for row in files:
        maps.setdefault(row["material"], set()).add(NAMING.match(row["file"].split("/")[1])["map"])
        categories.setdefault(row["category"], set()).add(row["material"])
    assert len(maps) >= 12
    assert all("Color" in m for m in maps.values())
    assert sum(all(k in m for k in FULL_PBR) for m in maps.values()) >= 4
    assert set(categories) == {"stochastic", "structured", "flowing"}
    assert all(len(names) >= 3 for names in categories.values()), categories
    shows = " ".join(row["what it shows"] + " " + row["material"] for row in files).lower()
    for kind in ("grass", "sand", "gravel", "ground", "brick", "tiles", "planks", "fabric", "marble", "bark"):
        assert kind in shows, kind


def test_every_source_is_a_pinned_cc0_repository(files):
    repos = {row["repository"].removeprefix("https://github.com/"): row for row in table("Source repositories")}
    assert all(re.fullmatch(r"`[0-9a-f]{40}`", r["commit"]) and "CC0 1.0" in r["licence"] for r in repos.values())
    assert {row["source repository"] for row in files} <= set(repos)
    assert all(re.match(r"(ambientCG|Poly Haven) \S+$", row["original asset"]) for row in files)


def test_the_bench_quilting_takes_any_exemplar_at_least_the_crop_and_never_crashes():
    """Issue 19: the bench refused exemplars under 512 px and its quilting crashed on a dots photo for 2 of
    4 seeds. Flat-colour dots (exact ties, where float cancellation can make the best overlap error
    slightly negative and leave no candidate), an exemplar narrower than a block, and a grey one."""
    import sys

    sys.path.insert(0, str(SUITE.parents[1]))
    from texture_bench import Quilter

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:200, :200]
    dots = np.full((200, 200, 3), 0.9, np.float32)
    for cy, cx in rng.uniform(0, 200, (60, 2)):
        dots[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = (0.9, 0.5, 0.1)  # flat colours: many exact ties
    for exemplar in (dots, dots[:96, :130], rng.random((40, 300, 1), dtype=np.float32)):
        quilter = Quilter(exemplar)
        for seed in range(4):
            out = quilter.synthesize(160, 128, seed=seed)
            assert out.shape == (160, 128, exemplar.shape[2]) and np.isfinite(out).all()


def test_the_sheets_relief_lights_a_dome_from_the_upper_left():
    """The sheets' second row shows a set's normal map as grey relief: normals in the OpenGL convention
    (+y up), lit from the upper left, so the upper left of a dome is its bright side."""
    import sys

    sys.path.insert(0, str(SUITE.parents[1]))
    from texture_bench import relief

    yy, xx = np.mgrid[-1:1:64j, -1:1:64j]  # rows run down the picture
    dome = np.stack([2 * xx, -2 * yy, np.ones_like(xx)], -1)  # height -(x² + y²): normals lean outwards
    shaded = relief(dome / np.linalg.norm(dome, axis=-1, keepdims=True))
    assert shaded.shape == (64, 64, 3) and shaded.dtype == np.uint8
    assert shaded[:24, :24].mean() > shaded[-24:, -24:].mean() + 100
    assert shaded[:24, -24:].mean() == pytest.approx(shaded[-24:, :24].mean(), abs=2)  # across the light: alike
    flat = relief(np.broadcast_to([0.0, 0.0, 1.0], (8, 8, 3)))
    assert (flat == flat[0, 0]).all() and 100 < flat[0, 0, 0] < 255
