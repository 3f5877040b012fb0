"""UV unwrapping of generated meshes with xatlas.

xatlas cuts a mesh into charts along seams, flattens each chart with little stretch (least-squares
conformal maps) and packs them into [0, 1]² without overlap, every chart at the same texel density,
so a texture maps at one scale everywhere. The mesh itself stays welded (one vertex per position, so
it stays watertight); its UVs travel per face corner, an M×3×2 array. Files need one UV per vertex:
`split_seams` gives seam vertices one copy per chart when a mesh is written.
"""
from __future__ import annotations

import numpy as np
import xatlas

# Charts are packed for a texture of this side with this many texels between them, so that
# bilinear filtering and the first mip levels of an Atelier texture (512-1024 px) do not bleed.
ATLAS_SIZE = 1024
PADDING = 4


def signed_uv_areas(face_uvs: np.ndarray) -> np.ndarray:
    """Per triangle, its UV area, negative where the triangle is mirrored (clockwise) in UV space."""
    e1, e2 = face_uvs[:, 1] - face_uvs[:, 0], face_uvs[:, 2] - face_uvs[:, 0]
    return (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) / 2


def unwrap(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-corner UVs (float32 M×3×2, in [0, 1]) of a triangle mesh; faces keep their order."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding = ATLAS_SIZE, PADDING
    # xatlas "rotates" a chart by 90° by swapping u and v, which mirrors it (a texture, and a normal
    # map's relief, would show mirrored there); turning charts to their best axis does not mirror them.
    pack.rotate_charts = False
    atlas.generate(xatlas.ChartOptions(), pack)
    _, indices, uvs = atlas.get_mesh(0)
    if indices.shape != np.shape(faces):
        raise RuntimeError(f"xatlas returned {len(indices)} triangles for {len(faces)}")
    return np.ascontiguousarray(uvs[indices], np.float32)


def split_seams(vertices: np.ndarray, faces: np.ndarray,
                face_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, faces, uv per vertex) with a vertex copied wherever its corners' UVs differ."""
    corners = np.asarray(faces, np.int64).reshape(-1)
    uv = np.asarray(face_uvs, np.float32).reshape(-1, 2)
    keys = np.column_stack([corners.astype(np.float64), uv.astype(np.float64)])  # indices are exact in float64
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return np.asarray(vertices)[corners[first]], inverse.reshape(-1, 3).astype(np.int32), uv[first]
