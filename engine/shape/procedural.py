"""Seeded procedural shapes for demos, tests and the default shape model.

Five families — rocks, columns, tables, chairs, vases — each a function of a
`numpy.random.Generator` that returns a watertight `trimesh.Trimesh` (Z up).
Parts are joined with manifold3d booleans so every result is one closed solid.
Parts are kept at least ~2 voxels thick at 32³ after normalisation; thinner
parts would vanish when voxelised.

    make_shape("chair", seed=3)          -> Trimesh
    procedural_meshes(100, seed=0)       -> [(name, Trimesh), ...] cycling the families
"""
from __future__ import annotations

import manifold3d
import numpy as np
import trimesh

FAMILIES = ("rock", "column", "table", "chair", "vase")


def _union(parts: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    return trimesh.boolean.union(parts, engine="manifold")


def _cut(m: trimesh.Trimesh, keep_normal, offset: float) -> trimesh.Trimesh:
    """Keep the part of `m` on the `keep_normal` side of the plane n·x = offset, capped."""
    solid = manifold3d.Manifold(manifold3d.Mesh(
        np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.uint32)))
    out = solid.trim_by_plane(tuple(float(x) for x in keep_normal), float(offset)).to_mesh()
    return trimesh.Trimesh(np.asarray(out.vert_properties)[:, :3], np.asarray(out.tri_verts), process=True)


def _box(size, centre) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=size, transform=trimesh.transformations.translation_matrix(centre))


def _cylinder(radius: float, height: float, centre, sections: int = 24) -> trimesh.Trimesh:
    m = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    m.apply_translation(centre)
    return m


def rock(rng: np.random.Generator) -> trimesh.Trimesh:
    # Convex hull of points on a random ellipsoid, then a few planar cuts for chipped faces.
    n = int(rng.integers(12, 40))
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    radii = rng.uniform(0.5, 1.0, size=3)
    pts = d * radii * rng.uniform(0.8, 1.0, size=(n, 1))
    m = trimesh.convex.convex_hull(pts)
    for _ in range(int(rng.integers(0, 3))):
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        offset = rng.uniform(0.3, 0.6) * float(np.abs(radii @ np.abs(normal)))
        m = _cut(m, -normal, -offset)
    return m


def column(rng: np.random.Generator) -> trimesh.Trimesh:
    h = rng.uniform(2.0, 4.0)
    r = rng.uniform(0.25, 0.45)
    base_h, cap_h = rng.uniform(0.15, 0.35, size=2)
    sides = int(rng.choice([6, 8, 24]))
    parts = [_cylinder(r, h, (0, 0, 0), sections=sides)]
    base_w, cap_w = rng.uniform(1.25, 1.8, size=2) * 2 * r
    if rng.random() < 0.5:
        parts.append(_box((base_w, base_w, base_h), (0, 0, -h / 2)))
    else:
        parts.append(_cylinder(base_w / 2, base_h, (0, 0, -h / 2)))
    parts.append(_box((cap_w, cap_w, cap_h), (0, 0, h / 2)))
    m = _union(parts)
    if rng.random() < 0.4:  # a broken column: cut the top at an angle
        normal = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), 1.0])
        normal /= np.linalg.norm(normal)
        m = _cut(m, -normal, -normal[2] * rng.uniform(0.0, h / 3))
    return m


def _legs(rng, w: float, d: float, h: float, t: float, inset: float) -> list[trimesh.Trimesh]:
    xs, ys = w / 2 - inset - t / 2, d / 2 - inset - t / 2
    return [_box((t, t, h), (sx * xs, sy * ys, h / 2)) for sx in (-1, 1) for sy in (-1, 1)]


def table(rng: np.random.Generator) -> trimesh.Trimesh:
    w, d = rng.uniform(1.2, 2.2), rng.uniform(0.8, 1.4)
    h = rng.uniform(0.7, 1.1)
    top = rng.uniform(0.08, 0.14)
    parts = [_box((w, d, top), (0, 0, h - top / 2))]
    if rng.random() < 0.3:  # pedestal table
        parts.append(_cylinder(rng.uniform(0.08, 0.15), h - top, (0, 0, (h - top) / 2)))
        parts.append(_cylinder(rng.uniform(0.3, 0.45) * min(w, d), 0.08, (0, 0, 0.04)))
    else:
        parts += _legs(rng, w, d, h - top, rng.uniform(0.1, 0.16), rng.uniform(0.0, 0.12))
    return _union(parts)


def chair(rng: np.random.Generator) -> trimesh.Trimesh:
    w = rng.uniform(0.8, 1.1)
    seat_h, seat_t = rng.uniform(0.8, 1.0), rng.uniform(0.1, 0.15)
    back_h, back_t = rng.uniform(0.7, 1.1), rng.uniform(0.1, 0.15)
    leg_t = rng.uniform(0.11, 0.16)
    parts = [_box((w, w, seat_t), (0, 0, seat_h - seat_t / 2))]
    parts += _legs(rng, w, w, seat_h - seat_t, leg_t, 0.0)
    back_y = -w / 2 + back_t / 2
    if rng.random() < 0.5:
        parts.append(_box((w, back_t, back_h), (0, back_y, seat_h + back_h / 2)))
    else:  # two posts and a top rail
        for sx in (-1, 1):
            parts.append(_box((leg_t, back_t, back_h), (sx * (w - leg_t) / 2, back_y, seat_h + back_h / 2)))
        rail = rng.uniform(0.15, 0.3)
        parts.append(_box((w, back_t, rail), (0, back_y, seat_h + back_h - rail / 2)))
    if rng.random() < 0.4:  # armrests
        for sx in (-1, 1):
            parts.append(_box((leg_t, w, leg_t), (sx * (w - leg_t) / 2, 0, seat_h + 0.35)))
            parts.append(_box((leg_t, leg_t, 0.35), (sx * (w - leg_t) / 2, w / 2 - leg_t / 2, seat_h + 0.175)))
    return _union(parts)


def vase(rng: np.random.Generator) -> trimesh.Trimesh:
    # A smooth random radius profile r(z), revolved about Z, with an opening cut into the top.
    h = rng.uniform(1.0, 2.0)
    z = np.linspace(0, h, 24)
    knots = rng.uniform(0.25, 0.6, size=4)
    r = np.interp(z, np.linspace(0, h, 4), knots)
    r += 0.05 * np.sin(z / h * np.pi * rng.uniform(1, 3) + rng.uniform(0, np.pi))
    r = np.clip(r, 0.15, 0.7)
    profile = np.column_stack([np.r_[0, r, 0], np.r_[0, z, h]])
    m = trimesh.creation.revolve(profile, sections=32)
    if not m.is_volume:
        m.fix_normals()
    if rng.random() < 0.7:
        mouth = 0.6 * r[-1]
        depth = rng.uniform(0.2, 0.5) * h
        m = trimesh.boolean.difference([m, _cylinder(mouth, 2 * depth, (0, 0, h))], engine="manifold")
    return m


_MAKERS = {"rock": rock, "column": column, "table": table, "chair": chair, "vase": vase}


def make_shape(family: str, seed: int) -> trimesh.Trimesh:
    """One shape of `family` (see FAMILIES), fully determined by `seed`."""
    if family not in _MAKERS:
        raise ValueError(f"unknown shape family {family!r}; choose one of {', '.join(FAMILIES)}")
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    return _MAKERS[family](rng)


def procedural_meshes(
    count: int, seed: int = 0, families: tuple[str, ...] = FAMILIES
) -> list[tuple[str, trimesh.Trimesh]]:
    """`count` shapes cycling through `families`; item i depends only on (seed, i)."""
    if count < 1:
        raise ValueError(f"procedural shape count must be at least 1, got {count}")
    out = []
    for i in range(count):
        family = families[i % len(families)]
        out.append((f"{family}_{seed}_{i:05d}", make_shape(family, seed * 1_000_003 + i)))
    return out
