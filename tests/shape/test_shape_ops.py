"""The shape ops over a real engine process: meshes as raw arrays in and out, with provenance.

A tiny model (16³, width 8) is fitted in this process with the shared trainer, straight into
the models folder of an engine started for this module; the engine loads it on first use.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from conftest import launch, stop

from engine.client import EngineError
from engine.shape.evaluation import voxel_iou
from engine.shape.meshing import grid_to_mesh
from engine.shape.model import ShapeVAEConfig
from engine.shape.objective import ShapeObjective
from engine.shape.ops import write_output
from engine.shape.voxels import voxelise
from engine.store.checkpoints import ModelStore
from engine.train.config import TrainConfig
from engine.train.trainer import TrainRun, train

TINY = ShapeVAEConfig(resolution=16, latent_dim=64, width=8, kl_warmup_steps=100)
MODEL = "tiny-shape"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(engine, client, training grids): a tiny model trained on 8 procedural shapes, served."""
    tmp = tmp_path_factory.mktemp("shape-ops")
    torch.set_num_threads(1)
    objective = ShapeObjective(TINY, procedural=8, cache_dir=tmp / "cache", rotate="none", mirror=False,
                               scale=0.0, eval_samples=4)
    run = TrainRun(ModelStore(tmp / "models", builtin=None), MODEL, "shape", torch.device("cpu"))
    train(objective, TrainConfig(steps=150, batch_size=8, lr=3e-3, checkpoint_every=10_000, log_every=50), run)
    running = launch(tmp, {"OMP_NUM_THREADS": "1"})
    client = running.client("shape-tests", timeout=30)
    yield running, client, objective.train_set.grids
    client.close()
    assert running.process.poll() is None, "the engine died:\n" + running.log()[-3000:]
    assert stop(running) == 0


def _mesh(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mesh = grid_to_mesh(grid.astype(np.float32))
    return mesh.vertices, mesh.faces


MESH_OPS = ("shape.sample", "shape.interpolate", "shape.encode", "shape.decode", "shape.variations")


def _call(client, op: str, **params):
    """The op on the tiny model; meshes at 32³ unless asked (the 16³ model has no finer detail)."""
    fast = {"resolution": 32} if op in MESH_OPS else {}
    return client.call(op, {"model": MODEL, **fast, **params}, timeout=120)


def test_sample_gives_closed_consistently_wound_meshes_with_provenance(served):
    _, client, _ = served
    value = _call(client, "shape.sample", seed=3, count=2, smooth=2)
    assert len(value["meshes"]) == 2
    for mesh in value["meshes"]:
        v, f = mesh["vertices"], mesh["faces"]
        assert isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape[1] == 3
        assert isinstance(f, np.ndarray) and f.dtype == np.int32 and f.shape[1] == 3 and len(f) > 0
        tm = trimesh.Trimesh(v, f, process=False)
        assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0 and tm.body_count == 1
    stored = client.call("models.info", {"name": MODEL})["metadata"]
    prov = value["provenance"]
    assert prov["model"] == MODEL and prov["model_hash"] == stored["content_hash"] and prov["op"] == "shape.sample"
    assert prov["params"]["seed"] == 3 and prov["params"]["count"] == 2 and prov["params"]["smooth"] == 2
    assert prov["params"]["resolution"] == 32 and prov["params"]["uvs"] is True

    again = _call(client, "shape.sample", **prov["params"])  # provenance is enough to make it again
    for a, b in zip(value["meshes"], again["meshes"]):
        assert np.array_equal(a["vertices"], b["vertices"]) and np.array_equal(a["faces"], b["faces"])
    other = _call(client, "shape.sample", seed=4, count=1, smooth=2)["meshes"][0]
    assert other["vertices"].shape != value["meshes"][0]["vertices"].shape or \
        not np.array_equal(other["vertices"], value["meshes"][0]["vertices"])


def test_encode_then_decode_reconstructs_a_training_shape(served):
    _, client, grids = served
    ious = []
    for grid in grids[:3]:
        vertices, faces = _mesh(grid)
        latent = _call(client, "shape.encode", vertices=vertices, faces=faces)["latent"]
        assert latent.dtype == np.float32 and latent.shape == (TINY.latent_dim,)
        mesh = _call(client, "shape.decode", latent=latent, keep="all")["meshes"][0]  # in the unit cube
        ious.append(voxel_iou(voxelise(mesh["vertices"], mesh["faces"], TINY.resolution), grid))
    assert np.mean(ious) >= 0.75, ious


def _frame(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    low, high = vertices.min(0), vertices.max(0)
    return (low + high) / 2, float((high - low).max())


def test_results_keep_the_input_meshs_size_place_and_up_axis(served):
    """A 3 m tall mesh standing 10 m away gives 3 m shapes standing there, through every mesh op."""
    _, client, grids = served
    vertices, faces = _mesh(grids[2])
    centre, size = _frame(vertices)
    placed = ((vertices - centre) * (3.0 / size) + np.array([10.0, -4.0, 1.5])).astype(np.float32)
    tall = int(np.argmax(np.ptp(placed, axis=0)))

    def in_frame(mesh: dict) -> None:
        """About 3 m, standing the same way, inside the 3 m cube the model's unit cube maps onto."""
        v = mesh["vertices"]
        assert 2.4 < _frame(v)[1] < 3.2, _frame(v)
        margin = 3.0 / TINY.resolution
        assert (v.min(0) > np.array([8.5, -5.5, 0.0]) - margin).all() and (v.max(0) < [11.5, -2.5, 3.0 + margin]).all()
        assert int(np.argmax(np.ptp(v, axis=0))) == tall

    variations = _call(client, "shape.variations", vertices=placed, faces=faces, count=2, spread=0.2)["meshes"]
    encoded = _call(client, "shape.encode", vertices=placed, faces=faces, decode=True)
    assert np.allclose(encoded["frame"]["centre"], [10.0, -4.0, 1.5], atol=1e-4)
    assert encoded["frame"]["size"] == pytest.approx(3.0, rel=1e-5)
    decoded = _call(client, "shape.decode", latent=encoded["latent"], frame=encoded["frame"])["meshes"][0]
    assert np.allclose(decoded["vertices"], encoded["meshes"][0]["vertices"], atol=1e-5)  # the same round trip
    for mesh in variations + encoded["meshes"]:
        in_frame(mesh)
    # Between a 3 m mesh and the same shape at 1 m elsewhere, sizes and places go from one to the other.
    small = ((vertices - centre) * (1.0 / size)).astype(np.float32)
    path = _call(client, "shape.interpolate", vertices_a=placed, faces_a=faces, vertices_b=small, faces_b=faces,
                 steps=3)["meshes"]
    in_frame(path[0])
    assert abs(_frame(path[1]["vertices"])[1] - 2.0) < 0.3 and abs(_frame(path[2]["vertices"])[1] - 1.0) < 0.15
    assert np.abs(_frame(path[2]["vertices"])[0]).max() < 0.25  # at b, 10 m from a (a reconstruction, not b itself)
    with pytest.raises(EngineError) as error:
        _call(client, "shape.decode", latent=encoded["latent"], frame={"centre": [0, 0], "size": 1})
    assert error.value.code == "bad_params" and "frame" in error.value.message


def test_an_open_input_mesh_gives_closed_results(served):
    """A mesh with its whole top missing (no hole filling closes it) still has an inside to the voxeliser's
    majority vote: what comes back is one closed piece."""
    _, client, grids = served
    vertices, faces = _mesh(grids[0])
    top = vertices[faces].mean(1)[:, 2] > np.percentile(vertices[:, 2], 85)
    open_faces = faces[~top]
    assert not trimesh.Trimesh(vertices, open_faces).is_watertight
    for mesh in _call(client, "shape.variations", vertices=vertices, faces=open_faces, count=2)["meshes"]:
        tm = trimesh.Trimesh(mesh["vertices"], mesh["faces"], process=False)
        assert tm.is_watertight and tm.is_winding_consistent and tm.body_count == 1 and tm.volume > 0


def test_every_mesh_carries_uvs_and_its_dropped_parts(served):
    _, client, _ = served
    meshes = _call(client, "shape.sample", seed=1, count=3)["meshes"]
    for mesh in meshes:
        assert mesh["uvs"].dtype == np.float32 and mesh["uvs"].shape == (len(mesh["faces"]), 3, 2)
        assert 0 <= mesh["uvs"].min() and mesh["uvs"].max() <= 1
        assert isinstance(mesh["dropped_parts"], int) and mesh["dropped_parts"] >= 0
    bare = _call(client, "shape.sample", seed=1, count=1, uvs=False, keep="all")["meshes"][0]
    assert "uvs" not in bare and bare["dropped_parts"] == 0


def test_interpolation_endpoints_are_the_encoded_shapes(served):
    _, client, grids = served
    (va, fa), (vb, fb) = _mesh(grids[0]), _mesh(grids[1])
    path = _call(client, "shape.interpolate", vertices_a=va, faces_a=fa, vertices_b=vb, faces_b=fb,
                 steps=3, keep="all")["meshes"]
    assert len(path) == 3
    for end, (v, f) in ((path[0], (va, fa)), (path[-1], (vb, fb))):
        encoded = _call(client, "shape.encode", vertices=v, faces=f)
        decoded = _call(client, "shape.decode", latent=encoded["latent"], frame=encoded["frame"],
                        keep="all")["meshes"][0]
        assert end["vertices"].shape == decoded["vertices"].shape
        assert np.allclose(end["vertices"], decoded["vertices"], atol=1e-5)
    # Seed endpoints are the seeds' samples.
    seeds = _call(client, "shape.interpolate", seed_a=5, seed_b=6, steps=2)["meshes"]
    for end, seed in ((seeds[0], 5), (seeds[1], 6)):
        sample = _call(client, "shape.sample", seed=seed)["meshes"][0]["vertices"]
        assert end["vertices"].shape == sample.shape and np.allclose(end["vertices"], sample, atol=1e-5)


def test_variations_of_a_mesh_sent_as_arrays(served):
    _, client, grids = served
    vertices, faces = _mesh(grids[2])
    value = _call(client, "shape.variations", vertices=vertices, faces=faces, count=3, seed=1, spread=0.5,
                  keep="all")
    assert len(value["meshes"]) == 3 and all(len(m["faces"]) > 0 for m in value["meshes"])
    assert value["provenance"]["params"]["spread"] == 0.5 and "vertices" not in value["provenance"]["params"]
    same = _call(client, "shape.variations", vertices=vertices, faces=faces, count=1, spread=0.0, keep="all")
    decoded = _call(client, "shape.encode", vertices=vertices, faces=faces, decode=True, keep="all")["meshes"][0]
    assert np.allclose(same["meshes"][0]["vertices"], decoded["vertices"], atol=1e-5)


def _box() -> tuple[np.ndarray, np.ndarray]:
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    return np.asarray(box.vertices, np.float32), np.asarray(box.faces, np.int32)


def _malformed() -> list[tuple[str, dict]]:
    v, f = _box()
    nan = v.copy()
    nan[2, 1] = np.nan
    flat = v.copy()
    flat[:, 2] = 0.0  # every vertex in one plane: no inside
    return [
        ("2 columns", {"vertices": v[:, :2].copy(), "faces": f}),
        ("int vertices", {"vertices": v.astype(np.int32), "faces": f}),
        ("float faces", {"vertices": v, "faces": f.astype(np.float32)}),
        ("quads", {"vertices": v, "faces": np.zeros((6, 4), np.int32)}),
        ("index past the end", {"vertices": v, "faces": np.where(f == 7, len(v), f).astype(np.int32)}),
        ("negative index", {"vertices": v, "faces": np.where(f == 0, -1, f).astype(np.int32)}),
        ("NaN vertex", {"vertices": nan, "faces": f}),
        ("infinite vertex", {"vertices": np.where(np.isnan(nan), np.inf, nan).astype(np.float32), "faces": f}),
        ("flat mesh", {"vertices": flat, "faces": f}),
        ("no faces", {"vertices": v}),
        ("list, not array", {"vertices": v.tolist(), "faces": f}),
    ]


@pytest.mark.parametrize("op", ["shape.encode", "shape.variations"])
def test_malformed_mesh_arrays_get_bad_params_and_the_engine_stays_up(served, op):
    running, client, _ = served
    for label, params in _malformed():
        with pytest.raises(EngineError) as error:
            _call(client, op, **params)
        assert error.value.code == "bad_params", (label, error.value)
        assert "Traceback" not in error.value.message
    v, f = _box()
    nan = v.copy()
    nan[0, 0] = np.nan
    for params in ({"vertices_a": nan, "faces_a": f}, {"vertices_a": v}):
        with pytest.raises(EngineError) as error:
            _call(client, "shape.interpolate", **params)
        assert error.value.code == "bad_params"
    with pytest.raises(EngineError) as error:
        _call(client, "shape.decode", latent=np.zeros(TINY.latent_dim + 1, np.float32))
    assert error.value.code == "bad_params"
    assert running.process.poll() is None
    assert len(_call(client, "shape.encode", vertices=v, faces=f)["latent"]) == TINY.latent_dim


def test_eval_returns_metrics_and_a_sheet(served, tmp_path):
    _, client, _ = served
    value = _call(client, "shape.eval", procedural=5)
    metrics = value["metrics"]
    assert set(metrics) == {"iou", "chamfer_l1", "fscore_1pct", "clean_share", "delivered_clean_share",
                            "coverage", "mmd"}
    assert 0 <= metrics["iou"] <= 1 and 0 <= metrics["clean_share"] <= 1 and metrics["chamfer_l1"] >= 0
    sheet = value["sheet"]
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.shape[0] > 100
    assert value["held_out_shapes"] == 5 and value["provenance"]["op"] == "shape.eval"
    png = write_output("shape.eval", value, tmp_path / "sheet.png")[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EngineError) as error:  # outside the served engine's folders: refused, existing or not
        _call(client, "shape.eval", meshes=str(tmp_path / "missing"))
    assert error.value.code == "path_not_allowed"


def test_cli_output_writes_meshes(served, tmp_path):
    _, client, _ = served
    value = _call(client, "shape.sample", seed=2, count=2)
    paths = write_output("shape.sample", value, tmp_path / "out")
    assert [p.suffix for p in paths] == [".glb", ".glb"]
    back = trimesh.load(paths[0], force="mesh")
    assert len(back.faces) == len(value["meshes"][0]["faces"])
    one = write_output("shape.sample", {"meshes": value["meshes"][:1]}, tmp_path / "one.obj")
    assert one == [tmp_path / "one.obj"] and one[0].exists()


def test_training_on_meshes_sent_over_the_protocol_skips_and_reports_broken_ones(served):
    _, client, grids = served
    good = [_mesh(grid) for grid in grids[:3]]
    flat = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32), np.array([[0, 1, 2], [1, 3, 2]], np.int32))
    sent = [{"name": f"good-{i}", "vertices": v.astype(np.float32), "faces": f.astype(np.int32)}
            for i, (v, f) in enumerate(good)]
    sent.append({"name": "flat", "vertices": flat[0], "faces": flat[1]})
    value = client.call("train", {"kind": "shape", "name": "sent", "data": {"mesh_arrays": sent},
                                  "model": {"resolution": 16, "width": 4, "latent_dim": 64},
                                  "train": {"steps": 2, "batch_size": 2}}, timeout=300)
    assert value["step"] == 2
    data = client.call("models.info", {"name": "sent"})["metadata"]["data"]
    assert data["source"] == {"sent_meshes": ["good-0", "good-1", "good-2", "flat"]}
    assert data["train_shapes"] + data["held_out_shapes"] == 3
    assert [s["source"] for s in data["skipped"]] == ["flat"] and data["skipped"][0]["reason"]
    with pytest.raises(EngineError) as caught:
        client.call("train", {"kind": "shape", "name": "none", "data": {"mesh_arrays": [sent[-1]]}}, timeout=120)
    assert caught.value.code == "bad_params" and "none of the 1 meshes" in caught.value.message


def test_cli_encode_variations_and_interpolate_write_mesh_files(served, tmp_path, capsys):
    """`atelier generate shape` reads mesh files itself and sends arrays, as Blender does; the files it writes
    keep the input file's size, place and up axis (GLB is Y up) and carry UVs."""
    from engine.cli.main import main
    from engine.shape.meshing import Mesh, export_mesh

    running, _, grids = served
    token = tmp_path / "token"
    token.write_text(running.token)
    vertices, faces = _mesh(grids[2])
    centre, size = _frame(vertices)
    chair = export_mesh(Mesh(((vertices - centre) * (3.0 / size) + [0.0, 0.0, 1.5]).astype(np.float32), faces),
                        tmp_path / "chair.glb")
    tall = int(np.argmax(np.ptp(vertices, axis=0)))  # Z up; written Y up, (x, y, z) -> (x, z, -y)
    assert int(np.argmax(trimesh.load(chair, force="mesh").extents)) == (0, 2, 1)[tall]
    engine = ["--engine", f"{running.host}:{running.port}", "--token-file", str(token), "--model", MODEL,
              "--resolution", "32", "--json"]

    def generate(*args: str) -> dict:
        assert main(["generate", "shape", *args, *engine]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    made = generate("--encode", str(chair), "--out", str(tmp_path / "round.glb"))
    assert made["files"] == [str(tmp_path / "round.npy"), str(tmp_path / "round.glb")]
    assert np.load(tmp_path / "round.npy").shape == (TINY.latent_dim,)
    generate("--encode", str(chair), "--out", str(tmp_path / "code.npy"))
    assert np.array_equal(np.load(tmp_path / "code.npy"), np.load(tmp_path / "round.npy"))
    made = generate("--variations-of", str(chair), "--count", "2", "--spread", "0.2", "--out", str(tmp_path / "v.obj"))
    assert [Path(p).name for p in made["files"]] == ["shape-00.obj", "shape-01.obj"]
    made = generate("--interpolate", str(chair), "5", "--steps", "3", "--out", str(tmp_path / "path.ply"))
    assert len(made["files"]) == 3
    for path in [tmp_path / "round.glb", *map(Path, made["files"][:1]), tmp_path / "v" / "shape-00.obj"]:
        back = trimesh.load(path, force="mesh")
        assert len(back.faces) > 0 and back.visual.uv.shape == (len(back.vertices), 2), path
        assert trimesh.Trimesh(back.vertices, back.faces).is_watertight, path
        y_up = path.suffix in (".glb", ".obj")  # PLY is written Z up, as Blender reads it
        assert int(np.argmax(back.extents)) == ((0, 2, 1)[tall] if y_up else tall), path
        assert 2.4 < back.extents.max() < 3.2 and abs(back.bounds[:, 1 if y_up else 2].mean() - 1.5) < 0.5, path

    assert main(["generate", "shape", "--variations-of", str(chair), "--temperature", "0.5", *engine]) == 1
    assert "--temperature: not a setting of shape.variations" in capsys.readouterr().out
