"""Shapes from a trained shape VAE (engine/shape/model.py), meshed at any resolution.

    model = load(config_dict, {"vae.encoder.0.weight": ..., ...}, "cpu")
    model.sample(seed=1, count=4)                 -> [Mesh(vertices, faces), ...]
    model.interpolate(3, 9, steps=5)              -> meshes from seed 3's shape to seed 9's
    model.variations(vertices, faces, n=4)        -> shapes near a given mesh
    engine.shape.meshing.export_mesh(mesh, "chair.glb")

Latents of seeds are draws from the training shapes' posteriors, kept when training ends
(`ShapeVAE.fit_prior`), and of those only the shapes the model decodes to one piece
(`keep_whole_codes`; N(0, I) before fitting); a mesh's latent is the mean of q(z | its voxels). Interpolation is spherical (slerp) about that Gaussian's centre
by default: Gaussian latents concentrate near a shell, and a straight line between two of
them cuts inside it, where the decoder saw few codes.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import build
from engine.device import intra_op_threads
from engine.shape.implicit import extract
from engine.shape.meshes import MeshError, mesh_from_arrays, normalise
from engine.shape.meshing import Mesh, grid_to_mesh
from engine.shape.model import ShapeVAE, ShapeVAEConfig, reconstruction_loss
from engine.shape.voxels import voxelise

# Long calls report through `progress(fraction, message)`, which may raise (the engine's raises
# engine.ops.Cancelled once the op is cancelled) to stop them.
Progress = Callable[[float, str], None] | None
SeedOrLatent = int | np.ndarray
# keep_whole_codes keeps every code when fewer than this share of them decode to one piece: a collection
# of shapes made of parts (fences, grass, trees) should be sampled as it is.
MIN_WHOLE_SHARE = 0.25
# How far seeds stray from the training codes, in posterior spreads. On the CC0 collection (64³ model, 15
# minutes, 64 seeds, whole codes) 0.5 gave 95 % of samples in one piece against 91 % at 1.0, with the same
# distance to the nearest training shape and the same variety (docs/BENCHMARKS.md, shape section).
SAMPLE_TEMPERATURE = 0.5
# Gradient steps that refine an encoded latent against the mesh's own grid (grid decoders). The encoder's
# guess generalises less well than the decoder: on the CC0 collection's held-out meshes (64³ model, grid
# latent, 15 minutes) IoU 0.764 as encoded, 0.799 / 0.803 / 0.808 / 0.809 after 5 / 10 / 20 / 30 steps, at
# about 30 ms a step on one core (docs/BENCHMARKS.md, shape section).
REFINE_STEPS = 20
REFINE_LR = 0.1
DEFAULT_RESOLUTION = 128  # side of the occupancy volume that results are meshed from
MAX_RESOLUTION = 256


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation, also blending the norms linearly; lerp when a ∥ b."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(np.clip(a @ b / max(na * nb, 1e-12), -1.0, 1.0))
    omega = np.arccos(cos)
    if omega < 1e-4:
        return (1 - t) * a + t * b
    direction = (np.sin((1 - t) * omega) * a / na + np.sin(t * omega) * b / nb) / np.sin(omega)
    return direction / np.linalg.norm(direction) * ((1 - t) * na + t * nb)


def one_piece(grid: np.ndarray, level: float = 0.5) -> bool:
    """Whether the surface of `grid` at `level` (marching cubes, as the ops mesh it) is exactly one piece."""
    mesh = grid_to_mesh(grid, level=level)
    return not mesh.empty and mesh.dropped_parts == 0


class ShapeModel:
    """A trained shape VAE for generation. Every method that returns meshes takes `resolution`
    (the side of the occupancy volume meshed: 64 for previews, 128 by default, up to 256) and
    passes every other mesh option (level, keep, smooth, decimate, ...) to `grid_to_mesh` as is."""

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

    def sample_latents(self, seed: int, count: int = 1, temperature: float = SAMPLE_TEMPERATURE) -> np.ndarray:
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

    def keep_whole_codes(self, min_share: float = MIN_WHOLE_SHARE, resolution: int = DEFAULT_RESOLUTION) -> float:
        """Keep for sampling only the training codes whose mesh at `resolution` (the ops' default)
        is one piece, unless fewer than `min_share` of them are; returns that share (~60 ms a code
        at 128³). Real collections are full of shapes made of parts: 35 % of the CC0 collection's
        training meshes at 64³ (fences, grass, trees, lamps over their bulbs), and samples drawn from
        every training code came out in pieces about as often (52 % of 64 one piece). Drawn from
        the whole ones (62 % of the codes), 91 % (95 % at the default temperature), as varied and
        nearer a training shape (docs/BENCHMARKS.md). Encode, variations and interpolation between
        meshes use no stored codes."""
        codes_mean, codes_std = self.vae.codes_mean, self.vae.codes_std
        if not len(codes_mean):
            return 0.0
        codes = codes_mean.detach().cpu().numpy()
        whole = torch.as_tensor([one_piece(self.decode_grids(z, resolution=resolution)[0]) for z in codes],
                                device=codes_mean.device)
        share = float(whole.float().mean())
        if share >= min_share:
            self.vae.codes_mean, self.vae.codes_std = codes_mean[whole], codes_std[whole]
        return share

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
    def decode_grids(self, latents: np.ndarray, batch: int = 16, resolution: int | None = None) -> np.ndarray:
        """Occupancy probabilities (N×R×R×R float32) for latents N×latent_dim, at `resolution`
        (default: the model's). A grid decoder's own grid is upsampled trilinearly."""
        z = torch.as_tensor(np.asarray(latents, np.float32)).reshape(-1, self.config.latent_dim)
        res = resolution or self.config.resolution
        if not 4 <= res <= MAX_RESOLUTION:
            raise ValueError(f"resolution must be between 4 and {MAX_RESOLUTION}, got {res}")
        with intra_op_threads(1):
            out = [self._decode_batch(z[i:i + batch].to(self.device), res).cpu() for i in range(0, len(z), batch)]
        return torch.cat(out).numpy()

    def _decode_batch(self, z: torch.Tensor, res: int) -> torch.Tensor:
        decoded = self.vae.decode(z)
        if self.vae.head is not None:
            return torch.stack([extract(self._logits_at(grid[None]), res) for grid in decoded])
        probs = torch.sigmoid(decoded)
        if res != probs.shape[-1]:
            probs = F.interpolate(probs, size=(res,) * 3, mode="trilinear", align_corners=False)
        return probs[:, 0]

    def _logits_at(self, features: torch.Tensor, chunk: int = 1 << 16) -> Callable[[torch.Tensor], torch.Tensor]:
        def logits(points: torch.Tensor) -> torch.Tensor:
            points = points.to(self.device)
            return torch.cat([self.vae.occupancy(features, points[i:i + chunk][None])[0].cpu()
                              for i in range(0, len(points), chunk)])
        return logits

    def encode_grids(self, grids: np.ndarray, batch: int = 16, refine: int = REFINE_STEPS) -> np.ndarray:
        """Latents (N×latent_dim) of occupancy grids N×R×R×R: the posterior means, then (grid decoders)
        `refine` gradient steps on the decoder's loss against each grid."""
        x = torch.as_tensor(np.asarray(grids, np.float32))[:, None]
        with intra_op_threads(1):
            return torch.cat([self._encode_batch(x[i:i + batch].to(self.device), refine).cpu()
                              for i in range(0, len(x), batch)]).numpy()

    def _encode_batch(self, x: torch.Tensor, refine: int) -> torch.Tensor:
        with torch.no_grad():
            mu, logvar = self.vae.encode(x)
        if refine <= 0 or self.vae.head is not None:
            return mu
        # Minimise the training loss over z, held near the posterior by its own Gaussian (β as in training).
        # Each shape's loss depends on its own latent only, and Adam steps each number on its own.
        z = mu.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=REFINE_LR)
        config = self.vae.config
        for _ in range(refine):
            with torch.enable_grad():
                fit = reconstruction_loss(self.vae.decode(z), x, config).sum()
                loss = fit + 0.5 * config.beta * ((z - mu) ** 2 / logvar.exp()).sum()
                z.grad, = torch.autograd.grad(loss, z)  # the weights' gradients are neither needed nor kept
            optimiser.step()
        return z.detach()

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

    def decode(self, latent: np.ndarray, resolution: int = DEFAULT_RESOLUTION, **mesh_options: Any) -> Mesh:
        """The mesh of one latent, extracted from a resolution³ occupancy volume."""
        return grid_to_mesh(self.decode_grids(latent, resolution=resolution)[0], **mesh_options)

    def _meshes(self, latents: np.ndarray, progress: Progress, what: str, mesh_options: dict,
                resolution: int = DEFAULT_RESOLUTION) -> list[Mesh]:
        out = []
        for i, z in enumerate(latents):
            out.append(self.decode(z, resolution, **mesh_options))
            if progress is not None:
                progress((i + 1) / len(latents), f"{what} {i + 1}/{len(latents)}")
        return out

    def sample(self, seed: int, count: int = 1, *, temperature: float = SAMPLE_TEMPERATURE, progress: Progress = None,
               resolution: int = DEFAULT_RESOLUTION, **mesh_options: Any) -> list[Mesh]:
        """`count` new shapes; the same seed always gives the same shapes."""
        return self._meshes(self.sample_latents(seed, count, temperature), progress,
                            "sample", mesh_options, resolution)

    def interpolate(self, a: SeedOrLatent | Mesh, b: SeedOrLatent | Mesh, *, steps: int = 5,
                    t: float | list[float] | None = None, spherical: bool = True,
                    progress: Progress = None, resolution: int = DEFAULT_RESOLUTION,
                    **mesh_options: Any) -> list[Mesh]:
        """Shapes between `a` and `b` — each a seed (int), a latent (array) or a mesh
        (vertices, faces). `steps` evenly spaced including both ends, or the given t values."""
        za, zb = self._latent(a), self._latent(b)
        ts = np.linspace(0, 1, steps) if t is None else np.atleast_1d(np.asarray(t, float))
        if len(ts) < 1:
            raise ValueError("interpolate needs steps >= 1 or at least one t")
        latents = np.stack([self.blend(za, zb, float(ti), spherical) for ti in ts])
        return self._meshes(latents, progress, "interpolate", mesh_options, resolution)

    def variations(self, vertices: np.ndarray, faces: np.ndarray, n: int = 4, *, seed: int = 0,
                   spread: float = 0.3, progress: Progress = None, resolution: int = DEFAULT_RESOLUTION,
                   **mesh_options: Any) -> list[Mesh]:
        """`n` shapes near a mesh: its latent plus `spread` × a seeded step of the sampling
        Gaussian's shape (0 = the mesh as the model sees it, 1 = as far as shapes spread)."""
        z = self.encode(vertices, faces)
        latents = (z + spread * self.noise(seed, n) @ self.prior[1].T).astype(np.float32)
        return self._meshes(latents, progress, "variations", mesh_options, resolution)


def load(config: dict, weights: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> ShapeModel:
    """A ShapeModel from a stored config and weights keyed "vae.<parameter name>"."""
    # Models saved before the implicit decoder have grid decoders, before `fold` folded once, and
    # before `latent` one latent vector.
    config = {"decoder": "grid", "fold": 1, "latent": "vector", **config}
    vae = ShapeVAE(build(ShapeVAEConfig, config))
    prefix = "vae."
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"no 'vae.*' weights among {len(weights)} tensors: not a shape model checkpoint")
    for key in ("prior_mean", "prior_scale", "codes_mean", "codes_std"):  # absent in older models
        state.setdefault(key, getattr(vae, key))
    vae.load_state_dict(state)
    return ShapeModel(vae, device)
