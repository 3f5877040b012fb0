"""Spectral calibration: measured after training, applied to what the model makes, still tileable."""
import dataclasses

import numpy as np
import torch

from engine.data.images import procedural
from engine.kinds.texture import TextureModel, TextureObjective
from engine.kinds.texture_eval import real_sets, spectrum_distance
from engine.kinds.texture_spectrum import CLIP, apply_gain, measure_gain
from engine.models.texture_gan import TextureGANConfig

TINY = TextureGANConfig(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
                        n_local=4, n_global=8, n_periodic=2, channels=1)


def test_gain_commutes_with_tiling_and_zero_gain_is_identity():
    x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.6
    gain = list(np.linspace(0.5, -0.3, 20))
    tiled = apply_gain(x.repeat(1, 1, 2, 3), gain)
    assert (tiled - apply_gain(x, gain).repeat(1, 1, 2, 3)).abs().max() < 1e-5
    assert (apply_gain(x, [0.0] * 12) - x).abs().max() < 1e-5
    assert not torch.allclose(apply_gain(x, gain), x, atol=1e-3)
    assert torch.allclose(apply_gain(x, gain).mean((2, 3)), x.mean((2, 3)), atol=1e-5)  # clamp aside, mean kept


def test_calibration_moves_the_spectrum_towards_the_exemplar():
    torch.manual_seed(0)
    exemplar = procedural("blobs", 128, seed=2, channels=1)  # smooth blobs: far more low-frequency power than a fresh G
    obj = TextureObjective(TINY, [exemplar], seed=0)
    config = obj.export_config()
    gain = config.spectrum_gain
    assert len(gain) == 64 and max(abs(g) for g in gain) <= CLIP and gain[0] > 0
    assert obj.config.spectrum_gain is None  # training is untouched; only the saved config carries it
    raw = TextureModel(obj.config, obj.nets["G_ema"])
    calibrated = TextureModel(config, obj.nets["G_ema"])
    real, _ = real_sets([exemplar], 64, 8)

    def distance(model):
        samples = np.stack([model.generate(64, 64, seed=s) for s in range(8)])
        return spectrum_distance(torch.from_numpy(samples).permute(0, 3, 1, 2).float() / 127.5 - 1, real)

    assert distance(calibrated) < distance(raw)
    a = calibrated.generate(32, 32, seed=3)
    b = calibrated.G.noise(*calibrated._noise(32, 32, 3))  # the same noise, tiled 2x2: the image tiles
    big = TextureModel(config, calibrated.G)._image(b.repeat(1, 1, 2, 2), 64, 64)
    assert np.abs(np.tile(a, (2, 2, 1)).astype(int) - big.astype(int)).max() <= 1  # uint8 rounding
    assert gain == measure_gain(obj.nets["G_ema"], [exemplar])  # deterministic
    assert dataclasses.replace(config, spectrum_gain=None) == obj.config


def test_trained_model_carries_its_calibration(tmp_path):
    from engine.kinds.texture import load
    from engine.store.checkpoints import ModelStore
    from engine.train.config import TrainConfig
    from engine.train.trainer import TrainRun, train

    store = ModelStore(tmp_path, builtin=None)
    obj = TextureObjective(TINY, [procedural("blobs", 96, seed=1, channels=1)], seed=0)
    train(obj, TrainConfig(steps=2, batch_size=2, log_every=1), TrainRun(store, "t", "texture", torch.device("cpu")))
    metadata, weights = store.load("t")
    gain = metadata["config"]["spectrum_gain"]
    assert len(gain) == 48 and gain == measure_gain(obj.nets["G_ema"], obj.images)
    model = load(metadata["config"], weights)
    raw = TextureModel(obj.config, model.G)
    assert model.config.spectrum_gain == gain
    assert not np.array_equal(model.generate(32, 32, seed=1), raw.generate(32, 32, seed=1))
