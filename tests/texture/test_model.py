"""Texture GAN model: exact tiling, sizes, channels."""
import pytest
import torch

from engine.texture.model import Discriminator, Generator, TextureGANConfig

TINY = dict(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)


def _z(G, h, w, seed=0):
    return G.sample_noise(1, h, w, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("upsample", ["bilinear", "nearest", "pixel_shuffle"])
@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
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
        G = Generator(TextureGANConfig(channels=channels, **TINY))
        out = G(*_z(G, 24, 40))
        assert out.shape == (1, channels, 24, 40) and out.abs().max() <= 1
        D = Discriminator(TextureGANConfig(channels=channels, **TINY))
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


def test_circular_bilinear_upsampling_is_the_tiled_one():
    from engine.texture.model import upsample2
    x = torch.randn(1, 3, 5, 7)
    tiled = torch.nn.functional.interpolate(x.repeat(1, 1, 3, 3), scale_factor=2, mode="bilinear")
    assert (upsample2(x, "bilinear") - tiled[..., 10:20, 14:28]).abs().max() < 1e-6


def test_folded_nearest_upsampling_is_the_plain_one():
    from engine.texture.model import nearest_up_conv
    torch.manual_seed(1)
    x = torch.randn(2, 5, 6, 9, requires_grad=True)
    conv = torch.nn.Conv2d(5, 3, 3, padding=1, padding_mode="circular")
    plain = conv(torch.nn.functional.interpolate(x, scale_factor=2))
    folded = nearest_up_conv(x, conv.weight, conv.bias)
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
