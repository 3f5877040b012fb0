"""The CC0 development mesh collection in bench/data/meshes/ (issue 20, point 1).

Every file loads through the product's own reader (build_from_folder, the path
`atelier train shape --meshes DIR` takes), or is one of the known skips below with its
reason; the fixed split covers every file exactly once; SOURCES.md names every file.
"""
import json
import re
from pathlib import Path

import pytest
import trimesh

from engine.shape.dataset import build_from_folder
from engine.shape.meshes import list_mesh_files, load_mesh_file

FOLDER = Path(__file__).resolve().parents[2] / "bench" / "data" / "meshes"
CATEGORIES = {"furniture", "props", "nature", "plants"}

# At the product's default 32³ these thin-barred or rope-thin models have no voxel centre
# inside them (bars and ropes far thinner than one voxel of their bounding box), so the
# reader skips them with "voxelises to nothing". They stay in the collection as hard cases
# for a decoder that is not tied to a grid.
KNOWN_SKIPS_32 = {
    "kenney-graveyard__fenceIron.glb": "iron bars thinner than a voxel",
    "quaternius-platformer-2018__Ladder-long.glb": "rungs and rails thinner than a voxel",
    "quaternius-platformer-2018__Rope-Long.glb": "a rope thinner than a voxel",
    "quaternius-platformer-2018__Rope-Short.glb": "a rope thinner than a voxel",
}


def _files():
    return [p.name for p in list_mesh_files(FOLDER)]


def _sources_rows():
    rows = {}
    for line in (FOLDER / "SOURCES.md").read_text().splitlines():
        m = re.match(r"^\| (\S+\.glb) \| (\w+) \| (\w+) \| (\S+) \| `([^`]+)` \|", line)
        if m:
            rows[m.group(1)] = m.groups()[1:]
    return rows


def test_collection_size_and_format():
    files = _files()
    assert len(files) >= 200
    assert all(name.endswith(".glb") for name in files)
    total = sum((FOLDER / n).stat().st_size for n in files)
    assert total <= 20 << 20, f"{total:,} bytes"


def test_every_file_loads_through_the_product_reader(tmp_path):
    files = _files()
    for name in files[::25]:  # the reader proper, on a spread of files (the folder build covers all)
        stored = trimesh.load(FOLDER / name, force="mesh", process=False)
        assert 0 < len(stored.faces) <= 5000, name  # as committed; the reader may close small holes
        assert len(load_mesh_file(FOLDER / name).faces) > 0, name  # it drops duplicate faces, closes holes
    shapes = build_from_folder(FOLDER, resolution=32, up="y", cache_dir=tmp_path)
    skipped = {s.source: s.reason for s in shapes.skipped}
    assert set(shapes.names) | set(skipped) == set(files)
    unknown = {n: r for n, r in skipped.items() if n not in KNOWN_SKIPS_32}
    assert not unknown, f"skipped without a listed reason: {unknown}"
    assert all("voxelises to nothing" in skipped[n] for n in skipped)
    assert len(shapes.names) >= 200


def test_split_covers_every_file_once_and_is_stratified():
    split = json.loads((FOLDER / "split.json").read_text())
    train, held = split["train"], split["held_out"]
    assert len(train) == len(set(train)) and len(held) == len(set(held))
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(_files())
    assert 0.12 <= len(held) / (len(train) + len(held)) <= 0.18
    rows = _sources_rows()
    for cat in CATEGORIES:
        in_cat = [n for n, r in rows.items() if r[0] == cat]
        held_cat = [n for n in in_cat if n in set(held)]
        assert in_cat and held_cat, cat
        assert abs(len(held_cat) - 0.15 * len(in_cat)) <= 1, cat
    for name in held:
        assert rows[name][1] == "held_out"


def test_sources_name_every_file_with_its_source_and_licence():
    text = (FOLDER / "SOURCES.md").read_text()
    rows = _sources_rows()
    assert set(rows) == set(_files())
    assert "https://github.com/beep2bleep/FreeAssetsByKenneyNLandQuaternius" in text
    assert re.search(r"Commit: `[0-9a-f]{40}`", text)
    assert "CC0" in text
    for name, (cat, _split, kit, path) in rows.items():
        assert cat in CATEGORIES, name
        assert name.startswith(kit + "__"), name
        assert path.lower().endswith(".fbx"), name
        assert f"| {kit} |" in text, f"kit {kit} of {name} has no row in the kits table"


@pytest.mark.parametrize("name", sorted(KNOWN_SKIPS_32))
def test_known_skips_are_in_the_collection(name):
    assert (FOLDER / name).is_file()
