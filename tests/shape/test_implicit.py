"""The implicit shape decoder: occupancy at any point, meshes at any resolution, through the engine."""
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from conftest import launch, stop
from scipy.spatial import cKDTree

from engine.shape.evaluation import surface_points, voxel_iou
from engine.shape.generation import load
from engine.shape.implicit import extract
from engine.shape.meshing import grid_to_mesh
from engine.shape.model import ShapeVAE, ShapeVAEConfig
from engine.shape.objective import ShapeObjective
from engine.store.checkpoints import load_file

TINY = ShapeVAEConfig(resolution=16, latent_dim=16, latent="vector", width=8, features=16, frequencies=3, points=256,
                      kl_warmup_steps=50, decoder="implicit")
SHIPPED = Path(__file__).resolve().parents[2] / "engine" / "weights" / "shape-default.safetensors"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny implicit model fitted for a few seconds on 5 procedural shapes."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    objective = ShapeObjective(TINY, procedural=5, cache_dir=tmp_path_factory.mktemp("cache"),
                               rotate="none", mirror=False, scale=0.0, eval_samples=2)
    opt = torch.optim.Adam(objective.param_groups()["model"], lr=3e-3)
    for step in range(160):
        loss, _ = objective.loss("model", objective.batch(torch.arange(step * 4, step * 4 + 4)), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    objective.evaluate()  # fits the sampling prior
    return objective, objective.model()


def _agreement(batch: dict) -> float:
    """Share of points whose label is the occupancy of the grid voxel they fall in."""
    res = batch["grids"].shape[-1]
    index = ((batch["points"] + 0.5) * res).long().clamp(0, res - 1)
    rows = torch.arange(len(index))[:, None]
    occupied = batch["grids"][:, 0][rows, index[..., 0], index[..., 1], index[..., 2]] > 0.5
    return float((occupied == (batch["inside"] > 0.5)).float().mean())


def test_labelled_points_move_with_the_augmented_grid(fitted):
    objective, _ = fitted
    keys = torch.arange(16)
    plain = objective.batch(keys)
    assert plain["points"].shape == (16, TINY.points, 3) and plain["inside"].shape == (16, TINY.points)
    saved = objective.augmentation
    objective.augmentation = {"rotate": "quarter", "mirror": True, "scale": 0.0}  # exact on the grid
    try:
        augmented = objective.batch(keys)
    finally:
        objective.augmentation = saved
    assert not torch.equal(augmented["points"], plain["points"])
    # Labels come from a 128³ voxelisation, the grid is 16³: they disagree only near the surface, where
    # half the points are. Turned and mirrored points must agree with their turned grid exactly as much.
    assert _agreement(plain) > 0.75 and abs(_agreement(augmented) - _agreement(plain)) < 1e-3


def test_reconstructs_its_training_shapes(fitted):
    objective, model = fitted
    grids = objective.train_set.grids
    assert voxel_iou(model.reconstruct_grids(grids) > 0.5, grids).mean() > 0.55


def test_two_resolutions_give_the_same_surface_within_a_voxel(fitted):
    _, model = fitted
    z = model.sample_latents(0, 1)
    coarse, fine = model.decode_grids(z, resolution=32)[0], model.decode_grids(z, resolution=64)[0]
    a = surface_points(grid_to_mesh(coarse, keep="all"), 4000)
    b = surface_points(grid_to_mesh(fine, keep="all"), 4000)
    distances = np.concatenate([cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]]) * 32  # in 32³ voxels
    # Within a voxel of the coarser volume, but for small stray bits this briefly trained model has.
    assert distances.mean() < 0.5 and np.quantile(distances, 0.95) < 1.0
    # Coarse-to-fine refinement decides every voxel as evaluating all of them would.
    features = model.vae.decode(torch.as_tensor(z))
    with torch.no_grad():
        dense = extract(model._logits_at(features), 64, coarse=64).numpy()
    assert ((dense > 0.5) == (fine > 0.5)).mean() > 0.999


def test_tiny_model_trains_through_the_engine_and_meshes_at_64(tmp_path):
    engine = launch(tmp_path, {"OMP_NUM_THREADS": "1"})
    try:
        with engine.client("implicit-tests", timeout=300) as client:
            model = {"resolution": 16, "latent_dim": 64, "width": 4, "features": 8, "frequencies": 2, "points": 128,
                     "decoder": "implicit"}
            value = client.call("train", {"kind": "shape", "name": "tiny-implicit", "data": {"procedural": 8},
                                          "model": model, "train": {"steps": 3, "batch_size": 2}})
            assert value["step"] == 3
            info = client.call("models.info", {"name": "tiny-implicit"})["metadata"]
            assert info["config"]["decoder"] == "implicit" and info["data"]["decoder"] == "implicit"
            loaded = load(info["config"], load_file(engine.models_dir / "tiny-implicit.safetensors")[1])
            grid = loaded.decode_grids(loaded.sample_latents(1, 1), resolution=64)
            assert grid.shape == (1, 64, 64, 64)
    finally:
        assert stop(engine) == 0


def test_forty_meshes_in_one_training_request(tmp_path):
    boxes = [trimesh.creation.box(extents=(0.4 + 0.01 * i, 0.3, 0.2 + 0.005 * i)) for i in range(40)]
    sent = [{"name": f"box-{i}", "vertices": np.asarray(b.vertices, np.float32), "faces": np.asarray(b.faces, np.int32)}
            for i, b in enumerate(boxes)]
    engine = launch(tmp_path, {"OMP_NUM_THREADS": "1"})
    try:
        with engine.client("implicit-tests", timeout=300) as client:
            value = client.call("train", {"kind": "shape", "name": "forty", "data": {"mesh_arrays": sent},
                                          "model": {"resolution": 16, "latent_dim": 64, "width": 4, "features": 8,
                                                    "frequencies": 2, "points": 128, "decoder": "implicit"},
                                          "train": {"steps": 2, "batch_size": 2}})
            assert value["step"] == 2
            data = client.call("models.info", {"name": "forty"})["metadata"]["data"]
            assert data["train_shapes"] + data["held_out_shapes"] == 40 and not data["skipped"]
    finally:
        assert stop(engine) == 0


def test_the_shipped_grid_model_loads_and_generates_at_a_given_resolution():
    metadata, weights = load_file(SHIPPED)
    model = load(metadata["config"], weights)
    assert model.config.decoder == "grid"
    side = model.config.resolution
    fine = model.decode_grids(model.sample_latents(3, 1), resolution=2 * side)
    assert fine.shape == (1,) + (2 * side,) * 3
    coarse = model.decode_grids(model.sample_latents(3, 1))[0]
    # Trilinear upsampling keeps the shape: the occupancy at twice the side pooled back matches the model's own.
    pooled = torch.nn.functional.avg_pool3d(torch.from_numpy(fine)[None], 2)[0, 0].numpy()
    assert voxel_iou(pooled > 0.5, coarse > 0.5) > 0.9
    mesh = model.sample(3, 1, resolution=64, smooth=2)[0]
    assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight


def test_models_saved_before_the_decoder_fold_and_latent_settings_load_as_they_were():
    vae = ShapeVAE(ShapeVAEConfig(resolution=32, latent_dim=16, width=8, decoder="grid", fold=1, latent="vector"))
    weights = {f"vae.{k}": v for k, v in vae.state_dict().items() if "codes_" not in k and "prior_" not in k}
    older = {"resolution": 32, "latent_dim": 16, "width": 8, "beta": 0.25, "kl_warmup_steps": 200}
    model = load(older, weights)
    assert (model.config.decoder, model.config.fold, model.config.latent) == ("grid", 1, "vector")
    assert model.decode_grids(model.sample_latents(0, 2)).shape == (2, 32, 32, 32)
