"""What the shared trainer trains for the shape kind: `ShapeObjective`, the shape VAE on a mesh
folder, procedural shapes or meshes sent by a client, with augmentation and held-out metrics.
The implicit decoder also learns from each shape's labelled points: every step takes
`config.points` of its cached pool, moved by the same augmentation as its grid.

    objective = ShapeObjective(ShapeVAEConfig(), procedural=500, device="cpu")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.shape.dataset import build_from_arrays, build_from_folder, build_procedural, concat
from engine.shape.evaluation import evaluate_model, report_sheet
from engine.shape.generation import ShapeModel
from engine.shape.model import MAX_CODES, ShapeVAE, ShapeVAEConfig, kl_weight, vae_loss
from engine.shape.voxels import augment, augmentation, transform
from engine.train.objective import Objective

POINT_POOL = 8192  # labelled points cached per shape; each step draws config.points of them


def _sent_mesh(index: int, mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(mesh, dict) or not isinstance(mesh.get("vertices"), np.ndarray) \
            or not isinstance(mesh.get("faces"), np.ndarray):
        raise ValueError(f"mesh_arrays[{index}] must be {{name, vertices: float N×3 array, faces: int M×3 array}}")
    return mesh["vertices"], mesh["faces"]


class ShapeObjective(Objective):
    """Training the shape VAE on the shared trainer. `meshes` (a folder), `procedural` (a shape
    count), both, or `mesh_arrays` choose the data; every 10th shape of each source is held out."""

    export_nets = ("vae",)

    def __init__(self, config: ShapeVAEConfig, *, meshes: str | Path | None = None,
                 procedural: int | None = None, mesh_arrays: list[dict] | None = None,
                 device: str | torch.device = "cpu",
                 seed: int = 0, up: str = "auto", holdout: float = 0.1, rotate: str = "quarter",
                 mirror: bool = True, scale: float = 0.05, cache_dir: str | Path | None = None,
                 eval_samples: int = 16):
        if mesh_arrays is not None and (meshes is not None or procedural is not None) \
                or (meshes, procedural, mesh_arrays) == (None, None, None):
            raise ValueError("give one data source: meshes=FOLDER, procedural=COUNT, both of those, or mesh_arrays "
                             "(meshes sent by a client)")
        self.config = config
        self.device = torch.device(device)
        pool = POINT_POOL if config.decoder == "implicit" else 0
        sets = []
        if mesh_arrays is not None:
            data = build_from_arrays([_sent_mesh(i, m) for i, m in enumerate(mesh_arrays)], config.resolution,
                                     names=[str(m.get("name", f"mesh_{i}")) for i, m in enumerate(mesh_arrays)],
                                     points=pool)
            if len(data) == 0:
                raise ValueError(f"none of the {len(mesh_arrays)} meshes sent is usable; send closed meshes "
                                 f"({'; '.join(f'{k.source}: {k.reason}' for k in data.skipped[:5])})")
            sets.append(data)
        if meshes is not None:
            data = build_from_folder(meshes, config.resolution, up=up, cache_dir=cache_dir, points=pool)
            if len(data) == 0:
                reasons = "; ".join(f"{s.source}: {s.reason}" for s in data.skipped[:5])
                raise ValueError(f"no usable meshes in {meshes} ({reasons})")
            sets.append(data)
        if procedural is not None:
            sets.append(build_procedural(procedural, seed, config.resolution, cache_dir=cache_dir, points=pool))
        # Each source holds out its own share, so a folder and procedural shapes are both measured.
        splits = [s.split(holdout) for s in sets]
        self.data = concat(sets)
        self.train_set, self.held_out = concat([t for t, _ in splits]), concat([h for _, h in splits])
        self._grids = torch.from_numpy(self.train_set.grids)
        if pool:
            self._points = torch.from_numpy(self.train_set.points)
            self._inside = torch.from_numpy(self.train_set.inside)
        self.augmentation = {"rotate": rotate, "mirror": mirror, "scale": scale}
        if mesh_arrays is not None:
            self.source = {"sent_meshes": [m.get("name") for m in mesh_arrays]}
        else:
            self.source = {**({"meshes": str(meshes)} if meshes is not None else {}),
                           **({"procedural": procedural, "seed": seed} if procedural is not None else {})}
        self.eval_samples = eval_samples
        self.nets = {"vae": ShapeVAE(config).to(self.device)}

    def _vae(self) -> ShapeVAE:
        net = self.nets["vae"]
        return getattr(net, "module", net)  # unwrap DDP

    def batch(self, keys: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        shapes = keys % len(self._grids)
        x = self._grids[shapes].float()[:, None]
        if self.config.decoder == "grid":
            return augment(x, keys, **self.augmentation).to(self.device)
        mats = augmentation(x, keys, **self.augmentation)
        pool = self._points.shape[1]
        pick = torch.stack([torch.randperm(pool, generator=torch.Generator().manual_seed(int(k)))[:self.config.points]
                            for k in keys])
        points = torch.gather(self._points[shapes].float(), 1, pick[:, :, None].expand(-1, -1, 3))
        points = points @ torch.from_numpy(mats).float().transpose(1, 2)
        return {"grids": transform(x, mats), "points": points,
                "inside": torch.gather(self._inside[shapes], 1, pick).float()}

    def loss(self, group: str, batch: torch.Tensor | dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.config.decoder == "grid":
            logits, mu, logvar = self.nets["vae"](batch)
            return vae_loss(logits, batch, mu, logvar, kl_weight(step, self.config), self.config)
        logits, mu, logvar = self.nets["vae"](batch["grids"], batch["points"])
        return vae_loss(logits, batch["inside"], mu, logvar, kl_weight(step, self.config), self.config)

    def model(self) -> ShapeModel:
        """The net being trained, wrapped for generation (shares weights; sets eval mode)."""
        return ShapeModel(self._vae(), self.device)

    def evaluate(self) -> dict[str, float]:
        """Refits what sampling draws from to the training shapes (the trainer evaluates right
        before it saves the finished model): their codes, of those the ones that decode to one
        piece (whole_codes_share: how many did), and one Gaussian over all; then measures."""
        vae = self._vae()
        was_training = vae.training
        held = self.held_out.grids if len(self.held_out) else self.train_set.grids[:16]
        vae.fit_prior(self._grids[:, None].to(self.device))
        try:
            model = self.model()
            whole = model.keep_whole_codes()
            metrics = {**evaluate_model(model, held, samples=self.eval_samples), "whole_codes_share": whole}
        finally:
            vae.train(was_training)
        if not len(self.held_out):
            metrics = {f"train_{k}": v for k, v in metrics.items()}  # no held-out set: say so
        return metrics

    @property
    def finish_steps(self) -> float:
        """The end of training (`evaluate`) in training steps' time, so that a run fits its time
        budget. The shipped recipe's run (511 training shapes, 64³, batches of 16, 2 CPU threads)
        ended 54 s past its 15 minutes, at 0.19 s a step: ~21 s for evaluate_model whatever the data
        (16 reconstructions and 16 samples meshed) and ~66 ms a code for keep_whole_codes (each
        code meshed at 128³). The end is meshing on one thread, so its share in steps follows the
        step's pace: on a day of 0.36 s steps a 5-minute run of the same data ended 47 s early
        (docs/BENCHMARKS.md, "The end of a shape run inside its budget"); on a GPU it ends late."""
        return 110 + 0.35 * min(len(self.train_set), MAX_CODES)

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
            "decoder": self.config.decoder,
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
