"""UV unwrapping of generated meshes, every chart upright, packed without overlap at one texel density.

Two ways to cut the charts (METHODS). The default, "planes" (engine.shape.uv_planes), is our own: faces
grouped by the way they face, each chart projected orthographically onto its own plane (a planar chart keeps
its shape exactly; no face is stretched more than √2 one way), cut where the projection would lay a chart
over itself, and shelf-packed; about 30× faster than xatlas on the shape model's meshes. "xatlas" is the
baseline: xatlas cuts a mesh into charts along seams and flattens each chart with little stretch
(least-squares conformal maps); each chart is then turned in the UV plane (a rotation, never a mirror)
and packed by xatlas without turning it again.

Either way the mesh's up axis (+Z here; +Y in the GLB and OBJ files we write) runs along +V on every chart
that stands: brick courses stay level and plank grain runs up a chair leg whatever chart they land on. A
chart that lies nearly flat (a table top) has no up on its faces; world +X runs along +U on it. The charts
are packed into [0, 1]² without overlap, every chart at the same texel density, so a texture maps at one
scale and one way up everywhere. The mesh itself stays welded (one vertex per position, so it stays
watertight); its UVs travel per face corner, an M×3×2 array. Files need one UV per vertex: `split_seams`
gives seam vertices one copy per chart when a mesh is written.
"""
from __future__ import annotations

import numpy as np
import xatlas
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.shape import uv_planes

# Charts are packed with this many texels of a texture this size between them (4 texels of a 1024²
# texture), so that bilinear filtering and the first mip levels of an Atelier texture (512-1024 px) do
# not bleed. (xatlas packs on a grid of this side; on 1024 with 4 it gives the same layout, twice as slowly.)
ATLAS_SIZE = 512
PADDING = 2
# The first xatlas pass only cuts and flattens; its packing is thrown away, so it packs coarsely (cheaper).
# The stretch its coarse packing adds to small charts is undone in `chart_transforms`.
DRAFT_SIZE = 64
# A chart whose faces rise less than this on average (area-weighted length of world up projected onto the
# face: 0 flat, 1 a wall) has no dependable up; it is turned by world +X instead.
FLAT_CHART = 0.25
# Where a chart's surface turns so far that up points more than this away from +V on part of it, that part
# becomes a chart of its own (`split_turns`); π turns the splitting off.
TURN_SPLIT = np.radians(60)
# How charts are cut (see above); DEFAULT_METHOD is what `unwrap` uses unless told.
METHODS = ("planes", "xatlas")
DEFAULT_METHOD = "planes"


def signed_uv_areas(face_uvs: np.ndarray) -> np.ndarray:
    """Per triangle, its UV area, negative where the triangle is mirrored (clockwise) in UV space."""
    e1, e2 = face_uvs[:, 1] - face_uvs[:, 0], face_uvs[:, 2] - face_uvs[:, 0]
    return (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) / 2


def uv_jacobians(corners: np.ndarray, face_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face (F×3×3 corner positions, F×3×2 corner UVs): the 3D step per unit of u and per unit of v
    (F×3 each), and whether the UV triangle is not degenerate. A world direction d, projected onto a face,
    points along (d·per_u, d·per_v) in its chart."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    t1, t2 = face_uvs[:, 1] - face_uvs[:, 0], face_uvs[:, 2] - face_uvs[:, 0]
    det = t1[:, 0] * t2[:, 1] - t1[:, 1] * t2[:, 0]
    ok = np.abs(det) > 1e-12 * np.maximum(np.abs(t1).max(1) * np.abs(t2).max(1), 1e-300)
    det = np.where(ok, det, 1.0)[:, None]
    # [e1 e2] = J [t1 t2], so J = [e1 e2] [t1 t2]⁻¹.
    return (e1 * t2[:, 1:] - e2 * t1[:, 1:]) / det, (e2 * t1[:, :1] - e1 * t2[:, :1]) / det, ok


def _per_chart(chart: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Sums of `values` (F or F×K) over each chart."""
    if values.ndim == 1:
        return np.bincount(chart, values, count)
    return np.stack([np.bincount(chart, values[:, k], count) for k in range(values.shape[1])], axis=1)


def chart_transforms(corners: np.ndarray, face_uvs: np.ndarray, chart: np.ndarray, count: int,
                     up: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Per chart, the 2×2 linear map (count×2×2) that makes its UVs upright: unmirrored, stretched to about
    one unit of UV per unit of surface along u and along v (which undoes a packer's per-axis rounding and puts
    every chart at the same density), and turned so that `up` projected onto its faces points along +V, or,
    for a chart lying flat, `across` along +U. A rotation after a positive scaling: never a mirror but for
    the flip that unmirrors a clockwise chart."""
    corners, uv = corners.astype(np.float64), face_uvs.astype(np.float64)
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) / 2
    flip = np.where(_per_chart(chart, signed_uv_areas(uv), count) < 0, -1.0, 1.0)
    per_u, per_v, ok = uv_jacobians(corners, uv)
    weight = area * ok
    total = np.maximum(_per_chart(chart, weight, count), 1e-300)
    # Mean 3D length of a unit step along u, and along v (a flip of u does not change them).
    su = _per_chart(chart, weight * np.linalg.norm(per_u, axis=1), count) / total
    sv = _per_chart(chart, weight * np.linalg.norm(per_v, axis=1), count) / total
    su, sv = np.where(su > 0, su, 1.0), np.where(sv > 0, sv, 1.0)
    # In the scaled, unmirrored chart a unit step along u covers per_u / su (and u is negated where flipped).
    def direction(d: np.ndarray) -> np.ndarray:
        g = np.stack([(per_u @ d) * flip[chart] / su[chart], (per_v @ d) / sv[chart]], axis=1)
        return _per_chart(chart, weight[:, None] * g, count)
    rising, level = direction(up), direction(across)
    upright = np.linalg.norm(rising, axis=1) / total >= FLAT_CHART
    ref = np.where(upright[:, None], rising, level)
    turn = np.where(upright, np.pi / 2, 0.0) - np.arctan2(ref[:, 1], ref[:, 0])
    cos, sin = np.cos(turn), np.sin(turn)
    rotation = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)
    scale = np.zeros((count, 2, 2))
    scale[:, 0, 0], scale[:, 1, 1] = flip * su, sv
    return rotation @ scale


def split_turns(corners: np.ndarray, face_uvs: np.ndarray, chart: np.ndarray, corner_ids: np.ndarray,
                up: np.ndarray) -> np.ndarray:
    """New chart labels (per face) for upright charts (`face_uvs` already turned) whose surface turns under
    them: where a chart runs over a rim (the front of a chair back, over its top, down its back), world up
    points down +V on the far side. Faces whose up points more than TURN_SPLIT away from +V are cut off by the
    quarter it points to (left, down, right), each connected piece becoming a chart of its own; pieces too
    small to matter stay where they are."""
    per_u, per_v, ok = uv_jacobians(corners.astype(np.float64), face_uvs)
    g = np.stack([per_u @ up, per_v @ up], axis=1)
    rise = np.linalg.norm(g, axis=1) * ok
    off = np.arctan2(-g[:, 0], g[:, 1])  # angle of up from +V, counter-clockwise
    quarter = np.where((rise >= 0.3) & (np.abs(off) > TURN_SPLIT), np.round(off / (np.pi / 2)).astype(np.int64) % 4, 0)
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) * rise
    chart_area = np.bincount(chart, area)
    for _ in range(2):  # label the pieces; fold the small ones back and label again
        piece = _pieces(corner_ids, chart * 4 + quarter)
        small = np.bincount(piece, area)[piece] < 0.05 * chart_area[chart]
        if not (small & (quarter > 0)).any():
            break
        quarter = np.where(small, 0, quarter)
    return piece


def _pieces(corner_ids: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per face, its connected piece (0..n-1) among faces of the same label that share a corner id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = corner_ids.astype(np.int64)
    _, node = np.unique(np.repeat(label.astype(np.int64), 3) * (int(ids.max()) + 1) + ids.reshape(-1),
                        return_inverse=True)
    node = node.reshape(-1, 3)
    n = int(node.max()) + 1
    edges = node[:, [0, 1, 1, 2]].reshape(-1, 2)
    _, component = connected_components(coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)),
                                        directed=False)
    return component[node[:, 0]]


def unwrap(vertices: np.ndarray, faces: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0),
           across: tuple[float, float, float] = (1.0, 0.0, 0.0), method: str | None = None) -> np.ndarray:
    """Per-corner UVs (float32 M×3×2, in [0, 1]) of a triangle mesh, every chart upright (`up` along +V,
    flat charts `across` along +U); faces keep their order. method: one of METHODS (None: DEFAULT_METHOD)."""
    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise ValueError(f"UV method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "planes":
        return _unwrap_planes(vertices, faces, up, across)
    return _unwrap_xatlas(vertices, faces, up, across)


def _unwrap_planes(vertices: np.ndarray, faces: np.ndarray, up: tuple[float, float, float],
                   across: tuple[float, float, float]) -> np.ndarray:
    up_axis = np.asarray(up, np.float64) / np.linalg.norm(up)
    across_axis = np.asarray(across, np.float64)
    across_axis = across_axis - (across_axis @ up_axis) * up_axis
    across_axis /= np.linalg.norm(across_axis)
    frame = np.stack([across_axis, np.cross(up_axis, across_axis), up_axis])  # rows: the new x, y, z
    points = np.asarray(vertices, np.float64) @ frame.T
    chart, face_uvs = uv_planes.charts(points, faces)
    return np.ascontiguousarray(uv_planes.pack(face_uvs, chart, ATLAS_SIZE, PADDING), np.float32)


def _unwrap_xatlas(vertices: np.ndarray, faces: np.ndarray, up: tuple[float, float, float],
                   across: tuple[float, float, float]) -> np.ndarray:
    vertices, faces = np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32)
    up_axis, across_axis = np.asarray(up, np.float64), np.asarray(across, np.float64)
    cut = xatlas.Atlas()
    cut.add_mesh(vertices, faces)
    draft = xatlas.PackOptions()
    draft.resolution, draft.padding = DRAFT_SIZE, 0
    draft.rotate_charts = draft.rotate_charts_to_axis = False
    cut.generate(xatlas.ChartOptions(), draft)
    _, indices, uvs = cut.get_mesh(0)
    if indices.shape != faces.shape:
        raise RuntimeError(f"xatlas returned {len(indices)} triangles for {len(faces)}")
    _, vertex_chart = cut.get_mesh_vertex_assignment(0)
    vertex_chart = vertex_chart.view(np.int32).astype(np.int64)  # -1 (in no chart) comes as a uint32
    loose = vertex_chart < 0  # in no chart (degenerate faces): each its own
    vertex_chart[loose] = vertex_chart.max(initial=-1) + 1 + np.arange(loose.sum())
    chart = vertex_chart[indices[:, 0]]
    corners, flat_uvs = vertices[faces].astype(np.float64), uvs[indices].astype(np.float64)
    maps = chart_transforms(corners, flat_uvs, chart, int(chart.max()) + 1, up_axis, across_axis)
    if TURN_SPLIT < np.pi:
        chart = split_turns(corners, np.einsum("fij,fkj->fki", maps[chart], flat_uvs), chart, indices, up_axis)
        maps = chart_transforms(corners, flat_uvs, chart, int(chart.max()) + 1, up_axis, across_axis)
    turned = np.einsum("fij,fkj->fki", maps[chart], flat_uvs)
    # One UV vertex per xatlas vertex and chart, the charts apart from one another (a UV mesh's charts are
    # found by shared UVs), for xatlas to pack them as they are.
    count = int(chart.max()) + 1
    keys = np.repeat(chart, 3) * (int(indices.max()) + 1) + indices.reshape(-1).astype(np.int64)
    _, first, node = np.unique(keys, return_index=True, return_inverse=True)
    node_uv, node_chart = turned.reshape(-1, 2)[first], np.repeat(chart, 3)[first]
    low = np.full((count, 2), np.inf)
    np.minimum.at(low, node_chart, node_uv)
    high = np.full((count, 2), -np.inf)
    np.maximum.at(high, node_chart, node_uv)
    side = float((high - low).max()) * 1.5 + 1e-6
    node_uv = node_uv + (np.stack([np.arange(count) % 64, np.arange(count) // 64], 1) * side - low)[node_chart]
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding = ATLAS_SIZE, PADDING
    # xatlas's own turns would undo ours, and its 90° "rotation" swaps u and v, which mirrors a chart.
    pack.rotate_charts = pack.rotate_charts_to_axis = False
    packed = xatlas.Atlas()
    node = node.reshape(-1, 3)
    packed.add_uv_mesh(np.ascontiguousarray(node_uv, np.float32), np.ascontiguousarray(node, np.uint32))
    packed.generate(xatlas.ChartOptions(), pack)
    _, out_indices, out_uvs = packed.get_mesh(0)
    if out_indices.shape != faces.shape or len(out_uvs) != len(node_uv) or packed.atlas_count != 1:
        raise RuntimeError("xatlas changed the mesh while packing its charts")
    # xatlas divides u by the atlas's width and v by its height; an atlas that came out oblong would stretch
    # every chart one way. One scale for both keeps the charts' shapes.
    texels = out_uvs.astype(np.float64) * (packed.width, packed.height)
    return np.ascontiguousarray(np.clip(texels[node] / max(packed.width, packed.height), 0.0, 1.0), np.float32)


def split_seams(vertices: np.ndarray, faces: np.ndarray,
                face_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, faces, uv per vertex) with a vertex copied wherever its corners' UVs differ."""
    corners = np.asarray(faces, np.int64).reshape(-1)
    uv = np.asarray(face_uvs, np.float32).reshape(-1, 2)
    keys = np.column_stack([corners.astype(np.float64), uv.astype(np.float64)])  # indices are exact in float64
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return np.asarray(vertices)[corners[first]], inverse.reshape(-1, 3).astype(np.int32), uv[first]


def uv_islands(vertices: np.ndarray, faces: np.ndarray, face_uvs: np.ndarray) -> np.ndarray:
    """Per face, its UV island: faces joined where they share a vertex with the same UV."""
    v, f, _ = split_seams(vertices, faces, face_uvs)
    edges = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(v), len(v)))
    return connected_components(graph, directed=False)[1][f[:, 0]]


def texel_coverage(face_uvs: np.ndarray, islands: np.ndarray, size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(how many triangles cover each texel centre of a size² texture, where two islands do): the
    check that islands do not overlap. A centre on a shared edge belongs to neither triangle."""
    hits = np.zeros((size, size), np.int32)
    owner = np.full((size, size), -1, np.int64)
    shared = np.zeros((size, size), bool)
    for tri, label in zip(face_uvs.astype(np.float64) * size - 0.5, islands):
        lo = np.clip(np.floor(tri.min(0)).astype(int) + 1, 0, size)
        hi = np.clip(np.ceil(tri.max(0)).astype(int), 0, size)
        x, y = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
        (ax, ay), (bx, by), (cx, cy) = tri
        sign = np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))
        inside = ((sign * ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) > 1e-9)
                  & (sign * ((cx - bx) * (y - by) - (cy - by) * (x - bx)) > 1e-9)
                  & (sign * ((ax - cx) * (y - cy) - (ay - cy) * (x - cx)) > 1e-9))
        xs, ys = x[inside], y[inside]
        hits[xs, ys] += 1
        before = owner[xs, ys]
        shared[xs, ys] |= (before >= 0) & (before != label)
        owner[xs, ys] = np.where(before < 0, label, before)
    return hits, shared
