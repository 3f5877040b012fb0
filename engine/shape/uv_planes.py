"""UV charts of our own: faces grouped by the way they face, each chart projected flat onto its own plane.

Each face goes to one of 14 directions by its normal: one of the six axes where the normal is within 45° of
it, else the nearest of the eight cube corners (±1, ±1, ±1). Edge-connected faces of one direction form a
chart; faces leaning more than STRETCH from their chart's mean normal are charted again among themselves by
the nearest of 26 directions. Neighbouring charts then join, smallest first, wherever every face of the two
stays within MERGE of the joined chart's plane.

Every chart is projected orthographically onto the plane of its mean normal N: a planar chart keeps its
shape exactly, and every chart keeps one texel density (one unit of UV per unit of surface before packing).
The projection is upright by construction: on a chart that stands, world up projected onto its plane is +V;
on one that lies flat (rising less than FLAT_CHART), world +X is +U; never mirrored (U × V = N). On a chart
tilted back, faces turned sideways see up stray from +V, so each chart is turned to make up point along +V
on average over its faces, and faces where it still strays (more than STRAY on a chart that strays that
much on average, or 2.5 × STRAY anywhere), that lean more than LEAN from the plane (so no face is
stretched more than 1/cos LEAN one way), or that are tilted over 37° on a chart lying flat, become
charts of their own.

A projection can lay a chart over itself (a ramp that winds round). With every face facing the projection,
the chart is one-to-one exactly when its boundary does not cross itself (an immersed disk, or disk with
holes, whose boundary curves are simple is embedded), so boundaries are checked; where two cross, the faces
they bound are cut off (mostly a sliver folding over its neighbours), and a chart that still crosses is cut in
halves until none does. `pack` then places the charts without turning them, tallest first, on shelves.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

AXIS_COS = math.cos(math.radians(45))  # a normal within 45° of an axis goes to that axis, else to a cube corner
STRETCH_COS = math.cos(math.radians(35))  # faces leaning more from their direction's chart are charted anew
MERGE = math.radians(45)  # neighbouring charts join where no face then leans more than this from the plane
LEAN_COS = math.cos(math.radians(45))  # no face leans more than this from its chart's plane in the end
FLAT_CHART = 0.5  # a chart rising less than this (up projected onto its plane: tilted under 30°) lies flat
FLAT_NZ = math.sqrt(1 - FLAT_CHART ** 2)
STRAY = math.radians(8)  # see above
SPLIT_PASSES = 4  # rounds of cutting off straying and leaning faces (the last ones are seldom needed)
SPLIT_ROUNDS = 8  # cuts of a chart whose boundary crosses itself before it falls apart into faces

_CORNERS = np.array([[x, y, z] for x in (1, -1) for y in (1, -1) for z in (1, -1)], np.float64) / math.sqrt(3)
_FINE = np.array([d for d in np.ndindex(3, 3, 3) if d != (1, 1, 1)], np.float64) - 1
_FINE /= np.linalg.norm(_FINE, axis=1, keepdims=True)


def charts(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per face its chart 0..n-1, per corner its UV in the chart's own plane, one unit per unit of surface)
    for a mesh whose up is +Z. UVs come as a 2×3×F array (u or v, corner, face), which numpy runs through
    several times faster than F×3×2."""
    faces = np.asarray(faces, np.int64)
    points = np.asarray(vertices, np.float64)
    x, y, z = (points[:, k][faces.T] for k in range(3))  # 3×F each: per corner, per face
    e1, e2 = (x[1] - x[0], y[1] - y[0], z[1] - z[0]), (x[2] - x[0], y[2] - y[0], z[2] - z[0])
    cross = np.stack([e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]], 1)
    area = np.linalg.norm(cross, axis=1)
    unit = cross / np.maximum(area, 1e-300)[:, None]
    neighbour = _neighbours(faces)
    rows = np.arange(len(faces))

    dom = np.argmax(np.abs(unit), axis=1)
    on_axis = np.abs(unit[rows, dom]) >= AXIS_COS
    label = np.where(on_axis, dom * 2 + (unit[rows, dom] < 0), 6 + np.argmax(unit @ _CORNERS.T, axis=1))
    chart, count = _components(neighbour, label)
    lean = np.einsum("ij,ij->i", unit, _normals(cross, chart, count)[chart]) < STRETCH_COS
    if lean.any():
        chart, count = _components(neighbour, np.where(lean, count + np.argmax(unit @ _FINE.T, axis=1), chart))
    nxt = [1, 2, 0]
    edge_length = np.sqrt((x[nxt] - x) ** 2 + (y[nxt] - y) ** 2 + (z[nxt] - z) ** 2).T  # F×3, edge k to k+1
    chart, count = _merge(neighbour, chart, count, unit, cross, edge_length)

    steep = np.hypot(cross[:, 0], cross[:, 1])  # area × how steep: where up reads most
    for crossing_round in range(SPLIT_ROUNDS + 1):
        for split_pass in range(SPLIT_PASSES + 1):
            normal, u, v, stray = _frames(unit, area, steep, chart, count)
            if split_pass == SPLIT_PASSES:
                break
            mean = np.bincount(chart, steep * np.abs(stray), count) / np.maximum(np.bincount(chart, steep, count),
                                                                                1e-300)
            cut = ((np.abs(stray) > STRAY) & (mean[chart] > STRAY)) | (np.abs(stray) > 2.5 * STRAY)
            side = np.where(cut, np.where(stray > 0, 1, 2), 0)
            side[np.einsum("ij,ij->i", unit, normal[chart]) < LEAN_COS] = 3
            # A face tilted more than about 37° on a chart lying flat may show up any way: it goes too.
            side[(np.abs(normal[chart, 2]) > FLAT_NZ) & (steep > (FLAT_CHART + 0.1) * area)] = 3
            if not side.any():
                break
            chart, count = _components(neighbour, chart * 4 + side)
        uc, vc = u[chart].T, v[chart].T
        uv = np.stack([x * uc[0] + y * uc[1] + z * uc[2], x * vc[0] + y * vc[1] + z * vc[2]])
        crossing, culprits = _crossing_charts(uv, faces, neighbour, chart)
        if not len(crossing):
            break
        if crossing_round < 2:  # most crossings are a sliver folding over its neighbours: cut those faces off
            label = chart.copy()
            label[culprits] = count + culprits
            chart, count = _components(neighbour, label)
        elif crossing_round < SPLIT_ROUNDS:
            chart, count = _components(neighbour, _halve(uv, chart, crossing))
        else:  # still crossing: each of those faces a chart of its own
            chart, count = _compact(np.where(np.isin(chart, crossing), count + rows, chart))
    return chart, uv


def _neighbours(faces: np.ndarray) -> np.ndarray:
    """Per face and edge (corner k to corner k+1), the face across it (F×3), or the face itself on an open
    edge."""
    a, b = faces.reshape(-1), faces[:, [1, 2, 0]].reshape(-1)
    keys = np.minimum(a, b) * (int(faces.max(initial=0)) + 1) + np.maximum(a, b)
    order = np.argsort(keys)
    same = keys[order[1:]] == keys[order[:-1]]
    across = np.arange(len(keys))
    across[order[:-1][same]], across[order[1:][same]] = order[1:][same], order[:-1][same]
    return (across // 3).reshape(-1, 3)


def _components(neighbour: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, int]:
    """(per face its chart 0..n-1, n): edge-connected faces of one label."""
    n = len(label)
    keep = label[neighbour] == label[:, None]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    graph = csr_matrix((np.ones(int(indptr[-1]), np.int8), neighbour[keep], indptr), shape=(n, n))
    count, chart = connected_components(graph, directed=False)
    return chart, int(count)


def _compact(label: np.ndarray) -> tuple[np.ndarray, int]:
    used = np.zeros(int(label.max()) + 1, bool)
    used[label] = True
    index = np.cumsum(used) - 1
    return index[label], int(index[-1]) + 1


def _normals(cross: np.ndarray, chart: np.ndarray, count: int) -> np.ndarray:
    """Per chart, its unit mean normal (area-weighted)."""
    total = np.stack([np.bincount(chart, cross[:, k], count) for k in range(3)], axis=1)
    return total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-300)


def _frames(unit: np.ndarray, area: np.ndarray, steep: np.ndarray, chart: np.ndarray,
            count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per chart its plane's normal N and the U and V directions of its projection (count×3 each), and per
    face the angle (radians, counter-clockwise) by which up (+X on flat charts) strays from +V (+U) on it.
    V is up projected onto the plane where the chart stands, else U is +X projected; U × V = N; then the
    chart is turned so that up (+X) points along +V (+U) on average over its faces."""
    normal = _normals(unit * area[:, None], chart, count)
    rising = np.array([0.0, 0.0, 1.0]) - normal[:, 2:] * normal
    rise = np.linalg.norm(rising, axis=1)
    stands = rise >= FLAT_CHART
    across = np.array([1.0, 0.0, 0.0]) - normal[:, :1] * normal
    u_flat = across / np.maximum(np.linalg.norm(across, axis=1), 1e-300)[:, None]
    v_up = rising / np.maximum(rise, 1e-300)[:, None]
    u = np.where(stands[:, None], np.cross(v_up, normal), u_flat)
    v = np.where(stands[:, None], v_up, np.cross(normal, u_flat))
    # The way the chart's reference axis (up, or +X) points on each face, in (u, v): a step a along the face
    # has a·n = 0, so the axis e = g_u U + g_v V + λ n, with λ = e·N / n·N.
    axis = np.where(stands, 2, 0)[chart]
    n_dot = np.einsum("ij,ij->i", unit, normal[chart])
    lam = normal[chart, axis] / np.where(np.abs(n_dot) > 1e-9, n_dot, 1e-9)
    gu = u[chart, axis] - lam * np.einsum("ij,ij->i", unit, u[chart])
    gv = v[chart, axis] - lam * np.einsum("ij,ij->i", unit, v[chart])
    weight = np.where(stands[chart], steep, area) / np.maximum(np.hypot(gu, gv), 1e-300)
    mean_u, mean_v = np.bincount(chart, weight * gu, count), np.bincount(chart, weight * gv, count)
    turn = np.where(stands, math.pi / 2, 0.0) - np.arctan2(mean_v, mean_u)
    cos, sin = np.cos(turn)[:, None], np.sin(turn)[:, None]
    u, v = cos * u - sin * v, sin * u + cos * v
    c, s = cos[chart, 0], sin[chart, 0]
    gu, gv = c * gu - s * gv, s * gu + c * gv
    stray = np.where(stands[chart], np.arctan2(-gu, gv), np.arctan2(gv, gu))
    return normal, u, v, np.where(area > 0, stray, 0.0)


def _merge(neighbour: np.ndarray, chart: np.ndarray, count: int, unit: np.ndarray, cross: np.ndarray,
           edge_length: np.ndarray) -> tuple[np.ndarray, int]:
    """Neighbouring charts joined, smallest first, wherever every face of the two stays within MERGE of the
    joined chart's plane (judged by each chart's cone of normals: its mean and widest lean)."""
    total = np.stack([np.bincount(chart, cross[:, k], count) for k in range(3)], axis=1)
    size = np.linalg.norm(total, axis=1)
    normal = total / np.maximum(size, 1e-300)[:, None]
    cone = np.arccos(np.clip(_chart_min(chart, np.einsum("ij,ij->i", unit, normal[chart]), count), -1.0, 1.0))
    a, b = np.repeat(chart, 3), chart[neighbour].reshape(-1)
    apart = a < b
    pair = a[apart].astype(np.int64) * count + b[apart]
    uniq, inverse = np.unique(pair, return_inverse=True)
    shared = np.bincount(inverse, edge_length.reshape(-1)[apart])
    first, second = uniq // count, uniq % count
    # Pairs that cannot join now are left out: their charts only widen.
    joined = total[first] + total[second]
    joined /= np.maximum(np.linalg.norm(joined, axis=1, keepdims=True), 1e-300)
    bound = np.maximum(np.arccos(np.clip(np.einsum("ij,ij->i", normal[first], joined), -1, 1)) + cone[first],
                       np.arccos(np.clip(np.einsum("ij,ij->i", normal[second], joined), -1, 1)) + cone[second])
    keep = bound <= MERGE
    first, second, shared = first[keep], second[keep], shared[keep]
    order = np.lexsort((-shared, np.minimum(size[first], size[second])))
    parent = list(range(count))
    sums, cones = total.tolist(), cone.tolist()
    acos, hypot = math.acos, math.hypot
    for i, j in zip(first[order].tolist(), second[order].tolist()):
        while parent[i] != i:
            parent[i] = i = parent[parent[i]]
        while parent[j] != j:
            parent[j] = j = parent[parent[j]]
        if i == j:
            continue
        (ax, ay, az), (bx, by, bz) = sums[i], sums[j]
        mx, my, mz = ax + bx, ay + by, az + bz
        na, nb, nm = hypot(ax, ay, az), hypot(bx, by, bz), hypot(mx, my, mz)
        if nm <= 0 or na <= 0 or nb <= 0:
            continue
        lean_a = acos(max(-1.0, min(1.0, (ax * mx + ay * my + az * mz) / (na * nm)))) + cones[i]
        lean_b = acos(max(-1.0, min(1.0, (bx * mx + by * my + bz * mz) / (nb * nm)))) + cones[j]
        if max(lean_a, lean_b) > MERGE:
            continue
        parent[j] = i
        sums[i] = [mx, my, mz]
        cones[i] = max(lean_a, lean_b)
    root = np.array(parent)
    while not (root[root] == root).all():
        root = root[root]
    return _compact(root[chart])


def _chart_min(chart: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Per chart, the least of `values` (F or F×K) over its faces (+inf for a chart without faces)."""
    order = np.argsort(chart, kind="stable")
    sorted_chart = chart[order]
    start = np.flatnonzero(np.r_[True, sorted_chart[1:] != sorted_chart[:-1]])
    out = np.full((count,) + values.shape[1:], np.inf)
    out[sorted_chart[start]] = np.minimum.reduceat(values[order], start, axis=0)
    return out


def _crossing_charts(uv: np.ndarray, faces: np.ndarray, neighbour: np.ndarray,
                     chart: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the charts, the faces) where two boundary edges that share no vertex cross in UV."""
    border = chart[neighbour] != chart[:, None]
    border |= neighbour == np.arange(len(chart))[:, None]
    f, k = np.nonzero(border)
    if len(f) < 4:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p, q = uv[:, k, f].T, uv[:, (k + 1) % 3, f].T
    vp, vq = faces[f, k], faces[f, (k + 1) % 3]
    c = chart[f]
    # Edges hashed into cells about two edges long, per chart; pairs that share a cell are tested.
    cell = 2.0 * float(np.median(np.linalg.norm(q - p, axis=1))) + 1e-12
    lo = np.floor(np.minimum(p, q) / cell).astype(np.int64)
    span = np.floor(np.maximum(p, q) / cell).astype(np.int64) - lo + 1
    n_cells = span[:, 0] * span[:, 1]
    edge = np.repeat(np.arange(len(f)), n_cells)
    within = np.arange(len(edge)) - np.repeat(np.cumsum(n_cells) - n_cells, n_cells)
    cx = lo[edge, 0] + within % span[edge, 0]
    cy = lo[edge, 1] + within // span[edge, 0]
    cx, cy = cx - cx.min(), cy - cy.min()
    key = (c[edge] * (int(cx.max()) + 1) + cx) * (int(cy.max()) + 1) + cy
    order = np.argsort(key)
    key, edge = key[order], edge[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    size = np.diff(np.r_[start, len(key)])
    later = np.repeat(start + size, size) - np.arange(len(key)) - 1  # members of the same cell after this one
    i = np.repeat(np.arange(len(key)), later)
    j = i + 1 + np.arange(len(i)) - np.repeat(np.cumsum(later) - later, later)
    a, b = edge[i], edge[j]
    apart = (vp[a] != vp[b]) & (vp[a] != vq[b]) & (vq[a] != vp[b]) & (vq[a] != vq[b])
    a, b = a[apart], b[apart]

    def side(o: np.ndarray, d: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (d[:, 0] - o[:, 0]) * (x[:, 1] - o[:, 1]) - (d[:, 1] - o[:, 1]) * (x[:, 0] - o[:, 0])
    crossed = ((side(p[a], q[a], p[b]) * side(p[a], q[a], q[b]) < 0)
               & (side(p[b], q[b], p[a]) * side(p[b], q[b], q[a]) < 0))
    return np.unique(c[a[crossed]]), np.unique(f[np.r_[a[crossed], b[crossed]]])


def _halve(uv: np.ndarray, chart: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Labels that cut each chart in `which` in two across the longer side of its extent, at its median."""
    centre = uv.mean(axis=1).T
    label = chart.astype(np.int64) * 2
    for c in which.tolist():
        mine = np.flatnonzero(chart == c)
        points = centre[mine]
        axis = int(np.argmax(np.ptp(points, axis=0)))
        label[mine] += points[:, axis] > np.median(points[:, axis])
    return label


def pack(uv: np.ndarray, chart: np.ndarray, size: int, padding: float) -> np.ndarray:
    """Charts (UVs in their own planes at one density, 2×3×F as `charts` gives them) moved, not turned, and
    scaled by one factor into [0, 1]²: tallest first, on shelves, shorter ones stacked in columns
    (`_shelves`), `padding` texels of a size² texture between charts (half that at the border). Returns per
    corner UVs, F×3×2."""
    count = int(chart.max()) + 1
    low = _chart_min(chart, np.minimum(np.minimum(uv[:, 0], uv[:, 1]), uv[:, 2]).T, count)
    extent = -_chart_min(chart, -np.maximum(np.maximum(uv[:, 0], uv[:, 1]), uv[:, 2]).T, count) - low
    order = np.argsort(-extent[:, 1], kind="stable")
    w, h = extent[order, 0].tolist(), extent[order, 1].tolist()
    # The atlas side: shelves of that width whose stack is no taller, the gap `padding` texels of it.
    side = math.sqrt(float(((extent[:, 0] + 1e-9) * (extent[:, 1] + 1e-9)).sum()) / 0.85)
    side = max(side, float(extent.max()) * 1.01)
    while True:
        gap = padding / size * side
        where, height = _shelves(w, h, gap, side)
        if height <= side:
            break
        side = max(side * 1.02, min(side * height, side * side * 4) ** 0.5)
    offset = np.empty((count, 2))
    offset[order] = np.asarray(where) + gap / 2
    out = np.clip((uv + (offset - low)[chart].T[:, None]) / side, 0.0, 1.0)
    return out.transpose(2, 1, 0)


def _shelves(width: list[float], height: list[float], gap: float, limit: float) -> tuple[list, float]:
    """Boxes (in order of falling height, `gap` added to each side) on shelves at most `limit` wide: each
    stacked onto the first column of boxes that has room under its shelf's height, else starting a column at
    the end of the first shelf with room, else a new shelf. Returns (corner of each box, height of the stack)."""
    where = []
    shelves: list[list] = []  # [y, height, x where the next column goes, columns [x, width, height used], least used]
    top = 0.0
    for w, h in zip(width, height):
        w, h = w + gap, h + gap
        for shelf in shelves:
            y, tall, end, columns, least = shelf
            if tall - least >= h:
                for spot in columns:  # the first column with room takes the box
                    if spot[1] >= w and tall - spot[2] >= h:
                        where.append((spot[0], y + spot[2]))
                        used = spot[2]
                        spot[2] = used + h
                        if used == least:  # the least used column may have been this one
                            shelf[4] = min(c[2] for c in columns)
                        break
                else:
                    spot = None
                if spot is not None:
                    break
            if end + w <= limit:
                columns.append([end, w, h])
                where.append((end, y))
                shelf[2], shelf[4] = end + w, min(least, h)
                break
        else:
            if w > limit:
                return where, math.inf
            shelves.append([top, h, w, [[0.0, w, h]], h])
            where.append((0.0, top))
            top += h
    return where, top
