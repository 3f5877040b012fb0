"""Meshes an artist can use (issue 20, point 3): UVs whose islands do not overlap and keep one texel
density, files that carry them, a face budget, one watertight piece with the dropped parts counted."""
import numpy as np
import pytest
import trimesh

from engine.shape.meshes import normalise
from engine.shape.meshing import export_mesh, grid_to_mesh
from engine.shape.procedural import make_shape
from engine.shape.uv import signed_uv_areas, texel_coverage, uv_islands
from engine.shape.voxels import voxelise


@pytest.fixture(scope="module")
def chair():
    """A procedural chair at 40³, smoothed and simplified, unwrapped: legs, seat and back make many charts."""
    mesh = normalise(make_shape("chair", 3))
    grid = voxelise(mesh.vertices, mesh.faces, 40).astype(np.float32)
    return grid_to_mesh(grid, smooth=2, decimate=0.002, uvs=True)


def islands_of(mesh) -> np.ndarray:
    return uv_islands(mesh.vertices, mesh.faces, mesh.face_uvs)


def test_uvs_cover_every_corner_inside_the_unit_square(chair):
    assert chair.face_uvs.shape == (len(chair.faces), 3, 2) and chair.face_uvs.dtype == np.float32
    assert chair.face_uvs.min() >= 0 and chair.face_uvs.max() <= 1
    tm = trimesh.Trimesh(chair.vertices, chair.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.body_count == 1  # UVs leave the mesh welded


def test_uv_islands_do_not_overlap_and_are_not_mirrored(chair):
    labels = islands_of(chair)
    assert len(np.unique(labels)) > 5  # a chair is cut into charts
    hits, shared = texel_coverage(chair.face_uvs, labels)
    assert not shared.any(), f"two UV islands cover the same {shared.sum()} texels"
    covered = hits > 0
    assert covered.mean() > 0.3  # packed, not a speck in a corner
    # Within an island, a rare sliver may fold over its neighbour; never more than a few texels.
    assert (hits > 1).sum() <= 0.001 * covered.sum()
    areas = signed_uv_areas(chair.face_uvs)
    assert (areas > 0).mean() >= 0.99  # counter-clockwise like the faces seen from outside: not mirrored


def uv_gradient(mesh, axis: int) -> np.ndarray:
    """Per face, the gradient over its UV triangle of the world coordinate `axis` (F×2): the way that axis,
    projected onto the face, points in the texture."""
    tri, uv = mesh.vertices[mesh.faces].astype(np.float64), mesh.face_uvs.astype(np.float64)
    (a, b), (c, d) = (uv[:, 1] - uv[:, 0]).T, (uv[:, 2] - uv[:, 0]).T
    r1, r2 = tri[:, 1, axis] - tri[:, 0, axis], tri[:, 2, axis] - tri[:, 0, axis]
    det = a * d - b * c  # solve [[a, b], [c, d]] g = [r1, r2]; nan where the UV triangle is degenerate
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([(r1 * d - r2 * b) / det, (a * r2 - c * r1) / det], axis=1)


def test_uv_charts_keep_world_up_along_v(chair):
    """A directional texture (bricks, planks) stays upright on every chart: on the walls of each island (faces
    tilted over 45°), world up (+Z) points along +V; on islands lying flat, world +X points along +U."""
    tri = chair.vertices[chair.faces].astype(np.float64)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area, up_z = np.linalg.norm(cross, axis=1) / 2, np.abs(cross[:, 2]) / np.linalg.norm(cross, axis=1)
    up, across = uv_gradient(chair, 2), uv_gradient(chair, 0)
    assert np.isfinite(up).mean() > 0.99
    area = np.where(np.isfinite(up).all(1), area, 0.0)
    off_v = np.degrees(np.abs(np.arctan2(up[:, 0], up[:, 1])))  # 0 where up points along +V
    off_u = np.degrees(np.abs(np.arctan2(across[:, 1], across[:, 0])))
    labels = islands_of(chair)
    walls = flats = 0
    for island in np.unique(labels):
        wall, flat = (labels == island) & (up_z < 0.7), (labels == island) & (up_z > 0.9)
        if area[wall].sum() >= 0.5 * area[labels == island].sum():
            walls += 1
            angle = (area[wall] * off_v[wall]).sum() / area[wall].sum()
            assert angle <= 10, f"island {island}: world up is {angle:.0f}° off +V"
        elif area[flat].sum() >= 0.9 * area[labels == island].sum():
            flats += 1
            angle = (area[flat] * off_u[flat]).sum() / area[flat].sum()
            assert angle <= 10, f"flat island {island}: world +X is {angle:.0f}° off +U"
    assert walls >= 5 and flats >= 1  # legs and back stand, the seat lies flat
    wall = up_z < 0.7
    assert (area[wall] * off_v[wall]).sum() / area[wall].sum() <= 5


def test_uvs_keep_one_texel_density(chair):
    """A texture maps without stretching: each face's UV area over its surface area is about the same."""
    tri = chair.vertices[chair.faces].astype(np.float64)
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
    uv_area = np.abs(signed_uv_areas(chair.face_uvs.astype(np.float64)))
    scale = np.sqrt(uv_area / area) / np.sqrt(uv_area.sum() / area.sum())
    within = (scale > 0.8) & (scale < 1.25)
    assert area[within].sum() / area.sum() >= 0.95


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_files_carry_the_uvs_split_on_seams_only(chair, tmp_path, suffix):
    back = trimesh.load(export_mesh(chair, tmp_path / f"chair{suffix}"), force="mesh", process=False)
    assert len(back.faces) == len(chair.faces)
    uv = np.asarray(back.visual.uv)
    assert uv.shape == (len(back.vertices), 2)
    # The same corner UVs as read back (v up, as Blender's UV maps), the same welded solid once seams merge.
    assert np.allclose(uv[back.faces], chair.face_uvs, atol=1e-5)
    assert len(chair.vertices) < len(back.vertices) < 3 * len(chair.faces)
    welded = trimesh.Trimesh(back.vertices, back.faces)  # merges the seam copies
    assert welded.is_watertight and len(welded.vertices) == len(chair.vertices)


def test_a_face_budget_keeps_one_closed_piece():
    mesh = normalise(make_shape("table", 2))
    grid = voxelise(mesh.vertices, mesh.faces, 48).astype(np.float32)
    full = grid_to_mesh(grid, smooth=2)
    budget = grid_to_mesh(grid, smooth=2, max_faces=500)
    assert len(full.faces) > 2000 and 100 <= len(budget.faces) <= 500
    tm = trimesh.Trimesh(budget.vertices, budget.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.body_count == 1 and tm.volume > 0
    assert abs(tm.volume - trimesh.Trimesh(full.vertices, full.faces).volume) < 0.05 * tm.volume


def test_parts_dropped_by_keep_largest_are_counted():
    grid = np.zeros((24, 24, 24), np.float32)
    grid[4:20, 4:20, 2:14] = 1.0  # the body
    grid[2:4, 2:4, 20:22] = 1.0   # two specks apart from it
    grid[20:22, 20:22, 20:22] = 1.0
    largest = grid_to_mesh(grid)
    assert largest.dropped_parts == 2
    assert trimesh.Trimesh(largest.vertices, largest.faces, process=False).body_count == 1
    every = grid_to_mesh(grid, keep="all")
    assert every.dropped_parts == 0
    assert trimesh.Trimesh(every.vertices, every.faces, process=False).body_count == 3
    vertices, faces = largest  # a mesh still unpacks as the two arrays the shape ops take
    assert vertices is largest.vertices and faces is largest.faces
