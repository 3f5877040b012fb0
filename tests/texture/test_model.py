"""Texture GAN model: exact tiling, sizes, channels, maps, no lattice, banded synthesis."""
import pytest
import torch

from engine.texture.evaluation import lattice, lattice_ratios
from engine.texture.model import Discriminator, Generator, TextureGANConfig

TINY = dict(channels=3, g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)


def _z(G, h, w, seed=0):
    return G.sample_noise(1, h, w, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("upsample", ["lowpass", "bilinear", "nearest", "pixel_shuffle"])
@pytest.mark.parametrize("size", [(32, 32), (48, 80), (8, 16)])
def test_output_tiles_exactly(size, upsample):
    torch.manual_seed(0)
    G = Generator(TextureGANConfig(**TINY, upsample=upsample)).eval()
    with torch.no_grad():
        z = G.noise(*_z(G, *size))
        err = (G.synthesize(z).repeat(1, 1, 2, 3) - G.synthesize(z.repeat(1, 1, 2, 3))).abs().max()
    assert err < 1e-5


def test_noise_is_toroidal_on_the_training_lattice():
    G = Generator(TextureGANConfig(**TINY))
    z_local, z_global, phase = _z(G, 64, 64)
    with torch.no_grad():  # 64 px = 8 cells = twice the 4-cell training grid: waves wrap exactly
        big = G.noise(z_local.repeat(1, 1, 2, 2), z_global, phase)
        small = G.noise(z_local, z_global, phase)
    assert (big - small.repeat(1, 1, 2, 2)).abs().max() < 1e-5
    periodic = small[:, -2:]
    assert (periodic.roll(1, -1) - periodic).abs().max() > 0  # there are waves at all


def test_sizes_and_channels():
    for channels in (1, 3, 4):
        G = Generator(TextureGANConfig(**{**TINY, "channels": channels}))
        out = G(*_z(G, 24, 40))
        assert out.shape == (1, channels, 24, 40) and out.abs().max() <= 1
        D = Discriminator(TextureGANConfig(**{**TINY, "channels": channels}))
        assert D(out).shape == (1, 1, 3, 5)
    G = Generator(TextureGANConfig(**TINY))
    for bad in [(20, 32), (32, 7), (0, 8)]:
        with pytest.raises(ValueError, match=r"must be a positive multiple of the generator stride 8"):
            G.sample_noise(1, *bad)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="channels must be 1, 3 or 4"):
        TextureGANConfig(channels=2)
    with pytest.raises(ValueError, match="crop 100 must be a multiple"):
        TextureGANConfig(crop=100)
    with pytest.raises(ValueError, match="loss must be"):
        TextureGANConfig(loss="wgan")
    with pytest.raises(ValueError, match="upsample must be"):
        TextureGANConfig(upsample="bicubic")
    with pytest.raises(ValueError, match="maps must be distinct names"):
        TextureGANConfig(maps=("height", "normal"))
    with pytest.raises(ValueError, match="channels is 0"):
        Generator(TextureGANConfig())  # channels follow the training images: none here


def test_lowpass_upsampling_is_the_tiled_one_and_keeps_a_constant():
    from engine.texture.model import LOWPASS_REACH, upsample2
    x = torch.randn(1, 3, 6, 7)
    a = 2 * LOWPASS_REACH  # a plain (non-circular) filter over a 3x3 tiling, read in the middle tile
    plain = upsample2(x.repeat(1, 1, 3, 3), "lowpass")
    assert (upsample2(x, "lowpass") - plain[..., 12:24, 14:28]).abs().max() < 1e-5 and a > 0
    assert (upsample2(torch.ones(1, 1, 2, 3), "lowpass") - 1).abs().max() < 1e-6  # a 2-cell grid, padded by 4


def test_circular_bilinear_upsampling_is_the_tiled_one():
    from engine.texture.model import upsample2
    x = torch.randn(1, 3, 5, 7)
    tiled = torch.nn.functional.interpolate(x.repeat(1, 1, 3, 3), scale_factor=2, mode="bilinear")
    assert (upsample2(x, "bilinear") - tiled[..., 10:20, 14:28]).abs().max() < 1e-6


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_folded_upsampling_is_the_plain_one(mode):
    from engine.texture.model import up_conv, upsample2
    torch.manual_seed(1)
    x = torch.randn(2, 5, 6, 9, requires_grad=True)
    conv = torch.nn.Conv2d(5, 3, 3, padding=1, padding_mode="circular")
    plain = conv(upsample2(x, mode))
    folded = up_conv(x, conv, mode)
    assert folded.shape == plain.shape and (folded - plain).abs().max() < 1e-5
    g_plain = torch.autograd.grad(plain.square().sum(), [x, conv.weight])
    g_folded = torch.autograd.grad(folded.square().sum(), [x, conv.weight])
    assert all((a - b).abs().max() < 1e-3 for a, b in zip(g_plain, g_folded))


def test_exemplar_codes_and_projection():
    cfg = TextureGANConfig(**TINY, n_exemplars=3)
    G, D = Generator(cfg), Discriminator(cfg)
    z = _z(G, 32, 32)
    with torch.no_grad():
        a, b = G(*z, 0), G(*z, 2)
        assert not torch.equal(a, b) and torch.equal(G(*z), a)  # no exemplar: the first
        torch.nn.init.normal_(D.embed)
        assert not torch.equal(D(a, torch.tensor([0])), D(a, torch.tensor([1])))
    with pytest.raises(ValueError, match=r"exemplar must be in 0..2"):
        G(*z, 3)
    single = Generator(TextureGANConfig(**TINY))
    assert single.codes is None and torch.equal(single(*_z(single, 32, 32), 5), single(*_z(single, 32, 32)))
    with pytest.raises(ValueError, match="n_exemplars"):
        TextureGANConfig(n_exemplars=-1)


def test_defaults_are_the_measured_recipe():
    cfg = TextureGANConfig()
    assert (cfg.r1_gamma, cfg.d_lr_scale, cfg.upsample, cfg.crop, cfg.stride) == (0.1, 4.0, "nearest", 96, 16)
    assert (cfg.channels, cfg.maps) == (0, ())  # as the training images are


def test_maps_are_stacked_after_the_colour():
    cfg = TextureGANConfig(**{**TINY, "channels": 1}, maps=("normal", "roughness", "height", "metallic", "ao"))
    G, D = Generator(cfg), Discriminator(cfg)
    out = G(*_z(G, 16, 24))
    assert cfg.out_channels == 8 and out.shape == (1, 8, 16, 24) and D(out).shape[1] == 1


def test_lowpass_upsampling_has_no_lattice_and_nearest_upsampling_has_one():
    """The lattice comes from the architecture: an untrained generator shows it (nearest upsampling
    copies every cell into a 2x2 block at each step) before any training could hide or sharpen it.
    Measured at the default (full-size) widths, 8 samples of 256 px: stationary noise reads 1 +- 0.05."""
    def measured(upsample: str) -> dict[int, float]:
        torch.manual_seed(0)
        G = Generator(TextureGANConfig(channels=3, upsample=upsample)).eval()
        with torch.no_grad():
            return lattice_ratios(G(*G.sample_noise(8, 256, 256, torch.Generator().manual_seed(0))))

    new, old = measured("lowpass"), measured("nearest")
    assert all(abs(r - 1) <= 0.05 for r in new.values()), new
    assert all(r < 0.5 for r in old.values()), old


@pytest.mark.parametrize("upsample", ["lowpass", "nearest", "pixel_shuffle"])
def test_banded_synthesis_is_the_one_pass_synthesis(upsample):
    """Large pictures are made a band of rows of each layer at a time (to report progress and stop
    between bands); the margins cover each layer's reach, so the pixels are the same."""
    torch.manual_seed(0)
    G = Generator(TextureGANConfig(**TINY, upsample=upsample, maps=("normal",))).eval()
    fractions = []
    with torch.no_grad():
        z = G.noise(*_z(G, 96, 64))
        whole, banded = G.synthesize(z), G.synthesize(z, fractions.append, band=50_000)
    assert len(fractions) > 20 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (whole - banded).abs().max() < 1e-5  # float rounding: the convolutions see other shapes
    assert lattice(whole) > 0  # a picture at all
