"""Texture kind: the Objective contract, load() round trip, generation options, PBR maps."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from engine.ops import Cancelled
from engine.texture.generation import load, pbr_maps
from engine.texture.images import procedural
from engine.texture.model import Generator, TextureGANConfig, lattice_energy
from engine.texture.objective import TextureObjective

TINY = TextureGANConfig(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
                        n_local=4, n_global=8, n_periodic=2)


def run_steps(obj, steps, batch=4, lr=2e-3):
    opts = {g: torch.optim.Adam(p, lr=lr, betas=(0.5, 0.99)) for g, p in obj.param_groups().items()}
    logs = []
    for step in range(steps):
        b = obj.batch(torch.arange(step * batch, (step + 1) * batch, dtype=torch.int64))
        row = {}
        for group, opt in opts.items():
            opt.zero_grad(set_to_none=True)
            loss, info = obj.loss(group, b, step)
            loss.backward()
            opt.step()
            row.update(info)
        obj.after_step(step)
        logs.append(row)
    return logs


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    obj = TextureObjective(TINY, [procedural("bricks", 96, seed=0)], seed=0)
    return obj, run_steps(obj, 12)


def export(obj):
    return {f"{name}.{k}": v.detach().clone() for name in obj.export_nets
            for k, v in obj.nets[name].state_dict().items()}


def test_batch_is_pure_in_keys():
    obj = TextureObjective(TINY, procedural("waves", 64), seed=3)
    keys = torch.tensor([11, 4, 2**50], dtype=torch.int64)
    a, b = obj.batch(keys), obj.batch(keys.clone())
    assert set(a) == {"real", "z_local", "z_global", "phase", "real_field", "fake_field"}  # the waves repeat
    assert all(torch.equal(a[k], b[k]) for k in a)
    single = obj.batch(keys[2:])
    assert all(torch.equal(single[k][0], a[k][2]) for k in a)
    assert a["real"].shape == (3, 3, 32, 32)
    assert a["z_local"].shape == (3, 4 + TINY.scale_noise_channels, 4, 4)  # local noise, then each scale's packed


def test_steps_train_d_and_ema(trained):
    obj, logs = trained
    assert all(np.isfinite(v) for row in logs for v in row.values())
    assert logs[-1]["real_score"] - logs[-1]["fake_score"] > logs[0]["real_score"] - logs[0]["fake_score"]
    G, ema = obj.nets["G"], obj.nets["G_ema"]
    assert any(not torch.equal(p, e) for p, e in zip(G.parameters(), ema.parameters()))
    assert list(obj.param_groups()) == ["D", "G"]
    with pytest.raises(ValueError, match="unknown parameter group"):
        obj.loss("model", obj.batch(torch.arange(2)), 0)
    preview = obj.preview()
    assert preview.dtype == np.uint8 and preview.ndim == 3 and preview.shape[2] == 3
    metrics = obj.evaluate()
    assert metrics["tile_error"] < 1e-5 and all(np.isfinite(v) for v in metrics.values())



def _g_grads(obj, batch, step):
    for p in obj.nets["G"].parameters():
        p.grad = None
    loss, _ = obj.loss("G", batch, step)
    loss.backward()
    return [p.grad.clone() for p in obj.nets["G"].parameters()]


def test_g_step_reuses_the_d_steps_fakes_with_the_same_gradients():
    torch.manual_seed(0)
    obj = TextureObjective(TINY, [procedural("bricks", 96, seed=0)], seed=0)
    run_steps(obj, 2)
    D = obj.nets["D"]
    d_opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    batch = obj.batch(torch.arange(4, dtype=torch.int64))
    for p in obj.nets["G"].parameters():
        p.grad = None
    d_loss, _ = obj.loss("D", batch, 5)
    d_loss.backward()
    assert all(p.grad is None for p in obj.nets["G"].parameters())  # D's loss leaves G alone
    d_opt.step()
    d_opt.zero_grad(set_to_none=True)
    reused = _g_grads(obj, batch, 5)
    # D got no gradient from G's loss, and trains again afterwards
    assert all(p.grad is None and p.requires_grad for p in D.parameters())
    fresh = _g_grads(obj, batch, 5)  # no D step before it: G runs afresh, against the same (updated) D
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(reused, fresh))
    assert any(a.abs().sum() > 0 for a in reused)


def test_the_discriminator_judges_whitened_crops():
    """A set's faint colour and its strong maps reach D more alike: the directions of the exemplar's
    channel space it uses nearer unit variance; real and fake crops through the same transform.
    A colour photo alone reaches D as it is."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    colour = procedural("bricks", 96, seed=0)
    faint_tint = 0.05 * rng.standard_normal((96, 96, 1)).astype(np.float32)
    strong_map = np.clip(3 * colour[..., :1], -1, 1)  # correlated with the colour, 10x its tint
    images = {"rock_Color": np.clip(colour + faint_tint * [1, -1, 0], -1, 1), "rock_Height": strong_map[..., 0]}
    # (without the bricks' repeat, whose field D also sees: tests/texture/test_repeats.py)
    obj = TextureObjective(dataclasses.replace(TINY, channels=0, repeat_waves=[]), images, seed=0)
    assert obj.config.maps == ("height",)
    raw = torch.from_numpy(obj.images[0]).permute(2, 0, 1)[None]
    seen = obj._whitened(raw)

    def spread(x):  # variances along the principal directions, and the tint's against the map's
        return torch.linalg.eigvalsh(torch.cov(x.reshape(4, -1))), float((x[0, 0] - x[0, 1]).var() / x[0, 3].var())

    (raw_variances, raw_tint), (seen_variances, seen_tint) = spread(raw), spread(seen)
    assert raw_variances[3] / raw_variances[1] > 50 and seen_variances[3] / seen_variances[1] < 10
    assert seen_tint > 4 * raw_tint and seen_variances.sum() == pytest.approx(float(raw_variances.sum()), rel=1e-3)
    assert seen_variances[0] < seen_variances[3] / 1000  # a direction the photo does not use is not blown up

    batch = obj.batch(torch.arange(4, dtype=torch.int64))
    _, logs = obj.loss("D", batch, 1)
    D, fake = obj.nets["D"], obj._fake[1].detach()
    _, g_logs = obj.loss("G", batch, 1)
    with torch.no_grad():
        judged, unwhitened = D(obj._whitened(batch["real"]))[0], D(batch["real"])[0]
        judged_fake = D(obj._whitened(fake))[0]
    assert logs["real_score"] == pytest.approx(float(judged.mean()), abs=1e-5)
    assert logs["fake_score"] == pytest.approx(float(judged_fake.mean()), abs=1e-5)
    assert g_logs["g_loss"] == pytest.approx(float(torch.nn.functional.softplus(-judged_fake).mean()), abs=1e-5)
    assert (unwhitened - judged).abs().max() > 0.01 and (D(fake)[0] - judged_fake).abs().max() > 0.01

    photo = TextureObjective(TINY, [procedural("bricks", 96, seed=0)], seed=0)
    crops = photo.batch(torch.arange(2, dtype=torch.int64))["real"]
    assert photo._whitened(crops) is crops


def test_the_lattice_penalty_takes_the_generators_grid_out():
    """G trained on the lattice penalty alone (no discriminator): the gradient energy of its crops
    becomes more alike at every position modulo the stride, as a real crop's is."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, lattice_weight=1.0, n_scale_noise=0)  # without noise the grid is strong
    obj = TextureObjective(cfg, [procedural("bricks", 96, seed=0)], seed=0)
    G = obj.nets["G"]
    opt = torch.optim.Adam(G.parameters(), lr=3e-4, betas=(0.5, 0.99))
    held_out = obj.batch(torch.arange(1000, 1008, dtype=torch.int64))

    def spread() -> float:
        with torch.no_grad():
            fake = G(held_out["z_local"], held_out["z_global"], held_out["phase"])
        return float(lattice_energy(fake, cfg.stride).log().abs().max())

    before = spread()
    for step in range(15):
        b = obj.batch(torch.arange(8 * step, 8 * step + 8, dtype=torch.int64))
        opt.zero_grad(set_to_none=True)
        obj._lattice_penalty(G(b["z_local"], b["z_global"], b["phase"]), step).backward()
        opt.step()
    assert before > 0.5  # an energy 1.6x or 0.6x the mean at some position
    assert spread() < before / 2


def test_recipes_run():
    obj = TextureObjective(TINY, [procedural("blobs", 64)])
    assert "r1" in run_steps(obj, 1)[0]  # the default recipe uses R1 on step 0, 4, 8, ...
    obj = TextureObjective(dataclasses.replace(TINY, loss="hinge", spectral_norm=True, r1_gamma=0.0),
                           [procedural("blobs", 64)])
    logs = run_steps(obj, 2)
    assert "r1" not in logs[0] and np.isfinite(logs[1]["g_loss"])


def test_folder_with_bad_files_trains_on_the_rest(tmp_path):
    good = np.round((procedural("bricks", 64, seed=1) + 1) * 127.5).astype(np.uint8)
    Image.fromarray(good).save(tmp_path / "good.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    Image.fromarray(good[:8, :8]).save(tmp_path / "tiny.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "black.png")
    obj = TextureObjective(TINY, tmp_path)
    run_steps(obj, 1)
    summary = obj.data_summary()
    assert [i["path"].split("/")[-1] for i in summary["images"]] == ["good.png"]
    reasons = {s["path"].split("/")[-1]: s["reason"].split(":")[0] for s in summary["skipped"]}
    assert reasons == {"corrupt.jpg": "unreadable", "tiny.png": "too small", "black.png": "constant image (no texture to learn)"}


def test_a_picture_smaller_than_the_crop_trains_on_the_crops_it_gives(tmp_path):
    small = np.round((procedural("bricks", 60, seed=1) + 1) * 127.5).astype(np.uint8)
    Image.fromarray(small[:, :50]).save(tmp_path / "small.png")
    obj = TextureObjective(dataclasses.replace(TINY, crop=64), tmp_path / "small.png")
    assert obj.config.crop == 48 and obj.crops.batch(torch.arange(2)).shape[-2:] == (48, 48)
    assert any("training crops of 48 px instead of 64" in note for note in obj.report.notes)
    run_steps(obj, 1)
    with pytest.raises(ValueError, match="too small: 12x12, need at least 16 px"):  # under the discriminator's view
        Image.fromarray(small[:12, :12]).save(tmp_path / "tiny.png")
        TextureObjective(TINY, tmp_path / "tiny.png")


def test_load_round_trip_is_identical(trained, tmp_path):
    obj, _ = trained
    save_file(export(obj), tmp_path / "w.safetensors")
    config = dataclasses.asdict(obj.config)
    a = load(config, export(obj)).generate(64, 32, seed=7)
    b = load(config, load_file(tmp_path / "w.safetensors")).generate(64, 32, seed=7)
    assert a.dtype == np.uint8 and a.shape == (32, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, load(config, export(obj)).generate(64, 32, seed=8))
    with pytest.raises(ValueError, match="TextureGANConfig has no setting .colour."):
        load({**config, "colour": 1}, export(obj))
    with pytest.raises(ValueError, match="no 'G_ema"):
        load(config, {"G.head.weight": torch.zeros(1)})


def test_generation_options(trained):
    obj, _ = trained
    model = load(dataclasses.asdict(obj.config), export(obj))
    with pytest.raises(ValueError, match="multiple of the generator stride 8"):
        model.generate(30, 32)
    assert model.generate(30, 21, tileable=False).shape == (21, 30, 3)
    assert model.morph(64, 32, 1, 2).shape == (32, 64, 3)
    assert model.morph(60, 32, 1, 2, tileable=False).shape == (32, 60, 3)
    seen = []
    frames = model.animate(32, 32, 4, seed=1, progress=lambda f, msg: seen.append(f))
    assert frames.shape == (4, 32, 32, 3) and seen[-1] == 1.0 and not np.array_equal(frames[0], frames[1])

    def stop_after_two(fraction: float, message: str) -> None:
        if fraction >= 0.5:  # after the second of four frames
            raise Cancelled()

    made = []
    with pytest.raises(Cancelled):
        model.animate(32, 32, 4, progress=stop_after_two, on_frame=lambda i, frame: made.append(i))
    assert made == [0, 1]


def test_pbr_maps_tile_and_have_shapes():
    img = np.round((procedural("blobs", 64, seed=4) + 1) * 127.5).astype(np.uint8)
    maps = pbr_maps(img)
    assert maps["normal"].shape == (64, 64, 3) and maps["roughness"].shape == (64, 64)
    assert all(m.dtype == np.uint8 for m in maps.values())
    shifted = pbr_maps(np.roll(img, (9, 17), (0, 1)))  # wrap-aware filters commute with rolling
    assert np.array_equal(np.roll(maps["normal"], (9, 17), (0, 1)), shifted["normal"])
    assert maps["normal"][..., 2].min() > 127  # normals point out of the surface


def test_models_saved_before_upsample_existed_still_load(trained):
    obj, _ = trained
    old = dataclasses.replace(TINY, channels=3, upsample="pixel_shuffle")
    weights = {f"G_ema.{k}": v for k, v in Generator(old).state_dict().items()}
    config = dataclasses.asdict(old)
    del config["upsample"]  # the key was not written then
    assert load(config, weights).generate(32, 32, seed=1).shape == (32, 32, 3)
    assert obj.lr_scale == {"D": TINY.d_lr_scale}


def test_two_exemplars_each_get_their_code_and_morph_into_each_other(tmp_path):
    from engine.texture.evaluation import judging_sheet_image, seam_ratio
    from engine.texture.ops import write_output

    torch.manual_seed(0)
    light, dark = procedural("bricks", 64, seed=0), procedural("waves", 64, seed=1) * 0.5 - 0.5
    # No lattice penalty: in 40 steps at this rate, taking the untrained generator's grid out
    # would take most of them, and this is about the codes
    obj = TextureObjective(dataclasses.replace(TINY, lattice_weight=0.0), [light, dark], seed=0)
    assert obj.config.n_exemplars == 2 and obj.batch(torch.arange(4))["exemplar"].tolist() == [0, 1, 0, 1]
    run_steps(obj, 40)
    model = load(dataclasses.asdict(obj.config), export(obj))
    mean = lambda e: np.mean([model.generate(32, 32, seed=s, exemplar=e) for s in range(4)]) / 127.5 - 1
    m0, m1 = mean(0), mean(1)  # each code makes its own exemplar's (very different) brightness
    assert abs(m0 - light.mean()) < abs(m0 - dark.mean()) and abs(m1 - dark.mean()) < abs(m1 - light.mean())
    with pytest.raises(ValueError, match="trained on 2 exemplar"):
        model.generate(32, 32, exemplar=2)
    # (wide enough that its ends lie beyond the generator's reach, ~3 cells each side of a cell)
    strip = model.morph(256, 32, 5, 5, tileable=False, exemplar_a=0, exemplar_b=1)
    left, right = strip[:, :32].mean() / 127.5 - 1, strip[:, -32:].mean() / 127.5 - 1
    assert left > right + 0.2  # light on the left, dark on the right
    looped = model.morph(128, 32, 5, 5, exemplar_a=0, exemplar_b=1)  # there and back: still wraps
    assert seam_ratio(looped[None]) < 1.25 and looped[:, 56:72].mean() < looped[:, :8].mean()
    written = write_output("texture.morph", {"image": strip}, tmp_path / "morph.png")
    assert Image.open(written[0]).size == (256, 32)
    assert judging_sheet_image(model, [light, dark], size=32).shape[2] == 3


def _column_differences(image: np.ndarray) -> tuple[float, float, float]:
    """(mean |first column - last column|, mean |difference| of column pairs a quarter of the width or
    more apart, mean |difference| of neighbouring columns)."""
    x = image.astype(np.float32)
    width = x.shape[1]
    far = [(i, j) for i in range(width) for j in range(i + width // 4, width)]
    unrelated = np.mean([np.abs(x[:, i] - x[:, j]).mean() for i, j in far])
    return float(np.abs(x[:, 0] - x[:, -1]).mean()), float(unrelated), float(np.abs(np.diff(x, axis=1)).mean())


@pytest.fixture(scope="module")
def trained_without_scale_noise():
    # after 12 steps the per-pixel noise of the default makes neighbouring columns nearly as
    # different as unrelated ones (0.79x), and so does the lattice penalty (1.03x: it first roughens
    # the untrained generator's smooth in-cell copies), so a strip that wraps could not be told
    # from one that does not
    torch.manual_seed(0)
    obj = TextureObjective(dataclasses.replace(TINY, n_scale_noise=0, lattice_weight=0.0),
                           [procedural("bricks", 96, seed=0)], seed=0)
    return obj, run_steps(obj, 12)


@pytest.mark.parametrize("width", [128, 100])  # a multiple of the stride, and not
def test_a_non_tileable_strip_does_not_wrap(trained_without_scale_noise, width):
    """Its two ends differ as much as any two unrelated columns do (cropped from a larger texture,
    with a margin on every side); a tileable one's ends are neighbours."""
    obj, _ = trained_without_scale_noise
    model = load(dataclasses.asdict(obj.config), export(obj))
    ends, unrelated, _ = np.mean([_column_differences(model.generate(width, 32, seed=s, tileable=False))
                                  for s in range(8)], 0)
    assert ends > 0.75 * unrelated, (ends, unrelated)
    tiled = np.mean([_column_differences(model.generate(128, 32, seed=s)) for s in range(8)], 0)
    assert tiled[0] < 0.75 * tiled[1] and tiled[0] < 1.5 * tiled[2]  # the control: its ends are neighbours
    w, h = model.size_for(width, 32, tileable=False)
    assert w >= width + 2 * model.margin() and w % model.stride == 0 and h % model.stride == 0


def test_a_non_tileable_morph_starts_as_pure_a(trained):
    """The left end of a non-tileable morph is seed_a's texture (no b leaking in around the wrap):
    the same pixels, within a little, as a plain non-tileable texture of seed_a."""
    obj, _ = trained
    model = load(dataclasses.asdict(obj.config), export(obj))
    for seed in range(3):
        strip = model.morph(128, 32, seed, seed + 10, tileable=False).astype(np.float32)
        plain = model.generate(128, 32, seed=seed, tileable=False).astype(np.float32)
        left = np.abs(strip[:, :4] - plain[:, :4]).mean()
        assert left < 0.25 * np.abs(strip[:, -4:] - plain[:, -4:]).mean() + 1, seed


def test_n_exemplars_must_match_the_images():
    two = [procedural("bricks", 64), procedural("blobs", 64)]
    with pytest.raises(ValueError, match="n_exemplars is 3 but 2"):
        TextureObjective(dataclasses.replace(TINY, n_exemplars=3), two)
    pooled = TextureObjective(dataclasses.replace(TINY, n_exemplars=1), two)
    assert pooled.nets["G"].codes is None and "exemplar" not in pooled.batch(torch.arange(2))
