"""Calibration: measured after training, applied to what the model makes, still tileable."""
import dataclasses

import numpy as np
import pytest
import torch

from engine.texture.calibration import (
    BOOST,
    CUT,
    LARGE_SIZE,
    ORIENTATIONS,
    ORIENTED_REACH,
    SIZE,
    apply_colour_mix,
    apply_gain,
    apply_tone,
    calibrate,
    calibration_crops,
    code_moments,
    image_moments,
    match_moments,
    measure,
    measurement_size,
    noise_field,
)
from engine.texture.evaluation import power_spectrum, real_sets, spectrum_distance
from engine.texture.generation import TextureModel, morph_weights
from engine.texture.images import ImageCrops, procedural
from engine.texture.lattice import apply_lattice_filter
from engine.texture.model import Generator, TextureGANConfig
from engine.texture.objective import TextureObjective

TINY = TextureGANConfig(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
                        n_local=4, n_global=8, n_periodic=2, channels=1)
CALIBRATION = ("image_moments", "spectrum_gain", "colour_mix", "cell_tint", "field_gain", "tone_curve",
               "lattice_filter", "orientation_gain")


def test_gain_commutes_with_tiling_and_zero_gain_is_identity():
    x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.6
    gain = list(np.linspace(0.5, -0.3, 20))
    tiled = apply_gain(x.repeat(1, 1, 2, 3), gain)
    assert (tiled - apply_gain(x, gain).repeat(1, 1, 2, 3)).abs().max() < 1e-5
    assert (apply_gain(x, [0.0] * 12) - x).abs().max() < 1e-5
    assert not torch.allclose(apply_gain(x, gain), x, atol=1e-3)
    assert torch.allclose(apply_gain(x, gain).mean((2, 3)), x.mean((2, 3)), atol=1e-5)  # clamp aside, mean kept
    # a gain per direction too: the tiled picture's coefficients lie at the small one's frequencies and angles
    oriented = np.random.default_rng(0).uniform(-0.5, 0.5, (3, ORIENTATIONS, 20)).tolist()
    tiled = apply_gain(x.repeat(1, 1, 2, 3), gain, oriented=oriented)
    assert (tiled - apply_gain(x, gain, oriented=oriented).repeat(1, 1, 2, 3)).abs().max() < 1e-5
    assert not torch.allclose(apply_gain(x, gain, oriented=oriented), apply_gain(x, gain), atol=1e-3)


def test_the_gain_per_direction_evens_out_the_generators_own_directions():
    # A photo without a direction is trained on turned crops; whatever direction the pictures still
    # have is the generator's own (sand's had 2-3x more fine power one way). The gain per direction
    # takes each direction's power to the photo's.
    from scipy.ndimage import gaussian_filter

    from engine.texture.evaluation import oriented_power

    torch.manual_seed(0)
    grain = gaussian_filter(np.random.default_rng(3).standard_normal((128, 128)), 1.0, mode="wrap")
    # faint, so that the radial gain leaves the directions room below its clip
    exemplar = (0.3 * grain / np.abs(grain).max())[..., None].astype(np.float32)
    obj = TextureObjective(dataclasses.replace(TINY, upsample="nearest"), [exemplar], seed=0)
    config = obj.export_config()
    assert np.asarray(config.orientation_gain).shape == (1, ORIENTATIONS, 64)
    assert np.abs(config.orientation_gain).max() <= ORIENTED_REACH
    real = torch.cat(real_sets([exemplar], 64, 16))

    def unevenness(config) -> float:  # how far each direction's fine power is from the photo's, beyond the radius'
        model = TextureModel(config, obj.nets["G_ema"])
        x = torch.from_numpy(np.stack([model.generate(64, 64, seed=s) for s in range(16)])).permute(0, 3, 1, 2)
        fine = slice(4, 16)  # wavelengths of 16 down to 4 px at 64 px (finer, 8-bit rounding outweighs this photo)
        miss = torch.log10(oriented_power(x / 127.5 - 1, ORIENTATIONS) / oriented_power(real, ORIENTATIONS))[0, :, fine]
        return float((miss - miss.mean(0)).abs().mean())

    without = unevenness(dataclasses.replace(config, orientation_gain=None))
    assert without > 0.1  # a fresh generator's own directions
    # (measured 0.13 against 0.23: a fresh generator's directions differ up to 100x in power, beyond the reach)
    assert unevenness(config) < 0.7 * without


def test_a_photo_with_a_direction_or_large_shapes_gets_no_gain_per_direction():
    # Trained on unturned crops, the generator draws the direction with its structure; a gain per direction
    # amplified whatever it drew (planks: slanted blotches from some codes, passed as grain). Shapes larger
    # than the discriminator's view are lost, and their lines' directions were drawn as streaks (marble).
    from scipy.ndimage import gaussian_filter

    noise = np.random.default_rng(3).standard_normal((128, 128))
    plain, drawn_out, broad = (gaussian_filter(noise, sigma, mode="wrap") for sigma in (1.0, (1.0, 1.5), 8.0))
    torch.manual_seed(0)
    G = Generator(TINY)
    oriented = lambda a: measure(G, [(0.8 * a / np.abs(a).max())[..., None].astype(np.float32)], n=8, rounds=1,
                                 lattice=False, tints=False)["orientation_gain"]  # noqa: E731
    assert oriented(plain)
    assert oriented(drawn_out) is None
    assert oriented(broad) is None


def test_each_channel_gets_its_own_gain(tmp_path):
    # a rough colour (white noise) and a smooth height map, as a PBR set has them: one gain for
    # both left the height map as rough as the colour
    from PIL import Image

    torch.manual_seed(0)
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (128, 128), dtype=np.uint8)).save(tmp_path / "m_Color.png")
    smooth = np.round(procedural("blobs", 128, seed=2, channels=1)[..., 0] * 255).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "m_Displacement.png")
    obj = TextureObjective(TINY, str(tmp_path), seed=0)
    assert obj.config.maps == ("height",)
    G = obj.nets["G_ema"]
    with torch.no_grad():  # pixel noise in both channels, as a briefly trained generator makes
        G.out_noise.copy_(0.1 * torch.randn(G.out_noise.shape, generator=torch.Generator().manual_seed(0)))
    config = dataclasses.replace(obj.config, **measure(G, obj.images, n=16, rounds=1))
    gain = np.array(config.spectrum_gain)
    assert gain.shape == (2, 64) and gain[1, 32:].mean() < gain[0, 32:].mean() - 0.3
    shared = dataclasses.replace(config, spectrum_gain=gain.mean(0).tolist())  # as models saved before
    real = ImageCrops(obj.images, 64, flips=False, rot90=False, seed=3).batch(np.arange(16))

    def height_error(cfg: TextureGANConfig) -> float:
        model = TextureModel(cfg, G)
        height = np.stack([model.generate_maps(64, 64, seed=s)["height"] for s in range(16)])
        return spectrum_distance(torch.from_numpy(height)[:, None] / 127.5 - 1, real[:, 1:])

    assert height_error(config) < 0.7 * height_error(shared)


def test_gain_made_while_generating_serves_training_too():
    # generation runs under inference_mode and the gain's table is cached per size: the cached
    # table must still serve a pass that autograd records
    x = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.6
    gain = [0.3, -0.2, 0.1]
    with torch.inference_mode():
        made = apply_gain(x, gain)
    leaf = x.clone().requires_grad_(True)
    again = apply_gain(leaf, gain)
    again.sum().backward()
    assert torch.equal(made, again.detach()) and leaf.grad is not None


def test_a_large_set_keeps_every_channel_groups_gain_table(monkeypatch):
    """Above generation.LARGE a set is calibrated a channel group at a time, each group with its own
    gain tables: all of them are kept, so the next picture of that size builds none (a set's five
    groups at 2048² emptied a cache of four tables in turn, rebuilding each every time)."""
    from engine.texture import calibration, generation

    maps = ("normal", "roughness", "height", "ao")
    config = dataclasses.replace(TINY, maps=maps)
    rows = np.linspace(-0.2, 0.3, config.out_channels)[:, None] + np.zeros((1, 16))
    model = TextureModel(dataclasses.replace(config, spectrum_gain=rows.tolist()), Generator(config))
    monkeypatch.setattr(generation, "LARGE", 0)
    monkeypatch.setattr(calibration, "_AMPLITUDES", {})
    built, make = [], calibration._radial_table
    monkeypatch.setattr(calibration, "_radial_table", lambda *args, **kw: built.append(args) or make(*args, **kw))
    first = model.generate_maps(64, 64, seed=1)
    assert len(calibration._AMPLITUDES) == 5, "the normal's, the grey's and each other map's"
    built.clear()
    again = model.generate_maps(64, 64, seed=1)
    assert not built and all(np.array_equal(first[k], again[k]) for k in first)


def test_noise_field_is_smooth_band_limited_and_tiles():
    z = torch.randn(2, 5, 6, 4, generator=torch.Generator().manual_seed(1))
    amplitude = [list(np.linspace(2.0, 0.0, 16)), [1.0] * 16]  # two channels
    field = noise_field(z, amplitude, stride=8)
    assert field.shape == (2, 2, 48, 32)
    assert (noise_field(z.repeat(1, 1, 3, 2), amplitude, 8) - field.repeat(1, 1, 3, 2)).abs().max() < 1e-5
    assert field.mean((2, 3)).abs().max() < 1e-5  # no change of the mean
    assert field[:, 0].std() > 0.01 and not torch.allclose(field[:, 0], field[:, 1], atol=1e-3)
    spectrum = torch.fft.rfft2(field).abs()
    fy = torch.fft.fftfreq(48)[:, None].abs()
    fx = torch.fft.rfftfreq(32)[None]
    assert spectrum[..., (fy ** 2 + fx ** 2).sqrt() >= 0.5 / 8].max() < 1e-3  # nothing at the cell grid's scale
    # amplitude 1 everywhere is the band-limited interpolation: it passes through the cells' values
    # (up to the 1 - pi/4 of white noise's power the cut at their Nyquist frequency removes) and
    # only the first channel counts
    cells = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    at_cells = noise_field(cells, [[1.0] * 16], stride=4)[:, :, ::4, ::4]
    assert 0.7 < float((at_cells * cells).sum() / cells.pow(2).sum()) < 0.9
    plain = noise_field(z, [[1.0] * 16], stride=8)
    z[:, 1:] = 0
    assert torch.equal(noise_field(z, [[1.0] * 16], stride=8), plain)
    assert noise_field(z, [[0.0] * 16], 8).abs().max() == 0


def test_noise_field_in_pieces_is_the_one_pass_field():
    # with a check (large pictures) the field's inverse transform runs in pieces over the whole
    # spectrum; without, along the height only over the columns that are not zero
    z = torch.randn(1, 3, 8, 6, generator=torch.Generator().manual_seed(3))
    amplitude = [list(np.linspace(1.5, 0.2, 16)), [0.5] * 16]
    calls = []
    pieces = noise_field(z, amplitude, 16, check=lambda: calls.append(1))
    assert calls and (noise_field(z, amplitude, 16) - pieces).abs().max() < 1e-6


def test_tone_curve_maps_each_channel_and_identity_is_identity():
    x = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    levels = np.linspace(-1, 1, 9)
    assert (apply_tone(x, [levels, levels]) - x).abs().max() < 1e-6
    squared = apply_tone(x, [levels, np.sign(levels) * levels ** 2])
    assert torch.equal(squared[:, 0], x[:, 0])
    # piecewise linear between the levels: exact at them, a chord in between
    assert torch.allclose(apply_tone(torch.tensor(levels).view(1, 1, 1, 9), [levels ** 3]).flatten(),
                          torch.tensor(levels ** 3), atol=1e-6)
    assert (squared[:, 1] - x[:, 1].sign() * x[:, 1] ** 2).abs().max() <= 0.25 ** 2 / 4 + 1e-6


def test_moments_are_moved_to_the_target_and_a_morph_may_vary_them_across_the_width():
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(3, 2, 24, 40, generator=g) - 0.5) * torch.tensor([0.2, 1.0, 0.6]).view(3, 1, 1, 1) \
        + torch.tensor([-0.3, 0.0, 0.2]).view(3, 1, 1, 1)  # three pictures of different tone
    target = [[0.1, 0.2, 0.0], [-0.2, 0.3, 0.0]]
    matched = match_moments(x, image_moments(x), target)
    assert torch.allclose(matched.mean((2, 3)), torch.tensor([0.1, -0.2]).expand(3, 2), atol=1e-5)
    assert torch.allclose(matched.std((2, 3), correction=0), torch.tensor([0.2, 0.3]).expand(3, 2), atol=1e-5)
    half = match_moments(x, image_moments(x), [[0.1, 0.2, 0.5], [-0.2, 0.3, 0.5]])  # keeping half the mean's offset
    assert torch.allclose(half.mean((2, 3)), (matched.mean((2, 3)) + x.mean((2, 3))) / 2, atol=1e-5)
    columns = (torch.zeros(1, 1, 1, 40), torch.linspace(0.5, 1.5, 40).view(1, 1, 1, 40))  # per-column moments
    assert torch.allclose(match_moments(x, columns, [[0.0, 0.5, 0.0]] * 2), (x / columns[1] * 0.5).clamp(-1, 1), atol=1e-6)


@pytest.mark.parametrize("tileable", [True, False])
def test_a_morph_blends_its_tone_smoothly_across_cell_borders(tileable):
    per_cell, per_pixel = morph_weights(8, 16, tileable)
    assert torch.allclose(per_pixel.view(8, 16).mean(1), per_cell, atol=0.03)  # the same curve
    steps = per_pixel - per_pixel.roll(1) if tileable else per_pixel.diff()  # (tileable: across the wrap too)
    assert steps.abs().max() <= 1.2 * per_cell.diff().abs().max() / 16  # spread over the cell, not at its border
    if not tileable:
        assert per_pixel[0] == 0 and per_pixel[-1] == 1 and (steps >= 0).all()


def test_code_moments_depend_on_the_code_alone():
    G = TextureObjective(TINY, [procedural("blobs", 96, seed=1, channels=1)], seed=0).nets["G_ema"].eval()
    _, z_global, phase = G.sample_noise(3, 32, 32, torch.Generator().manual_seed(4))
    mean, std = code_moments(G, z_global, phase)
    assert mean.shape == std.shape == (3, 1, 1, 1) and len(set(mean.flatten().tolist())) == 3  # codes differ in tone
    again = code_moments(G, z_global[1:2], phase[1:2])  # the same for a code alone as in a batch
    assert torch.allclose(again[0], mean[1:2], atol=1e-6) and torch.allclose(again[1], std[1:2], atol=1e-6)


def test_seeds_vary_in_tone_as_much_as_the_photos_crops_do():
    torch.manual_seed(0)
    exemplar = procedural("blobs", 512, seed=2, channels=1)
    obj = TextureObjective(TINY, [exemplar], seed=0)  # untrained: its seeds differ wildly in tone
    config = dataclasses.replace(obj.export_config(), field_gain=None)  # (the field varies each picture's contrast on purpose)
    with_moments = TextureModel(config, obj.nets["G_ema"])
    without = TextureModel(dataclasses.replace(config, image_moments=None), obj.nets["G_ema"])

    def tone_spread(model) -> float:  # across seeds at the measurement size: how much the pictures' means vary
        return np.stack([model.generate(256, 256, seed=s) for s in range(100, 132)]).mean((1, 2, 3)).std() / 127.5

    crops = ImageCrops([exemplar], 256, flips=False, rot90=False, fair_edges=True, seed=9).batch(np.arange(64))
    photo = float(crops.mean((1, 2, 3)).std())
    assert 0 < config.image_moments[0][2] < 1  # keeps part of its codes' offsets
    spread_with, spread_without = tone_spread(with_moments), tone_spread(without)
    # (measured 0.73x and 2.5x the photo's; over initial weights 0-4, 0.68-0.82x and 1.8-6.4x)
    assert 0.5 * photo < spread_with < 1.25 * photo and spread_without > 1.5 * photo
    two = TextureObjective(TINY, [exemplar, procedural("waves", 128, seed=2, channels=1)], seed=0)
    assert measure(two.nets["G_ema"], two.images, n=4)["image_moments"] is None  # exemplars keep their own tones


def test_a_larger_picture_keeps_less_of_its_codes_tone(monkeypatch):
    # a photo's mean over a region 4x as wide varies about 4x less than over one crop: a picture
    # of 128^2 takes a quarter of the offset a 32^2 one keeps (measured at 32^2 here)
    from engine.texture import calibration
    monkeypatch.setattr(calibration, "SIZE", 32)
    obj = TextureObjective(TINY, [procedural("blobs", 128, seed=2, channels=1)], seed=0)  # untrained: tones apart
    config = obj.export_config()
    config = dataclasses.replace(config, field_gain=None, tone_curve=None, lattice_filter=None,  # linear, but clamped
                                 image_moments=[config.image_moments[0][:2] + [1.0]])
    model = TextureModel(config, obj.nets["G_ema"])

    def offsets(side: int) -> np.ndarray:  # each seed's mean, less the mean of its code's picture with none kept
        return np.array([model.generate(side, side, seed=s).mean() / 127.5 for s in range(8)])

    small, large = offsets(32), offsets(128)
    model.config = dataclasses.replace(config, calibration_size=128)  # as if measured on pictures of 128^2
    measured_large = offsets(128)
    model.config = dataclasses.replace(config, image_moments=[config.image_moments[0][:2] + [0.0]])
    small -= offsets(32)
    large -= offsets(128)
    measured_large -= offsets(128)
    assert np.abs(small).mean() > 0.02
    assert np.allclose(large, small / 4, atol=0.1 * np.abs(small).mean())
    assert np.allclose(measured_large, small, atol=0.1 * np.abs(small).mean())


def test_calibration_moves_the_output_towards_the_exemplar_and_still_tiles():
    torch.manual_seed(0)
    exemplar = procedural("blobs", 128, seed=2, channels=1)  # smooth blobs: far more low-frequency power than a fresh G
    # a fresh nearest-upsampling G, as measured: a fresh "lowpass" one is smooth already, and its
    # calibrated and gain-only spectra read alike (2.58 and 2.55)
    obj = TextureObjective(dataclasses.replace(TINY, upsample="nearest"), [exemplar], seed=0)
    config = obj.export_config()
    moments, gain, mix, tints, field, tone, lattice, oriented = (getattr(config, key) for key in CALIBRATION)
    assert mix is None and tints is None  # grey: no colours to mix; no repeat: no tiles to tint
    assert len(moments) == 1 and len(moments[0]) == 3 and moments[0][1] > 0 and 0 <= moments[0][2] <= 1
    assert len(gain) == 1 and len(gain[0]) == 64 and all(CUT <= g <= BOOST for g in gain[0]) and gain[0][0] > 0
    assert len(field) == 1 and field[0][0] > 0 and not any(field[0][8:])  # the field stays below the cells' Nyquist
    assert len(tone) == 1 and all(a <= b for a, b in zip(tone[0], tone[0][1:]))  # monotone
    assert np.asarray(lattice).shape == (2, 1, config.stride, 2)  # per axis, channel, position in a cell: 2 taps
    assert oriented is None  # blobs larger than the crops: shapes training loses get no gain per direction
    assert all(getattr(obj.config, key) is None for key in CALIBRATION)  # training untouched; only the saved config
    assert dataclasses.replace(config, **dict.fromkeys(CALIBRATION), global_codes=None) == obj.config
    raw = TextureModel(obj.config, obj.nets["G_ema"])
    calibrated = TextureModel(config, obj.nets["G_ema"])
    gain_only = TextureModel(dataclasses.replace(config, field_gain=None, tone_curve=None), obj.nets["G_ema"])
    real, _ = real_sets([exemplar], 64, 8)

    def samples(model, size=64, n=8):
        images = np.stack([model.generate(size, size, seed=s) for s in range(n)])
        return torch.from_numpy(images).permute(0, 3, 1, 2) / 127.5 - 1

    # (measured 2.45, 2.25 and 4.51; with cuts clipped at -0.5 like boosts, 3.95, 4.09 and 4.51.
    # Above ~8 px this float exemplar has less power than 8-bit rounding leaves in any generated
    # picture, so there the distance is the rounding's, which the field and curve cannot order)
    assert spectrum_distance(samples(calibrated), real) < 0.7 * spectrum_distance(samples(raw), real)
    assert spectrum_distance(samples(gain_only), real) < 0.7 * spectrum_distance(samples(raw), real)
    low = slice(0, 4)  # wavelengths of 64 down to 16 px: where the clip left power out and the field adds it
    assert (power_spectrum(samples(calibrated))[low] - power_spectrum(real)[low]).abs().mean() \
        < (power_spectrum(samples(gain_only))[low] - power_spectrum(real)[low]).abs().mean()
    levels = np.linspace(0.05, 0.95, 19)
    histogram_gap = lambda model: np.abs(np.quantile(samples(model, 128, 48), levels) - np.quantile(exemplar, levels)).mean()
    assert histogram_gap(calibrated) < 0.5 * histogram_gap(raw)  # (many samples: an untrained G's vary a lot)
    a = calibrated.generate(32, 32, seed=3)
    z_local, z_global, phase = calibrated._noise(32, 32, 3)  # the same noise, tiled 2x2: the image tiles
    big = calibrated._picture(calibrated.G.noise(z_local, z_global, phase).repeat(1, 1, 2, 2), 64, 64,
                            lambda: code_moments(calibrated.G, z_global, phase))
    assert np.abs(np.tile(a, (2, 2, 1)).astype(int) - big["image"].astype(int)).max() <= 1  # uint8 rounding
    assert dataclasses.asdict(config) == dataclasses.asdict(dataclasses.replace(  # deterministic (the kept
        obj.config, **measure(obj.nets["G_ema"], [exemplar]), global_codes=config.global_codes))  # codes: test_screening)


def test_calibrating_in_one_spectrum_is_the_steps_one_after_the_other():
    # tone, gain and field are applied together in the picture's spectrum: where no clamp between
    # the steps bites, that is the five steps in turn
    torch.manual_seed(0)
    obj = TextureObjective(dataclasses.replace(TINY, channels=3), [procedural("bricks", 128, seed=2)], seed=0)
    G = obj.nets["G_ema"]
    config = dataclasses.replace(obj.config, **measure(G, obj.images, n=16, rounds=1))
    quieter = [[mean / 2, deviation / 2, keep] for mean, deviation, keep in config.image_moments]
    config = dataclasses.replace(config, image_moments=quieter)  # so that no clamp between the steps bites
    z_local, z_global, phase = G.sample_noise(2, 64, 64, torch.Generator().manual_seed(4))
    with torch.no_grad():
        z = G.noise(z_local, z_global, phase)
        x = G.synthesize(z)
        moments = code_moments(G, z_global, phase)
        toned = match_moments(x, moments, config.image_moments)
        gained = apply_colour_mix(apply_gain(toned, config.spectrum_gain, oriented=config.orientation_gain),
                                  config.colour_mix)
        fielded = gained + noise_field(z, config.field_gain, config.stride)
        steps = apply_lattice_filter(apply_tone(fielded, config.tone_curve), config.lattice_filter)
        together = calibrate(x, z, config, moments)
    assert max(t.abs().max() for t in (toned, gained, fielded)) < 1
    assert (together - steps.clamp(-1, 1)).abs().max() < 1e-4  # a picture ends inside [-1, 1]


def test_measuring_again_after_the_tone_curve_brings_the_spectrum_closer():
    exemplar = procedural("waves", 128, seed=2, channels=1)  # (blobs: quantisation noise swamps the spectrum)
    # measured on the nearest-upsampling generator (an untrained "lowpass" one, much smoother, reads 1.26
    # against 1.23 after one round: there the rounds neither help nor harm)
    obj = TextureObjective(dataclasses.replace(TINY, upsample="nearest"), [exemplar], seed=0)
    target = ImageCrops([exemplar], 128, flips=False, rot90=False, fair_edges=True, seed=9).batch(np.arange(64))

    def distance(rounds: int) -> float:  # fresh samples, not the ones measured
        model = TextureModel(dataclasses.replace(obj.config, **measure(obj.nets["G_ema"], [exemplar], rounds=rounds)),
                             obj.nets["G_ema"])
        images = np.stack([model.generate(128, 128, seed=s) for s in range(100, 132)])
        return spectrum_distance(torch.from_numpy(images).permute(0, 3, 1, 2) / 127.5 - 1, target)

    assert distance(3) < 0.8 * distance(1)


def test_the_colour_mix_gives_fine_detail_the_exemplars_colour_and_pictures_still_tile(monkeypatch):
    """A gain and a curve per channel leave how the channels move together alone: a generator's
    fine detail can be colourful where the exemplar's is grey (marble's red-green specks). The
    colour mix takes each frequency's cross-power between the channels to the exemplar's. A
    large picture, calibrated in bands, gets the same pixels."""
    from engine.texture import calibration, generation

    tint = np.array([0.8, 0.5, 0.2], np.float32)
    exemplar = procedural("blobs", 128, seed=3, channels=1) * tint  # every pixel on one colour axis
    obj = TextureObjective(dataclasses.replace(TINY, channels=3), [exemplar], seed=0)
    G = obj.nets["G_ema"]
    config = dataclasses.replace(obj.config, **measure(G, [exemplar], n=16))
    assert np.asarray(config.colour_mix).shape == (64, 9)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
    halved = apply_colour_mix(x, [[0.5, 0, 0, 0, 0.5, 0, 0, 0, 0.5]] * 16)  # every frequency but the mean halved
    assert torch.allclose(halved.mean((2, 3)), x.mean((2, 3)), atol=1e-5)
    assert torch.allclose(halved - halved.mean((2, 3), keepdim=True), (x - x.mean((2, 3), keepdim=True)) / 2, atol=1e-5)
    axis = tint / np.linalg.norm(tint)

    def off_the_axis(model: TextureModel) -> float:  # the colour away from the tint's axis, each picture's mean aside
        x = np.stack([model.generate(64, 64, seed=s) for s in range(100, 108)]).astype(np.float32) / 127.5 - 1
        off = x - (x @ axis)[..., None] * axis
        return float((off - off.mean((1, 2), keepdims=True)).std())

    mixed = TextureModel(config, G)
    unmixed = off_the_axis(TextureModel(dataclasses.replace(config, colour_mix=None), G))
    assert off_the_axis(mixed) < 0.3 * unmixed, (off_the_axis(mixed), unmixed)
    a = mixed.generate(32, 32, seed=3)
    z_local, z_global, phase = mixed._noise(32, 32, 3)
    big = mixed._picture(G.noise(z_local, z_global, phase).repeat(1, 1, 2, 2), 64, 64,
                         lambda: code_moments(G, z_global, phase))
    assert np.abs(np.tile(a, (2, 2, 1)).astype(int) - big["image"].astype(int)).max() <= 1  # uint8 rounding
    whole = mixed.generate(96, 64, seed=5)
    monkeypatch.setattr(generation, "LARGE", 0)
    monkeypatch.setattr(calibration, "CHUNK", 2000)  # several bands of rows
    assert np.abs(whole.astype(int) - mixed.generate(96, 64, seed=5)).max() <= 1


def test_rgb_calibration_has_one_field_and_curve_per_channel():
    exemplar = procedural("blobs", 96, seed=3, channels=3)
    obj = TextureObjective(dataclasses.replace(TINY, channels=3), [exemplar], seed=0)
    calibration = measure(obj.nets["G_ema"], [exemplar], n=4)
    assert len(calibration["field_gain"]) == 3 and len(calibration["tone_curve"]) == 3
    assert calibration["tone_curve"][0] != calibration["tone_curve"][2]  # the channels differ
    model = TextureModel(dataclasses.replace(obj.config, **calibration), obj.nets["G_ema"])
    assert model.generate(64, 32, seed=0).shape == (32, 64, 3)


def test_resuming_with_other_model_settings_says_what_to_do(tmp_path):
    from engine.store.checkpoints import ModelStore
    from engine.train.config import TrainConfig
    from engine.train.trainer import TrainRun, train

    store = ModelStore(tmp_path, builtin=None)
    exemplar = [procedural("blobs", 96, seed=1, channels=1)]
    cfg = TrainConfig(steps=2, batch_size=2, log_every=1, checkpoint_every=1)
    train(TextureObjective(TINY, exemplar, seed=0), cfg, TrainRun(store, "t", "texture", torch.device("cpu")))
    other = TextureObjective(dataclasses.replace(TINY, g_head_layers=2), exemplar, seed=0)
    with pytest.raises(ValueError, match="checkpointed with other model settings"):
        train(other, dataclasses.replace(cfg, steps=4), TrainRun(store, "t", "texture", torch.device("cpu"), resume=True))


def test_trained_model_carries_its_calibration(tmp_path):
    from engine.store.checkpoints import ModelStore
    from engine.texture.generation import load
    from engine.train.config import TrainConfig
    from engine.train.trainer import TrainRun, train

    torch.manual_seed(0)  # (some initial weights leave no long waves for the field to add)
    store = ModelStore(tmp_path, builtin=None)
    obj = TextureObjective(TINY, [procedural("blobs", 96, seed=1, channels=1)], seed=0)
    train(obj, TrainConfig(steps=2, batch_size=2, log_every=1), TrainRun(store, "t", "texture", torch.device("cpu")))
    metadata, weights = store.load("t")
    stored = {key: metadata["config"][key] for key in CALIBRATION}
    assert [len(row) for row in stored["spectrum_gain"]] == [48]
    measured = measure(obj.nets["G_ema"], obj.images)
    assert {**stored, "calibration_size": metadata["config"]["calibration_size"]} == measured
    model = load(metadata["config"], weights)
    assert {key: getattr(model.config, key) for key in CALIBRATION} == stored
    assert stored["colour_mix"] is None  # grey
    for dropped in (key for key in CALIBRATION if stored[key] is not None):  # each part changes the picture
        without = TextureModel(dataclasses.replace(model.config, **{dropped: None}), model.G)
        assert not np.array_equal(model.generate(32, 32, seed=1), without.generate(32, 32, seed=1)), dropped


def test_checkpoints_while_training_get_the_quick_calibration(tmp_path):
    from engine.store.checkpoints import ModelStore
    from engine.train.config import TrainConfig
    from engine.train.trainer import TrainRun, train

    class Stop(Exception):
        pass

    calls = []

    def stop_at_the_third_step():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    store = ModelStore(tmp_path, builtin=None)
    obj = TextureObjective(TINY, [procedural("blobs", 96, seed=1, channels=1)], seed=0)
    with pytest.raises(Stop):  # a cancelled run keeps the model of its last checkpoint
        train(obj, TrainConfig(steps=5, batch_size=2, log_every=1), TrainRun(store, "t", "texture", torch.device("cpu")),
              check=stop_at_the_third_step)
    metadata, _ = store.load("t")
    assert metadata["step"] == 2
    quick = measure(obj.nets["G_ema"], obj.images, n=16, rounds=1, lattice=False)
    assert metadata["config"]["lattice_filter"] is None  # the final calibration's alone
    assert {key: metadata["config"][key] for key in (*CALIBRATION, "calibration_size") if key in quick} == quick \
        != measure(obj.nets["G_ema"], obj.images)


def test_models_saved_before_the_field_curve_and_lattice_filter_load_and_generate():
    from engine.texture.generation import load

    obj = TextureObjective(TINY, [procedural("blobs", 96, seed=1, channels=1)], seed=0)
    old = dataclasses.asdict(dataclasses.replace(obj.config, spectrum_gain=[0.3] * 48))
    del old["image_moments"], old["field_gain"], old["tone_curve"], old["lattice_filter"]
    weights = {"G_ema." + k: v for k, v in obj.nets["G_ema"].state_dict().items()}
    model = load(old, weights)
    assert model.config.image_moments is None and model.config.field_gain is None and model.config.tone_curve is None
    assert model.config.lattice_filter is None
    assert model.generate(32, 32, seed=0).shape == (32, 32, 1)


def _grain_photo(seed: int, frame: float = 1.0) -> np.ndarray:
    """A 512 px grey photo of fine grain, its bottom half 10 % more contrasty than its top (halves are
    never quite alike), and a 96 px frame at `frame` times the contrast."""
    from scipy.ndimage import gaussian_filter

    grain = gaussian_filter(np.random.default_rng(seed).normal(size=(512, 512)), 1.0, mode="wrap")
    contrast = np.full((512, 512), frame)
    contrast[96:-96, 96:-96] = 1.0
    contrast *= np.where(np.arange(512) < 256, 0.9, 1.0)[:, None]
    return (grain / grain.std() * 0.25 * contrast)[..., None].astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_crops_are_border_fair_unless_the_border_is_unlike_the_middle(seed):
    plain, framed = _grain_photo(seed), _grain_photo(seed, frame=0.25)  # the frame: a vignette
    fair = ImageCrops([plain], 128, flips=False, rot90=False, fair_edges=True, seed=3).batch(np.arange(64))
    assert torch.equal(calibration_crops([plain], 128, 32, seed=3), fair)
    assert torch.equal(calibration_crops([framed], 128, 32, seed=3), torch.cat(real_sets([framed], 128, 32, seed=3)))


def _smooth_field(side: int, sigma: float, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).normal(size=(side, side)), sigma, mode="wrap")
    return field / field.std()


def test_a_large_photo_of_large_shapes_is_calibrated_on_larger_pictures():
    broad = ((0.2 * _smooth_field(1024, 80, 0) + 0.05 * _smooth_field(1024, 1, 1))[..., None]).astype(np.float32)
    fine = (0.25 * _smooth_field(1024, 1.5, 2))[..., None].astype(np.float32)
    config = TextureGANConfig(channels=1)
    assert measurement_size([broad], config) == LARGE_SIZE
    assert measurement_size([fine], config) == SIZE  # no long waves
    assert measurement_size([broad[:768, :768]], config) == SIZE  # too small for LARGE_SIZE crops from each half
    assert measurement_size([broad], dataclasses.replace(config, repeat_waves=[[0.0, 0.01]])) == SIZE  # repeats
    G = Generator(TINY).eval()
    calibrated = measure(G, [broad], n=8, rounds=1, lattice=False)
    assert calibrated["calibration_size"] == LARGE_SIZE
    assert len(calibrated["spectrum_gain"][0]) == LARGE_SIZE // 2  # one gain per radius of a 512 px picture
    assert measure(G, [fine], n=8, rounds=1, lattice=False)["calibration_size"] == SIZE


def test_training_reserves_time_for_the_larger_calibration():
    from engine.texture.objective import LARGE_CALIBRATION_STEPS

    broad = ((0.2 * _smooth_field(1024, 80, 0) + 0.05 * _smooth_field(1024, 1, 1))[..., None]).astype(np.float32)
    fine = (0.25 * _smooth_field(1024, 1.5, 2))[..., None].astype(np.float32)
    config = dataclasses.replace(TINY, downscale=1)
    large, plain = (TextureObjective(config, [photo], seed=0) for photo in (broad, fine))
    assert large.finish_steps == plain.finish_steps + LARGE_CALIBRATION_STEPS
