"""The shape VAE and the shape kind, on a tiny model fitted for a few seconds."""
from dataclasses import asdict

import numpy as np
import pytest
import torch
import trimesh

from engine.ops import Cancelled
from engine.shape.evaluation import voxel_iou
from engine.shape.generation import load, one_piece, slerp
from engine.shape.meshing import export_mesh, grid_to_mesh
from engine.shape.model import Conv3d, ShapeVAE, ShapeVAEConfig, fold, kl_weight, unfold
from engine.shape.objective import ShapeObjective

TINY = ShapeVAEConfig(resolution=16, latent_dim=64, width=8, kl_warmup_steps=100, decoder="grid")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A ShapeObjective on 5 procedural shapes (4 train, 1 held out), fitted briefly."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    objective = ShapeObjective(TINY, procedural=5, cache_dir=tmp_path_factory.mktemp("cache"),
                               rotate="none", mirror=False, scale=0.0, eval_samples=4)
    opt = torch.optim.Adam(objective.param_groups()["model"], lr=2e-3)
    for step in range(120):
        keys = torch.arange(step * 8, step * 8 + 8)
        loss, _ = objective.loss("model", objective.batch(keys), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = {f"vae.{k}": v for k, v in objective.nets["vae"].state_dict().items()}
    return objective, load(asdict(TINY), weights, "cpu")


def _clean(mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="power of two"):
        ShapeVAEConfig(resolution=24)
    with pytest.raises(ValueError, match="focal"):
        ShapeVAEConfig(loss="mse")
    assert kl_weight(0, TINY) == 0.0 and kl_weight(10**6, TINY) == TINY.beta


def test_vae_shapes_at_64():
    vae = ShapeVAE(ShapeVAEConfig(resolution=64, latent_dim=64, width=4, decoder="grid"))
    logits, mu, logvar = vae(torch.zeros(2, 1, 64, 64, 64))
    assert logits.shape == (2, 1, 64, 64, 64) and mu.shape == logvar.shape == (2, 64)
    implicit = ShapeVAE(ShapeVAEConfig(resolution=64, latent_dim=64, width=4, features=8, decoder="implicit"))
    logits, mu, logvar = implicit(torch.zeros(2, 1, 64, 64, 64), torch.rand(2, 100, 3) - 0.5)
    assert logits.shape == (2, 100) and implicit.decode(mu).shape == (2, 8, 16, 16, 16)


def test_a_grid_latent_describes_the_shape_part_by_part():
    torch.manual_seed(0)
    vae = ShapeVAE(ShapeVAEConfig(resolution=32, latent_dim=128, latent="grid", width=4)).eval()
    with pytest.raises(ValueError, match="multiple of 64"):
        ShapeVAEConfig(latent="grid", latent_dim=100)
    mu, logvar = vae.encode(torch.zeros(2, 1, 32, 32, 32))
    assert mu.shape == logvar.shape == (2, 128)  # 2 numbers for each cell of the 4³ bottleneck
    z = torch.randn(1, 128)
    nudged = z.view(1, 2, 4, 4, 4).clone()
    nudged[:, :, 0, 0, 0] += 3.0  # the cell at the grid's first corner
    with torch.no_grad():
        change = (vae.decode(nudged.view(1, -1)) - vae.decode(z)).abs()[0, 0]
    near, far = change[:8, :8, :8].mean(), change[16:, 16:, 16:].mean()
    assert far < 0.3 * near  # the far half sees it only through group norm's statistics


def test_a_64_grid_folds_twice_onto_the_trunk_of_a_32_grid():
    assert [ShapeVAEConfig(resolution=r).fold for r in (8, 16, 32, 64, 128)] == [1, 1, 1, 2, 3]
    x = torch.rand(2, 3, 16, 16, 16)
    assert torch.equal(unfold(fold(x, 2), 2), x)
    assert torch.equal(fold(x, 2)[0, :, 1, 2, 3].sort().values, x[0, :, 4:8, 8:12, 12:16].flatten().sort().values)
    small, big = ShapeVAE(ShapeVAEConfig(resolution=32)), ShapeVAE(ShapeVAEConfig(resolution=64))
    assert len(big.encoder) == len(small.encoder) and len(big.decoder) == len(small.decoder)
    with pytest.raises(ValueError, match="fold"):
        ShapeVAEConfig(resolution=32, fold=4)  # a 2³ trunk
    # A model stored before `fold` existed folded once, whatever its resolution.
    old = {k: v for k, v in asdict(ShapeVAEConfig(resolution=64, width=4, fold=1)).items() if k != "fold"}
    weights = {f"vae.{k}": v for k, v in ShapeVAE(ShapeVAEConfig(**old, fold=1)).state_dict().items()}
    assert load(old, weights, "cpu").config.fold == 1


def test_the_inference_convolution_equals_torchs_for_one_shape():
    torch.manual_seed(0)
    conv = Conv3d(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 16, 16, 16)
    with torch.no_grad():
        ours = conv(x)
    torch.testing.assert_close(ours, torch.nn.Conv3d.forward(conv, x), rtol=1e-4, atol=1e-5)


def test_marching_cubes_closes_a_shape_touching_the_border():
    grid = np.zeros((16, 16, 16), np.float32)
    grid[:, 4:12, 0:10] = 1.0  # touches two faces of the cube
    mesh = grid_to_mesh(grid, smooth=3, decimate=0.002)
    tm = _clean(mesh)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    assert np.abs(mesh.vertices).max() <= 0.5 + 0.01  # Taubin may bulge a hair past the cube


def test_batch_is_pure_in_the_keys(fitted):
    objective, _ = fitted
    keys = torch.tensor([5, 1, 9, 2**33])
    assert torch.equal(objective.batch(keys), objective.batch(keys))
    assert objective.batch(keys).shape == (4, 1, 16, 16, 16)


def test_reconstruction_of_training_shapes(fitted):
    objective, model = fitted
    grids = objective.train_set.grids
    iou = voxel_iou(model.reconstruct_grids(grids) > 0.5, grids)
    assert iou.mean() >= 0.8, iou


def test_encoding_refines_the_latent_against_the_shape_and_leaves_the_weights_alone(fitted):
    objective, model = fitted
    grids = objective.held_out.grids  # a shape the model was not fitted to
    guessed, refined = model.encode_grids(grids, refine=0), model.encode_grids(grids)
    iou = [voxel_iou(model.decode_grids(z) > 0.5, grids).mean() for z in (guessed, refined)]
    assert iou[1] > iou[0], iou
    assert np.array_equal(model.encode_grids(grids), refined)  # deterministic
    assert all(p.grad is None for p in model.vae.parameters())


def test_sampled_meshes_are_watertight_and_consistently_wound(fitted):
    _, model = fitted
    calls = []
    meshes = model.sample(seed=4, count=3, smooth=2, progress=lambda f, msg: calls.append(f))
    assert calls[-1] == 1.0
    for mesh in meshes:
        tm = _clean(mesh)
        assert len(mesh.faces) > 0
        assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0 and tm.body_count == 1
    again = model.sample(seed=4, count=3, smooth=2)
    assert all(np.array_equal(a.vertices, b.vertices) for a, b in zip(meshes, again))


def test_interpolation_endpoints_match_the_encoded_shapes(fitted):
    objective, model = fitted
    a_grid, b_grid = objective.train_set.grids[:2]
    a, b = grid_to_mesh(a_grid.astype(np.float32)), grid_to_mesh(b_grid.astype(np.float32))
    za, zb = model.encode(*a), model.encode(*b)
    path = model.interpolate(a, b, steps=4, keep="all")
    assert len(path) == 4
    for end, z, grid in ((path[0], za, a_grid), (path[-1], zb, b_grid)):
        expected = model.decode(z, keep="all")
        assert np.allclose(end.vertices, expected.vertices, atol=1e-5)
        assert voxel_iou(model.decode_grids(z)[0] > 0.5, grid) >= 0.75
    assert np.allclose(slerp(za, zb, 0.0), za, atol=1e-5) and np.allclose(slerp(za, zb, 1.0), zb, atol=1e-5)
    mid = model.interpolate(3, 8, t=[0.5])
    assert len(mid) == 1


def test_variations_and_cancel(fitted):
    objective, model = fitted
    mesh = grid_to_mesh(objective.train_set.grids[0].astype(np.float32))
    near = model.variations(*mesh, n=2, spread=0.1)
    assert len(near) == 2 and all(len(m.faces) for m in near)
    progress = []

    def cancel_after_first(fraction: float, message: str) -> None:
        progress.append(fraction)
        raise Cancelled()

    with pytest.raises(Cancelled):
        model.variations(*mesh, n=3, progress=cancel_after_first)
    assert len(progress) == 1


def test_export_formats(fitted, tmp_path):
    _, model = fitted
    mesh = model.sample(seed=1)[0]
    for suffix in (".glb", ".obj", ".ply"):
        back = trimesh.load(export_mesh(mesh, tmp_path / f"shape{suffix}"), force="mesh")
        assert len(back.faces) == len(mesh.faces)
    with pytest.raises(ValueError, match="glb"):
        export_mesh(mesh, tmp_path / "shape.fbx")


def test_exports_stand_upright_in_each_formats_convention(tmp_path):
    grid = np.zeros((16, 16, 16), np.float32)
    grid[6:10, 6:10, 1:15] = 1.0  # a post, tall along Z (our up)
    mesh = grid_to_mesh(grid)
    for suffix, up in ((".glb", 1), (".obj", 1), (".ply", 2)):  # glTF and OBJ are Y up
        back = trimesh.load(export_mesh(mesh, tmp_path / f"post{suffix}"), force="mesh", process=False)
        assert int(np.argmax(back.extents)) == up, suffix
        assert back.volume > 0, suffix  # a rotation: still wound outwards


def test_evaluate_preview_and_summary(fitted):
    objective, _ = fitted
    metrics = objective.evaluate()
    assert set(metrics) == {"iou", "chamfer_l1", "fscore_1pct", "clean_share", "delivered_clean_share",
                            "coverage", "mmd", "whole_codes_share"}
    assert 0 <= metrics["iou"] <= 1 and metrics["chamfer_l1"] >= 0 and 0 <= metrics["whole_codes_share"] <= 1
    picture = objective.preview()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    summary = objective.data_summary()
    assert summary["train_shapes"] == 4 and summary["held_out_shapes"] == 1
    assert objective.nets["vae"].training  # evaluate/preview leave training mode as it was


def test_samples_are_drawn_from_training_shapes_that_decode_to_one_piece(tmp_path):
    # Four blocks and four pairs of blocks apart (as fences and lamps are in real collections): every
    # sample is a whole block, never a pair, while reconstructions keep the pairs' two pieces.
    torch.manual_seed(0)
    meshes = []
    for i in range(4):
        block = trimesh.creation.box(extents=(1, 0.5 + 0.1 * i, 0.6))
        pair = trimesh.util.concatenate([trimesh.creation.box(extents=(0.3, 0.5, 0.3 + 0.1 * i)).apply_translation(
            (x, 0, 0)) for x in (-0.35, 0.35)])
        meshes += [{"name": f"block{i}", "vertices": block.vertices, "faces": block.faces},
                   {"name": f"pair{i}", "vertices": pair.vertices, "faces": pair.faces}]
    objective = ShapeObjective(TINY, mesh_arrays=meshes, holdout=0.0, rotate="none", mirror=False, scale=0.0,
                               eval_samples=4)
    opt = torch.optim.Adam(objective.param_groups()["model"], lr=2e-3)
    for step in range(150):
        loss, _ = objective.loss("model", objective.batch(torch.arange(step * 8, step * 8 + 8)), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = objective.model()
    pieces = [one_piece(g) for g in model.reconstruct_grids(objective.train_set.grids)]
    assert pieces == [True, False] * 4
    assert objective.evaluate()["train_whole_codes_share"] == 0.5
    assert [_clean(mesh).body_count for mesh in model.sample(0, 16, resolution=32, keep="all")] == [1] * 16
    assert len(objective.nets["vae"].codes_mean) == 4


def test_objective_needs_a_source_and_takes_a_folder_with_procedural_shapes(tmp_path):
    with pytest.raises(ValueError, match="one data source"):
        ShapeObjective(TINY)
    with pytest.raises(ValueError, match="one data source"):
        ShapeObjective(TINY, procedural=5, mesh_arrays=[])
    for i in range(10):
        trimesh.creation.box(extents=(1, 0.2 + 0.05 * i, 0.5)).export(tmp_path / f"box{i}.stl")
    objective = ShapeObjective(TINY, meshes=tmp_path, procedural=20, cache_dir=tmp_path / ".cache")
    # each source holds out its own tenth: box9 of the folder, two of the procedural shapes
    assert len(objective.train_set) == 9 + 18 and objective.held_out.names[0] == "box9.stl"
    assert len(objective.held_out) == 3 and objective._grids.shape == (27, 16, 16, 16)
    assert objective.data_summary()["source"] == {"meshes": str(tmp_path), "procedural": 20, "seed": 0}


def test_sampling_prior_is_fitted_at_evaluation_and_older_checkpoints_load(fitted):
    objective, _ = fitted
    objective.evaluate()  # the trainer evaluates right before saving: the prior is refitted
    vae = objective.nets["vae"]
    assert not torch.equal(vae.prior_scale, torch.eye(TINY.latent_dim))
    assert vae.codes_mean.shape == vae.codes_std.shape and 1 <= len(vae.codes_mean) <= len(objective.train_set)
    model = objective.model()
    # Draws come from the training shapes' posteriors: at temperature 0, their codes exactly.
    exact = model.sample_latents(3, 8, temperature=0.0)
    assert all(any(np.allclose(z, code, atol=1e-6) for code in vae.codes_mean.numpy()) for z in exact)
    assert np.array_equal(model.sample_latents(3, 2), model.sample_latents(3, 2))
    weights = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    saved = load(asdict(TINY), weights, "cpu")
    assert np.array_equal(saved.sample_latents(5, 3), model.sample_latents(5, 3))

    without_codes = load(asdict(TINY), {k: v for k, v in weights.items() if "codes_" not in k}, "cpu")
    z = without_codes.sample_latents(0, 4000)  # the fitted Gaussian
    assert np.allclose(z.mean(0), vae.prior_mean.numpy(), atol=0.2)
    assert np.allclose(without_codes.sample_latents(3, 2, temperature=0.0), vae.prior_mean.numpy(), atol=1e-5)
    unfitted = load(asdict(TINY), {k: v for k, v in weights.items() if "prior_" not in k and "codes_" not in k},
                    "cpu")
    assert np.array_equal(unfitted.prior[1], np.eye(TINY.latent_dim)) and not unfitted.prior[0].any()
