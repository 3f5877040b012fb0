"""UV charts of our own (engine.shape.uv_planes, the default unwrap): every face mapped, islands that do not
overlap (one another, or themselves where a projection would lay a chart over itself), upright, stretch
bounded, one texel density; on the shipped model's samples, on each procedural family and on made-up cases."""
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh

from engine.shape import uv_planes
from engine.shape.generation import load
from engine.shape.meshes import normalise
from engine.shape.meshing import grid_to_mesh
from engine.shape.procedural import FAMILIES, make_shape
from engine.shape.uv import signed_uv_areas, texel_coverage, unwrap, uv_islands
from engine.shape.voxels import voxelise
from engine.store.checkpoints import load_file

SHIPPED = Path(__file__).resolve().parents[2] / "engine" / "weights" / "shape-default.safetensors"


@pytest.fixture(scope="module")
def shipped_samples():
    """Two samples of the shipped shape model at 64³, meshed as the shape ops deliver them."""
    metadata, weights = load_file(SHIPPED)
    model = load(metadata["config"], weights, "cpu")
    return [model.sample(seed, 1, resolution=64, decimate=0.002)[0] for seed in (0, 4)]


def family_mesh(family: str, seed: int = 1):
    mesh = normalise(make_shape(family, seed))
    return grid_to_mesh(voxelise(mesh.vertices, mesh.faces, 48).astype(np.float32), smooth=2, decimate=0.002)


def coverage_counts(face_uvs: np.ndarray, labels: np.ndarray) -> tuple[int, int, int]:
    """(texel centres of a 1024² texture covered, covered by two islands, covered twice by one island)."""
    hits, shared = texel_coverage(face_uvs, labels)
    return int((hits > 0).sum()), int(shared.sum()), int(((hits > 1) & ~shared).sum())


def stretch(vertices: np.ndarray, faces: np.ndarray, face_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face (larger over smaller singular value of the surface-to-UV map, UV area over surface area)."""
    tri, uv = vertices[faces].astype(np.float64), face_uvs.astype(np.float64)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    x = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    normal = np.cross(e1, e2)
    y = np.cross(normal / np.linalg.norm(normal, axis=1, keepdims=True), x)
    p = np.stack([np.stack([np.einsum("ij,ij->i", e1, x), np.zeros(len(e1))], 1),
                  np.stack([np.einsum("ij,ij->i", e2, x), np.einsum("ij,ij->i", e2, y)], 1)], 2)  # F×2×2
    t = np.stack([uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]], 2)
    sv = np.linalg.svd(t @ np.linalg.inv(p), compute_uv=False)
    return sv[:, 0] / sv[:, 1], np.abs(signed_uv_areas(uv)) / (np.linalg.norm(normal, axis=1) / 2)


def check(vertices: np.ndarray, faces: np.ndarray, face_uvs: np.ndarray, coverage: float = 0.3) -> None:
    """Every face mapped inside [0, 1]², not mirrored; islands apart; within an island, no texel twice (but
    for a stray centre on a float32 edge); at least `coverage` of the texture used; stretch at most
    1/cos LEAN; one texel density."""
    assert face_uvs.shape == (len(faces), 3, 2) and face_uvs.dtype == np.float32
    assert np.isfinite(face_uvs).all() and face_uvs.min() >= 0 and face_uvs.max() <= 1
    areas = signed_uv_areas(face_uvs.astype(np.float64))
    assert (areas >= -1e-12).all() and (areas > 0).mean() >= 0.99
    covered, shared, twice = coverage_counts(face_uvs, uv_islands(vertices, faces, face_uvs))
    assert shared == 0, f"two UV islands cover the same {shared} texels"
    assert twice <= 8, f"an island covers {twice} texels twice"
    assert covered > coverage * 1024 ** 2
    ratio, density = stretch(vertices, faces, face_uvs)
    solid = areas > 1e-12  # (a face flat in UV has no stretch to speak of)
    assert ratio[solid].max() <= 1 / uv_planes.LEAN_COS * 1.01
    scale = np.sqrt(density / np.median(density[solid]))
    assert ((scale > 0.8) & (scale < 1.25))[solid].mean() >= 0.99


def test_shipped_samples_are_mapped_without_overlap(shipped_samples):
    for mesh in shipped_samples:
        check(mesh.vertices, mesh.faces, unwrap(mesh.vertices, mesh.faces))


@pytest.mark.parametrize("family", FAMILIES)
def test_procedural_shapes_are_mapped_without_overlap(family):
    mesh = family_mesh(family)
    # Voxelised at 48³, these are terraced: a rock's staircases cut into ~700 charts that fill 0.2 of the atlas.
    check(mesh.vertices, mesh.faces, unwrap(mesh.vertices, mesh.faces), coverage=0.15)


def up_and_across(vertices: np.ndarray, faces: np.ndarray, face_uvs: np.ndarray, up: int = 2, across: int = 0):
    """Per face: the angle (degrees) of world `up` from +V and of world `across` from +U in the texture,
    and how much the face stands (0 flat .. 1 a wall), and its area."""
    tri, uv = vertices[faces].astype(np.float64), face_uvs.astype(np.float64)
    (a, b), (c, d) = (uv[:, 1] - uv[:, 0]).T, (uv[:, 2] - uv[:, 0]).T
    det = a * d - b * c

    def gradient(axis: int) -> np.ndarray:
        r1, r2 = tri[:, 1, axis] - tri[:, 0, axis], tri[:, 2, axis] - tri[:, 0, axis]
        return np.stack([(r1 * d - r2 * b) / det, (a * r2 - c * r1) / det], axis=1)
    g_up, g_across = gradient(up), gradient(across)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(normal, axis=1) / 2
    stands = np.sqrt(1 - (normal[:, up] / (2 * area)) ** 2)
    return (np.degrees(np.abs(np.arctan2(g_up[:, 0], g_up[:, 1]))),
            np.degrees(np.abs(np.arctan2(g_across[:, 1], g_across[:, 0]))), stands, np.where(det > 0, area, 0.0))


def test_charts_stand_upright(shipped_samples):
    """Walls get world up along +V, floors world +X along +U: on the shipped samples and every family."""
    for mesh in list(shipped_samples) + [family_mesh(f) for f in FAMILIES]:
        off_v, off_u, stands, area = up_and_across(mesh.vertices, mesh.faces, unwrap(mesh.vertices, mesh.faces))
        wall, floor = stands > 0.7, stands < 0.3
        assert area[wall & (off_v > 30)].sum() <= 0.01 * area[wall].sum()
        assert area[wall & (off_v > 90)].sum() <= 0.001 * area[wall].sum()  # (a steep face on a floor)
        assert area[floor & (off_u > 30)].sum() <= 0.01 * area[floor].sum()


def test_planar_faces_keep_their_shape_at_one_density():
    """A box: six charts, each its face exactly (up to the atlas's one scale), walls with up along +V."""
    box = trimesh.creation.box(extents=(1.0, 0.5, 0.25))
    vertices, faces = np.asarray(box.vertices), np.asarray(box.faces)
    face_uvs = unwrap(vertices, faces)
    assert len(np.unique(uv_islands(vertices, faces, face_uvs))) == 6
    ratio, density = stretch(vertices, faces, face_uvs)
    assert np.allclose(ratio, 1, atol=1e-4) and np.allclose(density, density[0], rtol=1e-4)
    off_v, off_u, stands, _ = up_and_across(vertices, faces, face_uvs)
    assert np.allclose(off_v[stands > 0.5], 0, atol=1e-3) and np.allclose(off_u[stands < 0.5], 0, atol=1e-3)
    # Shelf-packed boxes fill the atlas well: 3.5 units of surface, a few texels of gap.
    assert signed_uv_areas(face_uvs.astype(np.float64)).sum() > 0.6


def ramp(turns: float = 1.6, steps: int = 160, rise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """An open helical ramp (r 0.5..1) climbing `rise` per radian: seen from above it lies over itself."""
    angle = np.linspace(0, 2 * math.pi * turns, steps)
    inner = np.stack([0.5 * np.cos(angle), 0.5 * np.sin(angle), rise * angle], 1)
    outer = np.stack([np.cos(angle), np.sin(angle), rise * angle], 1)
    vertices = np.concatenate([inner, outer])
    i = np.arange(steps - 1)
    faces = np.concatenate([np.stack([i, i + steps, i + 1], 1), np.stack([i + 1, i + steps, i + steps + 1], 1)])
    return vertices, faces  # counter-clockwise seen from above: normals up


def test_a_chart_that_would_lie_over_itself_is_cut():
    vertices, faces = ramp()
    face_uvs = unwrap(vertices, faces)
    labels = uv_islands(vertices, faces, face_uvs)
    assert len(np.unique(labels)) >= 2  # one direction (up), one connected piece, yet more than one chart
    _, shared, twice = coverage_counts(face_uvs, labels)
    assert shared == 0 and twice <= 8


def test_up_can_be_another_axis():
    """A Y-up chair: with up=(0, 1, 0), walls get world Y along +V."""
    mesh = family_mesh("chair")
    y_up = np.stack([mesh.vertices[:, 0], mesh.vertices[:, 2], -mesh.vertices[:, 1]], 1)
    face_uvs = unwrap(y_up, mesh.faces, up=(0.0, 1.0, 0.0))
    off_v, _, stands, area = up_and_across(y_up, mesh.faces, face_uvs, up=1)
    wall = stands > 0.7
    assert area[wall & (off_v > 30)].sum() <= 0.01 * area[wall].sum()
    check(y_up, mesh.faces, face_uvs, coverage=0.15)


def test_xatlas_stays_available_as_the_baseline():
    mesh = family_mesh("table")
    face_uvs = unwrap(mesh.vertices, mesh.faces, method="xatlas")
    _, shared, _ = coverage_counts(face_uvs, uv_islands(mesh.vertices, mesh.faces, face_uvs))
    assert shared == 0
    with pytest.raises(ValueError, match="UV method"):
        unwrap(mesh.vertices, mesh.faces, method="cubes")
