"""Mesh reading, cleaning, voxelisation, caching and augmentation."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import trimesh

from engine.shape.dataset import _read_entry, _write_entry, build_from_arrays, build_from_folder, build_procedural
from engine.shape.meshes import MeshError, mesh_from_arrays, normalise
from engine.shape.procedural import FAMILIES, make_shape, procedural_meshes
from engine.shape.voxels import _transform_any, augment, augmentation, transform, voxelise


def _centres(res):
    c = (np.arange(res) + 0.5) / res - 0.5
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)


def test_procedural_shapes_are_seeded_closed_solids():
    for family in FAMILIES:
        a, b = make_shape(family, 7), make_shape(family, 7)
        assert np.array_equal(a.vertices, b.vertices), family
        assert a.is_watertight and a.is_winding_consistent and a.volume > 0, family
    names = [n for n, _ in procedural_meshes(10, seed=1)]
    assert len(set(names)) == 10


def test_voxelise_fills_the_inside():
    sphere = normalise(trimesh.creation.icosphere(subdivisions=3))
    grid = voxelise(sphere.vertices, sphere.faces, 32)
    r = np.linalg.norm(_centres(32), axis=-1)
    assert grid[r < 0.45].all() and not grid[r > 0.52].any()
    assert grid[16, 16, 16]  # interior, not just the surface


def test_voxelise_tolerates_a_hole():
    box = normalise(trimesh.creation.box(extents=(1, 0.6, 0.4)))
    holed = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)  # one triangle missing
    full = voxelise(box.vertices, box.faces, 16)
    assert (voxelise(holed.vertices, holed.faces, 16) == full).mean() > 0.99


def test_broken_files_are_skipped_and_reported(tmp_path):
    trimesh.creation.box().export(tmp_path / "good.stl")
    (tmp_path / "empty.obj").write_text("")
    (tmp_path / "garbage.ply").write_bytes(b"ply\nthis is not a ply file\x00\xff")
    (tmp_path / "nan.obj").write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
    (tmp_path / "notes.txt").write_text("not a mesh")
    data = build_from_folder(tmp_path, resolution=16, cache_dir=tmp_path / ".cache")
    assert data.names == ["good.stl"]
    reasons = {s.source: s.reason for s in data.skipped}
    assert set(reasons) == {"empty.obj", "garbage.ply", "nan.obj", "flat.obj"}
    assert "NaN" in reasons["nan.obj"] and "flat" in reasons["flat.obj"]


def test_array_input_errors_say_what_is_wrong():
    with pytest.raises(MeshError, match="N×3"):
        mesh_from_arrays(np.zeros((4, 2)), np.zeros((1, 3), int))
    with pytest.raises(MeshError, match="outside"):
        mesh_from_arrays(np.zeros((3, 3)), np.array([[0, 1, 5]]))
    box = trimesh.creation.box()
    data = build_from_arrays([(box.vertices, box.faces), (np.zeros((0, 3)), np.zeros((0, 3), int))], 16)
    assert len(data) == 1 and "empty" in data.skipped[0].reason


def test_voxel_cache_is_reused_and_refreshed(tmp_path):
    src, cache = tmp_path / "meshes", tmp_path / "cache"
    src.mkdir()
    trimesh.creation.box(extents=(1, 1, 1)).export(src / "a.stl")
    trimesh.creation.icosphere().export(src / "b.obj")
    first = build_from_folder(src, 16, cache_dir=cache)
    assert (first.cache_hits, first.cache_misses) == (0, 2)
    again = build_from_folder(src, 16, cache_dir=cache)
    assert (again.cache_hits, again.cache_misses) == (2, 0)
    assert np.array_equal(again.grids, first.grids)
    trimesh.creation.box(extents=(1, 0.3, 0.3)).export(src / "a.stl")  # edit a source
    edited = build_from_folder(src, 16, cache_dir=cache)
    assert (edited.cache_hits, edited.cache_misses) == (1, 1)
    a = edited.names.index("a.stl")
    assert edited.grids[a].sum() < first.grids[a].sum()


def test_two_trainings_can_fill_the_same_voxel_cache_at_once(tmp_path):
    # Two `atelier train shape` runs on one folder once crashed: both wrote an entry through the same
    # temp name, and the second rename found it gone.
    grid = np.ones((16, 16, 16), bool)
    entry = tmp_path / "entry.npz"

    def write(_):
        for _ in range(20):
            _write_entry(entry, "hash", 16, grid, None, "")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    assert _read_entry(entry, "hash", 0)[0].all()
    assert [p.name for p in tmp_path.iterdir()] == ["entry.npz"]


def test_procedural_set_is_cached(tmp_path):
    first = build_procedural(5, seed=2, resolution=16, cache_dir=tmp_path)
    again = build_procedural(5, seed=2, resolution=16, cache_dir=tmp_path)
    assert (first.cache_misses, again.cache_hits) == (1, 1)
    assert np.array_equal(first.grids, again.grids) and first.names == again.names


def test_augmentation_is_pure_in_the_key_and_exact_for_quarter_turns():
    data = build_procedural(5, resolution=16, cache=False)
    x = torch.from_numpy(data.grids).float()[:, None]
    keys = torch.tensor([3, 11, 12345, 7, 2**40])
    assert torch.equal(augment(x, keys), augment(x, keys))
    turned = augment(x, keys, scale=0.0, mirror=False)
    for i in range(5):
        assert any(torch.equal(torch.rot90(x[i, 0], k, (0, 1)), turned[i, 0]) for k in range(4))
    free = augment(x, keys, rotate="free")
    assert free.shape == x.shape and set(free.unique().tolist()) <= {0.0, 1.0}


def test_axis_aligned_augmentation_picks_the_voxels_grid_sample_picks():
    """Quarter turns, mirrors and scales take an index lookup per axis; it must pick the same voxels as
    resampling through grid_sample (the path any angle takes), shrinking to fit included."""
    x = (torch.rand(6, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    for options in ({"scale": 0.0}, {"scale": 0.3}, {"rotate": "none", "mirror": False, "scale": 0.1}):
        mats = augmentation(x, torch.arange(40, 46), **options)
        assert torch.equal(transform(x, mats), _transform_any(x, mats))


def test_a_folder_of_our_own_exports_trains_upright_by_default(tmp_path):
    """The default up axis is each file's format's: a tall post exported as GLB and OBJ (Y up, as
    Atelier writes them) and as PLY (Z up) reads as standing along Z from all three."""
    from engine.shape.meshing import Mesh, export_mesh

    post = trimesh.creation.box(extents=(0.3, 0.3, 1.0))
    for suffix in (".glb", ".obj", ".ply"):
        export_mesh(Mesh(post.vertices.astype(np.float32), post.faces.astype(np.int64)), tmp_path / f"post{suffix}")
    shapes = build_from_folder(tmp_path, resolution=16, cache_dir=tmp_path / "cache")
    assert len(shapes) == 3
    for grid in shapes.grids:
        extent = [int(np.any(grid, axis=tuple(a for a in range(3) if a != axis)).sum()) for axis in range(3)]
        assert extent[2] > 2 * max(extent[0], extent[1]), extent
