"""The texture kind over a real engine process: train through the `train` op, then every texture op."""
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.client import EngineError
from engine.texture import ops as texture_ops
from engine.texture.evaluation import seam_ratio

TINY = dict(channels=1, g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)  # stride 8


@pytest.fixture(scope="module")
def model(engine):
    with engine.client() as client:
        result = client.call("train", {"kind": "texture", "name": "tiny-gravel",
                                       "data": {"images": "gravel", "rot90": False},
                                       "model": TINY, "train": {"steps": 3, "batch_size": 4}}, timeout=120)
    assert result["step"] == 3 and result["metrics"]["tile_error"] < 1e-5
    assert (engine.models_dir / "tiny-gravel.safetensors").exists()
    return "tiny-gravel"


def generate(engine, **params):
    with engine.client() as client:
        return client.call("texture.generate", params, timeout=60)


@pytest.mark.parametrize("size, shape", [("64x32", (32, 64, 1)), ("96", (96, 96, 1))])
def test_generate_returns_a_seamless_image_of_the_asked_size(engine, model, size, shape):
    value = generate(engine, model=model, size=size, seed=3)
    image = value["image"]
    assert image.dtype == np.uint8 and image.shape == shape
    # Wrap-around neighbours differ no more than interior neighbours: no seam. (No lower bound:
    # an all but untrained nearest-upsampling generator has structure tied to its cell lattice,
    # and the border lies on a cell edge, so it can be smoother than the average neighbours.)
    # Over four seeds: one small picture's 32 + 64 border pairs are too few to judge alone.
    others = [generate(engine, model=model, size=size, seed=seed)["image"] for seed in (4, 5, 6)]
    assert np.mean([seam_ratio(x[None]) for x in [image, *others]]) < 1.25
    assert value["provenance"]["model"] == model and value["provenance"]["params"]["seed"] == 3


def test_same_seed_same_image(engine, model):
    a = generate(engine, model=model, width=48, height=40, seed=11)["image"]
    b = generate(engine, model=model, width=48, height=40, seed=11)["image"]
    c = generate(engine, model=model, width=48, height=40, seed=12)["image"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_pbr_maps_come_with_the_image(engine, model):
    value = generate(engine, model=model, width=64, height=32, pbr=True)
    assert value["normal"].shape == (32, 64, 3) and value["normal"].dtype == np.uint8
    assert value["roughness"].shape == (32, 64) and value["height"].shape == (32, 64)
    assert "normal" not in generate(engine, model=model, width=64, height=32)


def test_bad_size_says_what_would_work_and_the_engine_stays_up(engine, model):
    with pytest.raises(EngineError) as caught:
        generate(engine, model=model, width=60, height=64)
    assert caught.value.code == "bad_params"
    assert "multiple of the generator stride 8" in caught.value.message and "56 or 64" in caught.value.message
    assert "tileable" in caught.value.message
    with pytest.raises(EngineError, match="between 16 and 4096"):
        generate(engine, model=model, size="8192x64")
    # Without tiling any size is fine: cropped from a larger texture.
    assert generate(engine, model=model, width=50, height=30, tileable=False)["image"].shape == (30, 50, 1)
    with engine.client() as client:
        assert client.ping() >= 0


def test_morph_and_animate_with_previews(engine, model):
    with engine.client() as client:
        assert client.call("texture.morph", {"model": model, "width": 128, "height": 32}, timeout=60)["image"].shape \
            == (32, 128, 1)
        previews = []
        value = client.call("texture.animate", {"model": model, "width": 256, "height": 128, "frames": 3},
                            on_progress=lambda f, msg, preview: previews.append(preview), timeout=60)
    assert value["frames"].shape == (3, 128, 256, 1) and value["frames"].dtype == np.uint8
    shown = [p for p in previews if p is not None]
    assert len(shown) == 3 and max(shown[0].shape[:2]) <= texture_ops.PREVIEW_SIDE


def test_a_large_texture_sends_a_first_look_with_its_first_progress(engine, model):
    """Before a picture over FIRST_LOOK_PIXELS the engine makes a small one of the same model, seed
    and exemplar, and sends it (the model's colour channels) before any progress of the large one:
    what a request for that small size gives, at 1:1 scale, not a downscale of the result."""
    events = []
    with engine.client() as client:
        value = client.call("texture.generate", {"model": model, "width": 1024, "height": 512, "seed": 5},
                            on_progress=lambda f, msg, preview: events.append((f, msg, preview)), timeout=120)
        small = [p for f, msg, p in events if p is not None]
        assert len(small) == 1, [(f, msg) for f, msg, _ in events]
        first = next(i for i, (f, msg, p) in enumerate(events) if msg != "queued")
        assert events[first][2] is not None and all(f == 0.0 for f, _, _ in events[:first + 1])
        preview = small[0]
        assert preview.dtype == np.uint8 and preview.shape[-1] == value["image"].shape[-1] == TINY["channels"]
        assert preview.shape[:2] == (texture_ops.PREVIEW_SIDE, texture_ops.PREVIEW_SIDE)  # TINY's crop is 32
        same = client.call("texture.generate", {"model": model, "width": 96, "height": 96, "seed": 5}, timeout=60)
        assert np.array_equal(preview, same["image"])
        quiet = []
        client.call("texture.generate", {"model": model, "width": 256, "height": 256, "seed": 5},
                    on_progress=lambda f, msg, p: quiet.append(p), timeout=60)
    assert all(p is None for p in quiet)  # small pictures come at once: no first look


def test_animate_can_be_cancelled_mid_job(engine, model):
    started = threading.Event()
    with engine.client() as client:
        request = client.submit("texture.animate", {"model": model, "width": 512, "height": 512, "frames": 240},
                                on_progress=lambda f, msg, preview: preview is not None and started.set())
        assert started.wait(60), "no frame arrived"
        request.cancel()
        with pytest.raises(EngineError) as caught:
            request.result(timeout=60)
        assert caught.value.code == "cancelled"
        assert client.ping() >= 0


def test_eval_returns_metrics_and_a_sheet(engine, model, tmp_path):
    with engine.client() as client:
        value = client.call("texture.eval", {"model": model, "samples": 4}, timeout=120)
    metrics = value["metrics"]
    for key in ("gram", "swd", "spectrum", "diversity", "nearest_patch", "seam_ratio", "tile_error"):
        assert np.isfinite(metrics[key]), key
    assert metrics["tile_error"] < 1e-5
    assert value["exemplars"] == ["skimage:gravel"]
    sheet = value["sheet"]
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert texture_ops.write_output("texture.eval", value, tmp_path) == [tmp_path / "texture-eval.png"]


def test_stored_metrics_are_what_eval_measures_on_the_saved_model(engine, model):
    """The end of training measures the calibrated model `generate` uses, as `atelier eval` does by
    default (same samples, seed and reference sets), not the raw generator."""
    with engine.client() as client:
        stored = client.call("models.info", {"name": model})["metadata"]["metrics"]
        measured = client.call("texture.eval", {"model": model}, timeout=300)
    for key in ("gram", "swd", "spectrum", "diversity", "seam_ratio"):
        assert stored[key] == pytest.approx(measured["metrics"][key], rel=1e-3, abs=1e-4), key
    for key in ("gram", "swd", "spectrum"):
        assert stored[f"{key}_se"] == pytest.approx(measured["uncertainty"][key], rel=1e-2, abs=1e-4), key


def test_a_model_of_a_shrunk_photo_is_measured_against_the_photo_shrunk(engine):
    """downscale=2: `atelier eval` reads the photo halved, as training did, so its figures are the
    stored ones, and it says so."""
    photo = engine.models_dir / "photos" / "gravel_Color.jpg"  # where this engine reads files from
    photo.parent.mkdir(exist_ok=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "bench" / "data" / "textures" / "gravel" / photo.name, photo)
    with engine.client() as client:
        client.call("train", {"kind": "texture", "name": "halved", "data": {"images": str(photo)},
                              "model": {**TINY, "downscale": 2}, "train": {"steps": 2, "batch_size": 2}}, timeout=300)
        info = client.call("models.info", {"name": "halved"})["metadata"]
        measured = client.call("texture.eval", {"model": "halved"}, timeout=300)
    assert info["config"]["downscale"] == 2 and measured["downscale"] == 2
    assert info["data"]["images"][0]["width"] == 1024  # the photo as the user gave it
    for key in ("gram", "swd", "spectrum"):
        assert info["metrics"][key] == pytest.approx(measured["metrics"][key], rel=1e-3, abs=1e-4), key
    assert "of the photo shrunk 2x, as training read it" in texture_ops.describe_result("texture.eval", measured, [])


def test_eval_gives_each_figure_its_ideal_uncertainty_and_verdict(engine, model):
    with engine.client() as client:
        value = client.call("texture.eval", {"model": model, "samples": 6, "repeats": 3}, timeout=120)
    assert value["samples"] == 6 and value["repeats"] == 3
    for key in ("gram", "swd", "spectrum"):
        assert value["ideal"][key] == "1" and value["uncertainty"][key] >= 0
        assert value["verdicts"][key].split()[0] in ("good", "fair", "off"), value["verdicts"][key]
    assert value["ideal"]["tile_error"] == "0" and value["verdicts"]["tile_error"].startswith("good")
    text = texture_ops.describe_result("texture.eval", value, [])
    gram = next(line for line in text.splitlines() if line.strip().startswith("gram"))
    assert "±" in gram and "ideal 1" in gram and value["verdicts"]["gram"] in gram
    assert "1 = as close as another piece of the photo" in text
    assert value["windows"] is False and text.startswith("6 samples of")  # gravel does not repeat
    assert value["downscale"] == 1 and "shrunk" not in text
    assert "6 windows of 32 px (the texture at its measured repeat" in texture_ops.describe_result(
        "texture.eval", {**value, "windows": True}, [])


def test_a_short_run_says_so_in_its_metadata_and_eval(engine, model):
    with engine.client() as client:
        info = client.call("models.info", {"name": model})["metadata"]
        value = client.call("texture.eval", {"model": model, "samples": 4, "repeats": 2}, timeout=120)
    assert info["warning"].startswith("short run: training stopped at 3 steps (it reached its step cap of 3)")
    assert "6000" in info["warning"] and value["warning"] == info["warning"]
    assert "warning: short run" in texture_ops.describe_result("texture.eval", value, [])


def test_atelier_train_prints_the_short_run_warning(tmp_path, capsys):
    import json

    from engine.cli.main import build_parser

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": TINY, "train": {"batch_size": 2}}))
    args = build_parser().parse_args(["train", "texture", "--images", "gravel", "--name", "short", "--config",
                                      str(config), "--minutes", "0.001", "--steps", "50",
                                      "--models-dir", str(tmp_path / "models")])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "warning: short run: training stopped at" in out and "minute time budget ran out" in out
    assert "trained on 1 image(s): grey" in out and "used skimage:gravel (512x512)" in out  # describe_data
    # the stored figures as `atelier eval` prints them, not the training losses as JSON
    assert "what `generate` makes, as `atelier eval` measures it" in out and "d_loss" not in out
    assert re.search(r"^  gram +\d+\.\d\d ± \d+\.\d\d +ideal 1 +(good|fair|off)", out, re.M), out


def test_verdicts():
    from engine.texture.evaluation import verdict

    assert verdict("gram", 1.2).startswith("good") and verdict("gram", 1.7).startswith("fair")
    assert verdict("swd", 3.35).startswith("off") and "uncertain" in verdict("gram", 1.4, se=0.2)
    assert verdict("diversity", 0.1).startswith("mode collapse") and verdict("gram", float("nan")).startswith("n/a")
    assert verdict("seam_ratio", 0.6).startswith("off") and verdict("tile_error", 1e-7).startswith("good")


def test_cli_files_and_demo(engine, model, tmp_path):
    with engine.client() as client:
        written = texture_ops.demo(client, model, tmp_path)
    assert sorted(p.name for p in written) == ["texture.png", "texture_height.png", "texture_normal.png",
                                               "texture_roughness.png"]
    from PIL import Image

    assert Image.open(tmp_path / "texture.png").size == (512, 512)
    assert Image.open(tmp_path / "texture_normal.png").mode == "RGB"


def test_unknown_model_and_wrong_kind(engine, model):
    with pytest.raises(EngineError) as caught:
        generate(engine, model="no-such-texture")
    assert caught.value.code == "not_found"


def test_exemplar_and_morph_to_over_the_engine_and_the_cli(engine, model):
    with engine.client() as client:
        plain = client.call("texture.generate", {"model": model, "width": 64, "height": 32, "seed": 2}, timeout=60)
        first = client.call("texture.generate", {"model": model, "width": 64, "height": 32, "seed": 2, "exemplar": 0},
                            timeout=60)
        assert np.array_equal(plain["image"], first["image"])  # one exemplar: 0 is the only one
        morphed = client.call("texture.generate", {"model": model, "width": 64, "height": 32, "morph_to": 0},
                              timeout=60)
        assert morphed["image"].shape == (32, 64, 1)
        for op, params in (("texture.generate", {"exemplar": 1}), ("texture.morph", {"morph_to": 3})):
            with pytest.raises(EngineError) as caught:
                client.call(op, {"model": model, "width": 64, "height": 32, **params}, timeout=60)
            assert caught.value.code == "bad_params" and "trained on 1 exemplar" in caught.value.message
    from engine.cli.main import build_parser

    args = build_parser().parse_args(["generate", "texture", "--model", model, "--exemplar", "1", "--morph-to", "0"])
    assert (args.exemplar, args.morph_to) == (1, 0)


def test_training_on_pixels_sent_by_a_client(engine):
    """A client that is not on the engine's disk (the Blender add-on) sends pixels, not a path."""
    rng = np.random.default_rng(0)
    stripes = (np.sin(np.arange(64) / 3)[:, None] * 100 + 128 + rng.normal(0, 10, (64, 64))).clip(0, 255)
    sent = [{"name": "Stripes.png", "pixels": stripes.astype(np.uint8)}]
    with engine.client() as client:
        result = client.call("train", {"kind": "texture", "name": "sent-stripes", "data": {"image_arrays": sent},
                                       "model": TINY, "train": {"steps": 2, "batch_size": 2}}, timeout=120)
        assert result["step"] == 2
        info = client.call("models.info", {"name": "sent-stripes"})["metadata"]
        assert [image["path"] for image in info["data"]["images"]] == ["Stripes.png"]
        # the result says what training found and a short run's warning, as the model's metadata has them
        assert result["notes"] == info["data"]["notes"] and any("repeats" in n for n in result["notes"])
        assert result["warning"] == info["warning"] and "short run" in result["warning"]
        with pytest.raises(EngineError) as caught:
            client.call("train", {"kind": "texture", "name": "bad", "data": {"image_arrays": [{"pixels": "x"}]},
                                  "model": TINY, "train": {"steps": 1}}, timeout=60)
        assert caught.value.code == "bad_params" and "uint8" in caught.value.message


def test_a_flat_colour_exemplar_trains_and_its_undefined_metrics_are_null(engine):
    """Its halves look exactly alike, so the real-vs-real yardstick is 0: no ratio, not a crash."""
    flat = [{"name": "grey", "pixels": np.full((64, 64), 128, np.uint8)}]
    with engine.client() as client:
        result = client.call("train", {"kind": "texture", "name": "flat", "data": {"image_arrays": flat},
                                       "model": TINY, "train": {"steps": 1, "batch_size": 2}}, timeout=120)
    assert result["step"] == 1 and result["metrics"]["gram"] is None and result["metrics"]["tile_error"] < 1e-5

