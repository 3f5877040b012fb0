"""Texture GAN model: exact tiling, sizes, channels."""
import pytest
import torch

from engine.models.texture_gan import Discriminator, Generator, TextureGANConfig

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
    from engine.models.texture_gan import upsample2
    x = torch.randn(1, 3, 5, 7)
    tiled = torch.nn.functional.interpolate(x.repeat(1, 1, 3, 3), scale_factor=2, mode="bilinear")
    assert (upsample2(x, "bilinear") - tiled[..., 10:20, 14:28]).abs().max() < 1e-6
