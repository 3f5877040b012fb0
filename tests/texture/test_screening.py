"""Kept global codes (engine/texture/screening.py): training keeps the codes whose pictures look like
the exemplar, and `generate` draws from them."""
import dataclasses

import numpy as np
import torch

from engine.texture.generation import TextureModel
from engine.texture.images import procedural
from engine.texture.model import TextureGANConfig
from engine.texture.objective import TextureObjective
from engine.texture.screening import CANDIDATES, KEEP, screen

TINY = TextureGANConfig(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
                        n_local=4, n_global=8, n_periodic=2, channels=1)


def test_the_kept_codes_are_those_whose_pictures_look_like_the_exemplar():
    """The exemplar is the generator's own picture of the zero code: the codes kept are the ones
    nearer zero (an untrained generator's code sets a picture's tone), the dropped ones far."""
    torch.manual_seed(0)
    obj = TextureObjective(TINY, [procedural("blobs", 256, seed=2, channels=1)], seed=0)
    # without the gain: boosted 3.2x, an untrained generator's noise outweighs the tone its code sets
    model = TextureModel(dataclasses.replace(obj.export_config(), spectrum_gain=None), obj.nets["G_ema"])
    zero = TextureModel(dataclasses.replace(model.config, global_codes=[[0.0] * TINY.n_global]), model.G)
    exemplar = zero.generate(512, 512, seed=9).astype(np.float32) / 127.5 - 1
    kept = torch.tensor(screen(model, [exemplar], n=32))
    candidates = torch.randn(32, TINY.n_global, generator=torch.Generator().manual_seed(0))  # as screen draws them
    assert len(kept) == 24 and kept.shape[1] == TINY.n_global
    is_kept = torch.isclose(candidates[:, None], kept[None], atol=1e-4).all(-1).any(1)
    assert int(is_kept.sum()) == 24
    near, far = candidates[is_kept].norm(dim=1).mean(), candidates[~is_kept].norm(dim=1).mean()
    print(f"mean |code|: kept {near:.2f}, dropped {far:.2f}")
    assert near < 0.9 * far  # (measured 2.41 against 2.96; a random three quarters: about equal)


def test_a_seed_takes_its_kept_code_and_several_exemplars_keep_drawing_fresh_ones():
    torch.manual_seed(0)
    exemplar = procedural("blobs", 128, seed=2, channels=1)
    obj = TextureObjective(TINY, [exemplar], seed=0)
    model = TextureModel(obj.export_config(), obj.nets["G_ema"])
    codes = [[0.0] * TINY.n_global, [3.0] * TINY.n_global]
    two = TextureModel(dataclasses.replace(model.config, global_codes=codes), model.G)
    # seeds 1 and 3 share code 1 (their local noise differs); seed 2 has code 0
    assert np.array_equal(two.generate(32, 32, seed=1), TextureModel(
        dataclasses.replace(model.config, global_codes=[codes[1]]), model.G).generate(32, 32, seed=1))
    assert not np.array_equal(two.generate(32, 32, seed=1), model.generate(32, 32, seed=1))
    several = TextureObjective(TINY, [exemplar, procedural("waves", 128, seed=2, channels=1)], seed=0)
    assert screen(TextureModel(several.export_config(), several.nets["G_ema"]), several.images, n=4) is None


def test_a_trained_model_stores_its_kept_codes(tmp_path):
    from engine.store.checkpoints import ModelStore
    from engine.texture.generation import load
    from engine.train.config import TrainConfig
    from engine.train.trainer import TrainRun, train

    store = ModelStore(tmp_path, builtin=None)
    obj = TextureObjective(TINY, [procedural("blobs", 96, seed=1, channels=1)], seed=0)
    train(obj, TrainConfig(steps=2, batch_size=2, log_every=1), TrainRun(store, "t", "texture", torch.device("cpu")))
    metadata, weights = store.load("t")
    codes = metadata["config"]["global_codes"]
    assert len(codes) == round(CANDIDATES * KEEP) and len(codes[0]) == TINY.n_global
    assert load(metadata["config"], weights).config.global_codes == codes
