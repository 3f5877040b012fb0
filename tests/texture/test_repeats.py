"""An exemplar's repeat: found where it is, absent where it is not, and given to both nets; and its large
shapes that do not repeat: shrunk into the crops, or the user told they will be lost."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.texture.evaluation import evaluate_model, seam_ratio
from engine.texture.generation import TextureModel
from engine.texture.images import procedural
from engine.texture.model import Generator, TextureGANConfig, repeat_field
from engine.texture.objective import TextureObjective, resolve_images
from engine.texture.repeats import long_wave_share, repeat_lattice, repeat_waves

from support.repeating import bond, tiles

TINY = dict(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)


def test_tiles_repeat_at_their_period_and_noise_does_not():
    lattice = sorted(repeat_lattice(tiles(period=40.0)), key=lambda v: abs(v[0]))
    assert len(lattice) == 2
    assert np.allclose(np.abs(lattice), [[0, 40], [40, 0]], atol=0.5)
    fractional = sorted(repeat_lattice(tiles(size=512, period=512 / 12)), key=lambda v: abs(v[0]))
    assert np.allclose(np.abs(fractional), [[0, 512 / 12], [512 / 12, 0]], atol=0.2)  # refined past whole px
    rng = np.random.default_rng(0)
    assert repeat_lattice(rng.standard_normal((256, 256, 3))) == []
    assert repeat_lattice(procedural("blobs", 256, seed=1)) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_a_running_bond_repeats_on_its_staggered_lattice(seed):
    waves = np.array(repeat_waves(bond(seed=seed)))
    assert waves.shape == (2, 2)
    # every lattice vector of the bond is a whole number of periods of every wave, and the lattice
    # is no coarser than the bond's: one brick per cell
    for vector in ([0, 64], [24, 32], [24, -32], [48, 0]):
        turns = waves @ np.array(vector, float)
        assert np.allclose(turns, np.round(turns), atol=0.05), (vector, turns)
    assert np.abs(np.linalg.det(waves)) == pytest.approx(1 / (24 * 64), rel=0.05)
    # a course without the bond's shift is not a repeat
    assert not np.allclose(waves @ np.array([24.0, 0.0]), np.round(waves @ np.array([24.0, 0.0])), atol=0.05)


def test_the_real_crops_field_is_where_they_were_cut():
    objective = TextureObjective(TextureGANConfig(**TINY), [tiles(period=40.0)], seed=0)
    assert objective.config.n_repeat == 2 and objective.crops.flips is False and objective.crops.rot90 is False
    assert any("repeats" in note for note in objective.report.notes)
    batch = objective.batch(torch.arange(6))
    corners = objective.crops.corners(torch.arange(6))
    waves = torch.tensor(objective.config.repeat_waves)
    field = batch["real_field"]
    assert field.shape == (6, 4, 32, 32)
    # sin and cos of 2 pi k . (corner + position): the angle at each crop's corner, and a step of one
    # pixel turns it by 2 pi k
    angle = torch.atan2(field[:, :2], field[:, 2:])
    expected = 2 * np.pi * (corners @ waves.T)
    assert torch.allclose(torch.remainder(angle[:, :, 0, 0] - expected + np.pi, 2 * np.pi) - np.pi,
                          torch.zeros(6, 2), atol=1e-3)
    fake = batch["fake_field"]
    assert fake.shape == field.shape and not torch.allclose(fake, field)
    losses = [objective.loss(group, batch, step=0)[0] for group in ("D", "G")]
    assert all(torch.isfinite(loss) for loss in losses)
    turned = TextureObjective(TextureGANConfig(**TINY), [tiles(period=40.0)], rot90=True, seed=0)
    assert turned.config.n_repeat == 0 and turned.crops.rot90 is True  # turns asked for: no repeat to turn


def test_exemplars_that_do_not_repeat_train_as_before():
    objective = TextureObjective(TextureGANConfig(**TINY), [procedural("blobs", 128, seed=1)], seed=0)
    assert objective.config.repeat_waves == [] and objective.config.n_repeat == 0
    assert "real_field" not in objective.batch(torch.arange(2))
    assert objective.crops.flips is True


def test_the_long_wave_share_is_the_variance_beyond_a_wavelength():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    grain = rng.standard_normal((512, 512))
    waves = gaussian_filter(rng.standard_normal((512, 512)), 40, mode="wrap")  # shapes ~250 px across
    assert long_wave_share(grain[..., None], 96) < 0.01
    assert long_wave_share(waves[..., None], 96) > 0.9
    mixed = grain / grain.std() + waves / waves.std()  # as much variance beyond 96 px as within
    assert 0.4 < long_wave_share(np.repeat(mixed[..., None], 3, -1), 96) < 0.6


SUITE = Path(__file__).resolve().parents[2] / "bench" / "data" / "textures"


@pytest.mark.parametrize("material, downscale, warned", [
    ("cobblestone", 2, False),  # ~130 px stones: halved, they fit the 96 px crops
    ("marble", 1, True), ("bark", 1, True),  # slabs and bands too large to fit at 512 px
    ("gravel", 1, False), ("denim", 1, False), ("planks", 1, False),
    ("tiles", 1, False),  # large, but their repeat is given to both nets
])
def test_training_shrinks_an_exemplar_whose_large_shapes_lie_beyond_its_crops_or_says_so(material, downscale, warned):
    """On the suite's photos (docs/textures/README.md says which lose their large shapes)."""
    objective = TextureObjective(TextureGANConfig(**{**TINY, "crop": 96}), SUITE / material / f"{material}_Color.jpg")
    side = Image.open(SUITE / material / f"{material}_Color.jpg").size[0]
    assert objective.config.downscale == downscale
    assert objective.images[0].shape[:2] == (side // downscale, side // downscale)
    notes = objective.data_summary()["notes"]
    assert any(note.startswith(f"trained on the exemplar shrunk {downscale}x") for note in notes) == (downscale > 1)
    assert any(note.startswith("large shapes") for note in notes) == warned, notes


def test_an_exemplar_is_shrunk_as_asked_and_measured_so():
    """downscale=2 asked for: training reads the photo halved, and so does `resolve_images` given the
    model's downscale, as `atelier eval` and the bench read the exemplar a model is measured against."""
    photo = SUITE / "gravel" / "gravel_Color.jpg"
    objective = TextureObjective(TextureGANConfig(**{**TINY, "crop": 96, "downscale": 2}), photo)
    assert objective.config.downscale == 2 and objective.images[0].shape == (512, 512, 3)
    assert "trained on the exemplar shrunk 2x (downscale=2)" in objective.data_summary()["notes"]
    full, _ = resolve_images(photo, 3, 96)
    halved, _ = resolve_images(photo, 3, 96, downscale=2)
    assert np.allclose(halved[0], full[0].reshape(512, 2, 512, 2, 3).mean((1, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="at least"):
        resolve_images(photo, 3, 600, downscale=2)  # 512 px halved: smaller than asked
    material, report = resolve_images(SUITE / "planks", 3, 96, downscale=2)  # a PBR set: the normals stay unit length
    assert report.maps[0] == "normal" and material[0].shape[:2] == (256, 256)
    assert np.allclose(np.linalg.norm(material[0][..., 3:6], axis=-1), 1, atol=1e-5)


def test_pictures_with_a_repeat_tile_exactly_and_hold_whole_repeats():
    config = TextureGANConfig(channels=3, repeat_waves=[[0.0, 1 / 41.0], [1 / 39.0, 0.0]], **TINY)
    G = Generator(config).eval()
    for h, w in [(80, 160), (32, 32), (8, 8)]:
        cells = torch.tensor([h // 8, w // 8], dtype=torch.float32)
        turns = G.repeat_vectors(h // 8, w // 8) * cells  # whole repeats over the picture, at least one
        assert torch.allclose(turns, turns.round()) and (turns.abs().sum(-1) >= 1).all()
        z = G.sample_noise(1, h, w, torch.Generator().manual_seed(0))
        with torch.no_grad():
            noise = G.noise(*z)
            err = (G.synthesize(noise).repeat(1, 1, 2, 3) - G.synthesize(noise.repeat(1, 1, 2, 3))).abs().max()
        assert err < 1e-5
    assert torch.allclose(G.repeat_vectors(20, 20) * torch.tensor([20.0, 20.0]),
                          torch.tensor([[0.0, 4.0], [4.0, 0.0]]))  # 160 px: 3.9 and 4.1 repeats -> 4
    # training (and the calibration's measurements) take the repeat as measured: a crop holds less than one
    assert torch.allclose(G.repeat_vectors(4, 4, snap=False), torch.tensor(config.repeat_waves) * 8)
    z = G.sample_noise(1, 32, 32, torch.Generator().manual_seed(0))
    assert not torch.allclose(G.train().noise(*z), G.eval().noise(*z))
    assert torch.allclose(G.train().noise(*z), G.eval().noise(*z, exact_repeat=True))


def test_a_seed_draws_the_same_phases_with_or_without_a_repeat_before_it():
    plain = Generator(TextureGANConfig(channels=3, **TINY))
    with_repeat = Generator(dataclasses.replace(plain.cfg, repeat_waves=[[0.0, 0.025]]))
    a = plain.sample_noise(1, 32, 32, torch.Generator().manual_seed(3))
    b = with_repeat.sample_noise(1, 32, 32, torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2][:, :2])
    assert repeat_field(torch.tensor([[0.0, 0.25]]), torch.zeros(1, 1), 4, 4)[0, 0, 0].tolist() == \
        pytest.approx([0.0, 1.0, 0.0, -1.0], abs=1e-6)


def test_pictures_that_need_not_tile_and_the_figures_take_the_repeat_as_measured(monkeypatch):
    # A tileable 48 px picture holds one 41 px repeat stretched to 48 px; a window needs no whole repeat.
    config = TextureGANConfig(channels=3, repeat_waves=[[0.0, 1 / 41.0]], **TINY)
    model = TextureModel(config, Generator(config))
    fed, synthesize = [], model.G.synthesize
    monkeypatch.setattr(model.G, "synthesize", lambda z, *rest: fed.append(z) or synthesize(z, *rest))
    start = TINY["n_local"] + TINY["n_global"] + TINY["n_periodic"]

    def cycles_per_px(z: torch.Tensor) -> float:  # the repeat wave G was given, read off its sin and cos
        angle = torch.atan2(z[0, start], z[0, start + 1])
        return float(torch.remainder(angle[:, 1:] - angle[:, :-1], 2 * np.pi).mean() / (2 * np.pi) / 8)

    model.generate(48, 48, seed=0, tileable=False)
    model.generate(48, 48, seed=0)
    assert cycles_per_px(fed[0]) == pytest.approx(1 / 41, rel=1e-4)
    assert cycles_per_px(fed[1]) == pytest.approx(1 / 48, rel=1e-4)

    fed.clear()
    real = [tiles(128, period=41.0)]
    metrics = evaluate_model(model, real, size=48, n=2, repeats=1)
    given = [cycles_per_px(z) for z in fed[:4]]  # windows scored, then tileable pictures for the seams
    assert given == pytest.approx([1 / 41] * 2 + [1 / 48] * 2, rel=1e-4)
    assert metrics["seam_ratio"] == pytest.approx(seam_ratio(np.stack([model.generate(48, 48, seed=i)
                                                                       for i in range(2)])))
