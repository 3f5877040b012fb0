"""The shipped music recipe builds, is small, and the shipped weights (when present) load and play."""
import tomllib
from pathlib import Path

import pytest

from engine.config import build
from engine.music.config import MusicConfig, stored_config
from engine.music.ops import DATA_PARAMS
from engine.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "engine" / "recipes" / "music.toml"
WEIGHTS = ROOT / "engine" / "weights" / "music-default.safetensors"


def test_recipe_builds_a_small_model():
    from engine.music.config import build_music_net

    recipe = tomllib.loads(RECIPE.read_text())
    assert set(recipe) == {"data", "model", "train", "eval"} and set(recipe["data"]) <= set(DATA_PARAMS)
    config = build(MusicConfig, recipe["model"])
    build(TrainConfig, recipe["train"])
    assert config.model.arch == "frame"
    params = sum(p.numel() for p in build_music_net(config.model).parameters())
    assert params * 4 < 4e6, f"the default model should stay a few MB, it has {params} parameters"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="engine/weights/music-default.safetensors not built yet "
                    "(python bench/ship_model.py music)")
def test_shipped_model_loads_and_plays():
    from engine.music.generation import load
    from engine.store.checkpoints import load_file

    metadata, weights = load_file(WEIGHTS)
    assert metadata["kind"] == "music" and metadata["data"]["source"] == "corpus"
    model = load(metadata["config"], weights, "cpu")
    assert model.rnn.config.arch == "frame" and metadata["metrics"]["nll"] < 3
    assert stored_config(metadata["config"]) == build(MusicConfig, {})  # what plain `atelier train music` trains
    roll = model.generate(bars=2, seed=0)
    assert roll.shape == (32, 88) and (roll > 0).any()


def test_models_saved_before_the_frame_architecture_load_as_token_models():
    import torch

    from engine.music.generation import load
    from engine.music.token_model import MusicRNN

    config = build(MusicConfig, {"model": {"holds": True, "d_hidden": 16, "d_embed": 8, "n_layers": 1}}).to_dict()
    del config["model"]["arch"], config["model"]["d_decoder"], config["model"]["decoder_layers"]  # not written then
    torch.manual_seed(0)
    weights = {f"rnn.{k}": v for k, v in MusicRNN(build(MusicConfig, config).model).state_dict().items()}
    model = load(config, weights, "cpu")
    assert model.rnn.config.arch == "token" and (model.generate(bars=1, seed=0) > 0).any()


def test_models_stored_with_the_removed_lookback_setting_load_only_with_it_off():
    """Issue 21 removed model.lookback: a model stored with it off (the shipped one) has the same
    network without it; one trained with it on has to be trained again."""
    import torch

    from engine.music.frame_model import MusicFrameRNN
    from engine.music.generation import load

    config = build(MusicConfig, {"model": {"d_hidden": 16, "d_decoder": 16, "n_layers": 1}}).to_dict()
    torch.manual_seed(0)
    weights = {f"rnn.{k}": v for k, v in MusicFrameRNN(build(MusicConfig, config).model).state_dict().items()}
    plain = load(config, weights, "cpu").generate(bars=1, seed=0)
    config["model"]["lookback"] = False
    assert (load(config, weights, "cpu").generate(bars=1, seed=0) == plain).all()
    config["model"]["lookback"] = True
    with pytest.raises(ValueError, match=r"lookback=true: the lookback experiment .* was removed .* train it again"):
        load(config, weights, "cpu")
