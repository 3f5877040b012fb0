"""Work on a mesh is bounded by its size and can be cancelled (issue 24): a random mesh costs
seconds and megabytes, not minutes and gigabytes; a malformed file in a training folder is skipped."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from engine import protocol
from engine.client import EngineError
from engine.shape import ops as shape_ops
from engine.shape.meshes import MAX_FACES, MAX_VERTICES, MeshTooLarge, mesh_from_arrays, normalise
from engine.shape.procedural import procedural_meshes
from engine.shape.voxels import voxelise


def random_mesh(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random vertices and random faces over them: every triangle spans the shape."""
    rng = np.random.default_rng(seed)
    return rng.random((count, 3), dtype=np.float32), rng.integers(0, count, (count, 3), dtype=np.int32)


def rss_mb(pid: int, key: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS, where the kernel allows it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def test_the_limits_in_ops_match_the_mesh_module():
    assert (shape_ops.MAX_VERTICES, shape_ops.MAX_FACES) == (MAX_VERTICES, MAX_FACES)


def test_a_random_mesh_is_refused_in_process_before_the_costly_work():
    vertices, faces = random_mesh(20_000)
    started = time.monotonic()
    with pytest.raises(MeshTooLarge, match="pairs, over the limit"):
        mesh = normalise(mesh_from_arrays(vertices, faces))
        voxelise(mesh.vertices, mesh.faces, 32)
    assert time.monotonic() - started < 2


def test_holes_of_three_or_four_edges_are_closed():
    import trimesh

    box = trimesh.creation.box()
    open_box = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)  # one triangle missing
    closed = mesh_from_arrays(open_box.vertices, open_box.faces)
    assert len(closed.faces) == 12 and closed.is_watertight


@pytest.mark.parametrize("op", ["shape.encode", "shape.variations", "shape.interpolate"])
def test_a_3mb_random_mesh_is_refused_within_5s_and_500mb(engine, op):
    vertices, faces = random_mesh(125_000)  # 1.5 MB of vertices, 1.5 MB of faces
    assert vertices.nbytes + faces.nbytes == 3_000_000
    pid = engine.process.pid
    with engine.client() as client:
        client.call("models.load", {"name": "shape-default"}, timeout=60)
        exact = reset_peak(pid)
        before = rss_mb(pid, "VmRSS") if exact else rss_mb(pid, "VmHWM")
        params = ({"vertices_a": vertices, "faces_a": faces} if op == "shape.interpolate"
                  else {"vertices": vertices, "faces": faces})
        started = time.monotonic()
        with pytest.raises(EngineError) as caught:
            client.call(op, {"model": "shape-default", **params}, timeout=60)
        seconds = time.monotonic() - started
    extra = rss_mb(pid, "VmHWM") - before
    print(f"{op}: refused in {seconds:.2f} s, peak RSS +{extra:.0f} MB")
    assert caught.value.code == protocol.TOO_LARGE and "limit" in caught.value.message
    assert seconds < 5 and extra < 500


def test_a_mesh_over_the_face_limit_is_refused_at_once(engine):
    vertices = np.random.default_rng(1).random((1000, 3), dtype=np.float32)
    faces = np.zeros((MAX_FACES + 1, 3), np.int32)
    with engine.client() as client, pytest.raises(EngineError) as caught:
        client.call("shape.encode", {"model": "shape-default", "vertices": vertices, "faces": faces}, timeout=60)
    assert caught.value.code == protocol.TOO_LARGE and f"{MAX_FACES:,}" in caught.value.message


def test_encoding_a_costly_mesh_cancels_within_a_second(engine):
    # Just under the cost limit at the shipped model's 64³ (~3,100 triangle-ray pairs per triangle of this
    # mesh): seconds of voxelising.
    vertices, faces = random_mesh(2_400, seed=3)
    with engine.client() as client:
        client.call("models.load", {"name": "shape-default"}, timeout=60)
        started = time.monotonic()
        client.call("shape.encode", {"model": "shape-default", "vertices": vertices, "faces": faces}, timeout=60)
        uncancelled = time.monotonic() - started
        request = client.submit("shape.encode", {"model": "shape-default", "vertices": vertices, "faces": faces})
        time.sleep(uncancelled / 4)
        cancelled_at = time.monotonic()
        request.cancel()
        with pytest.raises(EngineError) as caught:
            request.result(timeout=30)
        latency = time.monotonic() - cancelled_at
    print(f"uncancelled {uncancelled:.2f} s, cancel latency {latency:.2f} s")
    assert caught.value.code == protocol.CANCELLED and latency < 1.0 and uncancelled > 2 * latency


MALFORMED_OBJ = ("# a mesh whose vertices have two coordinates, not three: trimesh reads it all the same\n"
                 + "v 0 0\nv 1 0\nv 0 1\nv 1 1\n" + "f 1 2 3\nf 2 3 4\nf 1 3 4\nf 1 2 4\n" * 8)


def test_a_malformed_obj_in_a_training_folder_is_skipped_and_reported(engine):
    import trimesh

    folder = engine.models_dir / "training-meshes"  # a folder the engine may read from over the socket
    folder.mkdir()
    for name, mesh in procedural_meshes(6, 0):
        mesh.export(folder / f"{name}.obj")
    (folder / "broken.obj").write_text(MALFORMED_OBJ)
    assert 300 <= os.path.getsize(folder / "broken.obj") <= 400
    assert trimesh.load(folder / "broken.obj", force="mesh", process=False).vertices.shape[1] == 2
    train = {"kind": "shape", "name": "from-folder", "data": {"meshes": str(folder)},
             "model": {"resolution": 8, "width": 2, "latent_dim": 64}, "train": {"steps": 2, "batch_size": 2}}
    with engine.client() as client:
        result = client.call("train", train, timeout=120)
        assert result["step"] == 2
        data = client.call("models.info", {"name": "from-folder"})["metadata"]["data"]
    skipped = {s["source"]: s["reason"] for s in data["skipped"]}
    assert list(skipped) == ["broken.obj"] and skipped["broken.obj"], data
