"""The shape kind: the voxel VAE as the trainer and the engine see it.

    objective = ShapeObjective(ShapeVAEConfig(), procedural=500, device="cpu")   # for the trainer
    model = load(config_dict, {"vae.encoder.0.weight": ..., ...}, "cpu")          # for generation
    model.sample(seed=1, count=4)                 -> [Mesh(vertices, faces), ...]
    model.interpolate(3, 9, steps=5)              -> meshes from seed 3's shape to seed 9's
    model.variations(vertices, faces, n=4)        -> shapes near a given mesh
    export_mesh(mesh, "chair.glb")

Latents of seeds are draws from the model's sampling Gaussian (the training shapes'
aggregate posterior, fitted when training ends; N(0, I) before); a mesh's latent is the
mean of q(z | its voxels). Interpolation is spherical (slerp) about that Gaussian's centre
by default: Gaussian latents concentrate near a shell, and a straight line between two of
them cuts inside it, where the decoder saw few codes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.data.meshes import MeshError, mesh_from_arrays, normalise
from engine.data.shape_set import build_from_arrays, build_from_folder, build_procedural
from engine.data.voxels import augment, voxelise
from engine.device import intra_op_threads
from engine.models.shape_vae import ShapeVAE, ShapeVAEConfig, kl_weight, vae_loss
from engine.train.objective import Objective

from .shape_eval import evaluate_model, report_sheet
from .shape_mesh import Mesh, export_mesh, grid_to_mesh  # noqa: F401  (export_mesh re-exported)

Progress = Callable[[float, str], None] | None
IsCancelled = Callable[[], bool] | None
SeedOrLatent = int | np.ndarray


class Cancelled(RuntimeError):
    """Raised by long calls when their `cancelled()` callback returns True."""


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation, also blending the norms linearly; lerp when a ∥ b."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(np.clip(a @ b / max(na * nb, 1e-12), -1.0, 1.0))
    omega = np.arccos(cos)
    if omega < 1e-4:
        return (1 - t) * a + t * b
    direction = (np.sin((1 - t) * omega) * a / na + np.sin(t * omega) * b / nb) / np.sin(omega)
    return direction / np.linalg.norm(direction) * ((1 - t) * na + t * nb)


class ShapeModel:
    """A trained shape VAE for generation. Every mesh option (level, keep, smooth,
    decimate) is passed through to `grid_to_mesh`."""

    def __init__(self, vae: ShapeVAE, device: str | torch.device = "cpu"):
        self.vae = vae.to(device).eval()
        self.config = vae.config
        self.device = torch.device(device)

    # -- latents ---------------------------------------------------------------
    @property
    def prior(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, lower-triangular scale) of the Gaussian that seeds are drawn from."""
        return (self.vae.prior_mean.detach().cpu().double().numpy(),
                self.vae.prior_scale.detach().cpu().double().numpy())

    def noise(self, seed: int, count: int = 1) -> np.ndarray:
        """count×latent_dim standard normal draws; row i depends only on (seed, i)."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        return np.stack([np.random.default_rng([seed, i]).standard_normal(self.config.latent_dim)
                         for i in range(count)])

    def sample_latents(self, seed: int, count: int = 1, temperature: float = 1.0) -> np.ndarray:
        """count×latent_dim draws; latent i depends only on (seed, i). From the training
        shapes' posteriors where the model kept them: a training shape's code plus its
        posterior spread times `temperature` (0 = the training shape as the model sees it).
        Otherwise from the sampling Gaussian, its spread scaled by `temperature` (0 = its mean)."""
        codes_mean = self.vae.codes_mean.detach().cpu().numpy()
        if not len(codes_mean):
            mean, scale = self.prior
            return (mean + temperature * self.noise(seed, count) @ scale.T).astype(np.float32)
        codes_std = self.vae.codes_std.detach().cpu().numpy()
        noise = self.noise(seed, count)
        which = [int(np.random.default_rng([seed, i, 1]).integers(len(codes_mean))) for i in range(count)]
        return (codes_mean[which] + temperature * codes_std[which] * noise).astype(np.float32)

    def blend(self, a: np.ndarray, b: np.ndarray, t: float, spherical: bool = True) -> np.ndarray:
        """The latent at `t` from a to b; slerp goes around the sampling Gaussian's centre."""
        if t in (0.0, 1.0):  # the ends are exactly the given latents
            return np.asarray(a if t == 0.0 else b, np.float32)
        if not spherical:
            return ((1 - t) * a + t * b).astype(np.float32)
        centre = self.prior[0]
        return (centre + slerp(a - centre, b - centre, t)).astype(np.float32)

    def _latent(self, x: SeedOrLatent | Mesh) -> np.ndarray:
        if isinstance(x, (int, np.integer)):
            return self.sample_latents(int(x), 1)[0]
        if isinstance(x, tuple) and len(x) == 2:
            return self.encode(*x)
        z = np.asarray(x, np.float32).reshape(-1)
        if z.shape[0] != self.config.latent_dim:
            raise ValueError(f"a latent must have {self.config.latent_dim} numbers, got {z.shape[0]}")
        return z

    # -- grids -----------------------------------------------------------------
    # On this 2-core CPU the small 3D convolutions of one shape run slower on two OpenMP threads
    # than on one, and 3-10x slower when another job keeps a core busy (bench/shape_bench.py).
    @torch.no_grad()
    def decode_grids(self, latents: np.ndarray, batch: int = 16) -> np.ndarray:
        """Occupancy probabilities (N×R×R×R float32) for latents N×latent_dim."""
        z = torch.as_tensor(np.asarray(latents, np.float32)).reshape(-1, self.config.latent_dim)
        with intra_op_threads(1):
            out = [torch.sigmoid(self.vae.decode(z[i:i + batch].to(self.device)))[:, 0].cpu()
                   for i in range(0, len(z), batch)]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def encode_grids(self, grids: np.ndarray, batch: int = 16) -> np.ndarray:
        """Posterior means (N×latent_dim) of occupancy grids N×R×R×R."""
        x = torch.as_tensor(np.asarray(grids, np.float32))[:, None]
        with intra_op_threads(1):
            return torch.cat([self.vae.encode(x[i:i + batch].to(self.device))[0].cpu()
                              for i in range(0, len(x), batch)]).numpy()

    def reconstruct_grids(self, grids: np.ndarray) -> np.ndarray:
        return self.decode_grids(self.encode_grids(grids))

    def voxelise(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """The model-resolution occupancy grid of a mesh (cleaned, normalised; Z up)."""
        mesh = normalise(mesh_from_arrays(vertices, faces))
        grid = voxelise(mesh.vertices, mesh.faces, self.config.resolution)
        if not grid.any():
            raise MeshError("the mesh has no inside at this resolution (open or paper-thin surface); "
                             "close it or give it thickness")
        return grid

    # -- meshes ----------------------------------------------------------------
    def encode(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """The latent (float32, latent_dim) of a mesh given as arrays."""
        return self.encode_grids(self.voxelise(vertices, faces)[None])[0]

    def decode(self, latent: np.ndarray, **mesh_options: Any) -> Mesh:
        return grid_to_mesh(self.decode_grids(latent)[0], **mesh_options)

    def _meshes(self, latents: np.ndarray, progress: Progress, cancelled: IsCancelled,
                what: str, mesh_options: dict) -> list[Mesh]:
        out = []
        for i, z in enumerate(latents):
            if cancelled is not None and cancelled():
                raise Cancelled(f"{what} cancelled after {i} of {len(latents)} shapes")
            out.append(self.decode(z, **mesh_options))
            if progress is not None:
                progress((i + 1) / len(latents), f"{what} {i + 1}/{len(latents)}")
        return out

    def sample(self, seed: int, count: int = 1, *, temperature: float = 1.0,
               progress: Progress = None, cancelled: IsCancelled = None, **mesh_options: Any) -> list[Mesh]:
        """`count` new shapes; the same seed always gives the same shapes."""
        return self._meshes(self.sample_latents(seed, count, temperature), progress, cancelled,
                            "sample", mesh_options)

    def interpolate(self, a: SeedOrLatent | Mesh, b: SeedOrLatent | Mesh, *, steps: int = 5,
                    t: float | list[float] | None = None, spherical: bool = True,
                    progress: Progress = None, cancelled: IsCancelled = None,
                    **mesh_options: Any) -> list[Mesh]:
        """Shapes between `a` and `b` — each a seed (int), a latent (array) or a mesh
        (vertices, faces). `steps` evenly spaced including both ends, or the given t values."""
        za, zb = self._latent(a), self._latent(b)
        ts = np.linspace(0, 1, steps) if t is None else np.atleast_1d(np.asarray(t, float))
        if len(ts) < 1:
            raise ValueError("interpolate needs steps >= 1 or at least one t")
        latents = np.stack([self.blend(za, zb, float(ti), spherical) for ti in ts])
        return self._meshes(latents, progress, cancelled, "interpolate", mesh_options)

    def variations(self, vertices: np.ndarray, faces: np.ndarray, n: int = 4, *, seed: int = 0,
                   spread: float = 0.3, progress: Progress = None, cancelled: IsCancelled = None,
                   **mesh_options: Any) -> list[Mesh]:
        """`n` shapes near a mesh: its latent plus `spread` × a seeded step of the sampling
        Gaussian's shape (0 = the mesh as the model sees it, 1 = as far as shapes spread)."""
        z = self.encode(vertices, faces)
        latents = (z + spread * self.noise(seed, n) @ self.prior[1].T).astype(np.float32)
        return self._meshes(latents, progress, cancelled, "variations", mesh_options)

    def evaluate(self, held_out: np.ndarray, **kwargs: Any) -> dict[str, float]:
        return evaluate_model(self, held_out, **kwargs)


def load(config: dict, weights: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> ShapeModel:
    """A ShapeModel from a stored config and weights keyed "vae.<parameter name>"."""
    vae = ShapeVAE(ShapeVAEConfig(**config))
    prefix = "vae."
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"no 'vae.*' weights among {len(weights)} tensors: not a shape model checkpoint")
    for key in ("prior_mean", "prior_scale", "codes_mean", "codes_std"):  # absent in older models
        state.setdefault(key, getattr(vae, key))
    vae.load_state_dict(state)
    return ShapeModel(vae, device)


def _sent_mesh(index: int, mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(mesh, dict) or not isinstance(mesh.get("vertices"), np.ndarray) \
            or not isinstance(mesh.get("faces"), np.ndarray):
        raise ValueError(f"mesh_arrays[{index}] must be {{name, vertices: float N×3 array, faces: int M×3 array}}")
    return mesh["vertices"], mesh["faces"]


class ShapeObjective(Objective):
    """Training the shape VAE on the shared trainer. Exactly one of `meshes` (a folder)
    and `procedural` (a shape count) chooses the data; every 10th shape is held out."""

    export_nets = ("vae",)

    def __init__(self, config: ShapeVAEConfig, *, meshes: str | Path | None = None,
                 procedural: int | None = None, mesh_arrays: list[dict] | None = None,
                 device: str | torch.device = "cpu",
                 seed: int = 0, up: str = "z", holdout: float = 0.1, rotate: str = "quarter",
                 mirror: bool = True, scale: float = 0.05, cache_dir: str | Path | None = None,
                 eval_samples: int = 16):
        if sum(source is not None for source in (meshes, procedural, mesh_arrays)) != 1:
            raise ValueError("give exactly one data source: meshes=FOLDER, procedural=COUNT or mesh_arrays "
                             "(meshes sent by a client)")
        self.config = config
        self.device = torch.device(device)
        if mesh_arrays is not None:
            data = build_from_arrays([_sent_mesh(i, m) for i, m in enumerate(mesh_arrays)], config.resolution,
                                     names=[str(m.get("name", f"mesh_{i}")) for i, m in enumerate(mesh_arrays)])
            if len(data) == 0:
                raise ValueError(f"none of the {len(mesh_arrays)} meshes sent is usable; send closed meshes "
                                 f"({'; '.join(f'{k.source}: {k.reason}' for k in data.skipped[:5])})")
        elif meshes is not None:
            data = build_from_folder(meshes, config.resolution, up=up, cache_dir=cache_dir)
            if len(data) == 0:
                reasons = "; ".join(f"{s.source}: {s.reason}" for s in data.skipped[:5])
                raise ValueError(f"no usable meshes in {meshes} ({reasons})")
        else:
            data = build_procedural(procedural, seed, config.resolution, cache_dir=cache_dir)
        self.data = data
        self.train_set, self.held_out = data.split(holdout)
        self._grids = torch.from_numpy(self.train_set.grids)
        self.augmentation = {"rotate": rotate, "mirror": mirror, "scale": scale}
        if mesh_arrays is not None:
            self.source = {"sent_meshes": [m.get("name") for m in mesh_arrays]}
        else:
            self.source = {"meshes": str(meshes)} if meshes is not None else {"procedural": procedural, "seed": seed}
        self.eval_samples = eval_samples
        self.nets = {"vae": ShapeVAE(config).to(self.device)}

    def _vae(self) -> ShapeVAE:
        net = self.nets["vae"]
        return getattr(net, "module", net)  # unwrap DDP

    def batch(self, keys: torch.Tensor) -> torch.Tensor:
        x = self._grids[keys % len(self._grids)].float()[:, None]
        return augment(x, keys, **self.augmentation).to(self.device)

    def loss(self, group: str, batch: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        logits, mu, logvar = self.nets["vae"](batch)
        return vae_loss(logits, batch, mu, logvar, kl_weight(step, self.config), self.config)

    def model(self) -> ShapeModel:
        """The net being trained, wrapped for generation (shares weights; sets eval mode)."""
        return ShapeModel(self._vae(), self.device)

    def evaluate(self) -> dict[str, float]:
        """Refits the sampling Gaussian to the training shapes (the trainer evaluates right
        before it saves the finished model), then measures."""
        vae = self._vae()
        was_training = vae.training
        held = self.held_out.grids if len(self.held_out) else self.train_set.grids[:16]
        vae.fit_prior(self._grids[:, None].to(self.device))
        try:
            metrics = evaluate_model(self.model(), held, samples=self.eval_samples)
        finally:
            vae.train(was_training)
        if not len(self.held_out):
            metrics = {f"train_{k}": v for k, v in metrics.items()}  # no held-out set: say so
        return metrics

    def preview(self) -> np.ndarray:
        vae = self._vae()
        was_training = vae.training
        try:
            return report_sheet(self.model(), samples=6, steps=6, size=96)
        finally:
            vae.train(was_training)

    def data_summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "resolution": self.config.resolution,
            "train_shapes": len(self.train_set),
            "held_out_shapes": len(self.held_out),
            "skipped": [{"source": s.source, "reason": s.reason} for s in self.data.skipped],
            "augmentation": self.augmentation,
        }


# The kind-module contract of engine.kinds (DATA_PARAMS and OPS come with the server ops).
Config = ShapeVAEConfig


def objective(config: ShapeVAEConfig, data: dict[str, Any], device: str | torch.device) -> ShapeObjective:
    """`data` holds ShapeObjective's keyword options, e.g. {"procedural": 500} or {"meshes": "/path"}."""
    return ShapeObjective(config, device=device, **data)
