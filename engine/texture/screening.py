"""Global codes kept for generation: the ones whose pictures look like the exemplar.

A generator trained for minutes makes the exemplar's texture from most global codes, but not
from all: the shipped planks made mottled grain or slanted stripes from about a third of them,
whatever the size asked for. When training ends, `screen` draws candidate codes, makes each one's
calibrated picture as `generate` would, and keeps those whose picture is nearest the exemplar (each
picture on its own against the exemplar's crops: its Gram distance and how far its gradients'
orientations are from the photo's, each over the candidates' median); `generate` then takes seed
s's code from the kept ones (TextureGANConfig.global_codes). Models trained on several exemplars
keep drawing fresh codes: their codes are blended by morphing and belong to their exemplars.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from engine.texture.evaluation import (RandomFeatures, _tensor, gram_distances, in_windows, orientations,
                                       real_sets)
from engine.texture.generation import TextureModel

CANDIDATES = 128
KEEP = 0.75  # of the candidates, the nearest three quarters
SIDE = 256   # pictures scored at this side (or the smallest exemplar's, to the stride)


@torch.no_grad()
def screen(model: TextureModel, images: list[np.ndarray], n: int = CANDIDATES, keep: float = KEEP, seed: int = 0
           ) -> list[list[float]] | None:
    """The kept global codes of a calibrated TextureModel (engine.texture.generation), rounded, as
    TextureGANConfig.global_codes wants them; None for a model trained on several exemplars.
    `images` are the training images (float HxWxC in [-1, 1]); their colour channels are compared."""
    config = model.config
    if config.n_exemplars > 1:
        return None
    side = min(SIDE, *(min(image.shape[:2]) for image in images))
    side -= side % config.stride
    codes = torch.randn(n, config.n_global, generator=torch.Generator().manual_seed(seed))
    candidates = TextureModel(dataclasses.replace(config, global_codes=codes.tolist()), model.G, model.device)
    pictures = np.stack([candidates.generate(side, side, seed=i, tileable=not in_windows(model))
                         for i in range(n)])  # seed i makes code i
    colour = [image[..., :config.channels] for image in images]
    real, _ = real_sets(colour, side, 32, seed)
    pictures = _tensor(pictures)
    # Gram statistics alone let slanted grain through on planks: the way the picture runs counts too.
    gram = gram_distances(pictures, real, RandomFeatures(real.shape[1]))
    turned = (orientations(pictures) - orientations(real).mean(0)).abs().sum(1)
    distances = gram / gram.median() + turned / turned.median().clamp_min(1e-12)
    # In the order drawn, not by distance: seeds 0, 1, ... (which `atelier eval` scores) are then
    # as good as any others, not the best.
    kept = codes[distances.argsort()[:max(1, round(n * keep))].sort().values]
    return np.round(kept.numpy().astype(np.float64), 4).tolist()
