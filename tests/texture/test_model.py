"""Texture GAN model: exact tiling, sizes, channels, maps, no lattice, banded synthesis, per-scale noise."""
import dataclasses

import pytest
import torch

from engine.texture.evaluation import lattice, lattice_ratios
from engine.texture.model import Discriminator, Generator, TextureGANConfig

TINY = dict(channels=3, g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)


def _z(G, h, w, seed=0):
    return G.sample_noise(1, h, w, torch.Generator().manual_seed(seed))


def _noisy(G, strength=0.05):
    """G with its per-scale noise switched on (an untrained one's strengths are zero)."""
    with torch.no_grad():
        for block in G.blocks:
            block.noise_strength.fill_(strength)
        G.out_noise.normal_(0, strength / 3, generator=torch.Generator().manual_seed(1))
    return G


# Every upsampler, and the smooth one with noise at every scale (strengths on).
VARIANTS = {"lowpass": {"upsample": "lowpass", "n_scale_noise": 0},
            "bilinear": {"upsample": "bilinear", "n_scale_noise": 0},
            "nearest": {"upsample": "nearest", "n_scale_noise": 0},
            "pixel_shuffle": {"upsample": "pixel_shuffle", "n_scale_noise": 0},
            "lowpass+noise": {"upsample": "lowpass", "n_scale_noise": 1},
            "nearest+noise": {"upsample": "nearest", "n_scale_noise": 2},
            "nearest+noise+head": {"upsample": "nearest", "n_scale_noise": 1, "g_head_layers": 3}}


def _generator(variant, **extra):
    torch.manual_seed(0)
    G = Generator(TextureGANConfig(**{**TINY, **VARIANTS[variant], **extra})).eval()
    return _noisy(G) if G.cfg.n_scale_noise else G


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(32, 32), (48, 80), (8, 16)])
def test_output_tiles_exactly(size, variant):
    G = _generator(variant)
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
        D = Discriminator(TextureGANConfig(**{**TINY, "channels": channels}, d_scales=2))
        assert [d.shape for d in D(out)] == [(1, 1, 3, 5), (1, 1, 1, 2)]  # full size, and 2x down
    G = Generator(TextureGANConfig(**TINY))
    for bad in [(20, 32), (32, 7), (0, 8)]:
        with pytest.raises(ValueError, match=r"must be a positive multiple of the generator stride 8"):
            G.sample_noise(1, *bad)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="channels must be 1, 3 or 4"):
        TextureGANConfig(channels=2)
    with pytest.raises(ValueError, match="crop 100 must be a multiple"):
        TextureGANConfig(crop=100)
    with pytest.raises(ValueError, match=r"at least 64 px for the discriminator \(2 scale"):
        TextureGANConfig(crop=48, d_scales=2)
    with pytest.raises(ValueError, match="d_scales must be at least 1"):
        TextureGANConfig(d_scales=0)
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
    with torch.no_grad():  # generating: the channels_last path, the same function
        generating = up_conv(x, conv, mode)
    assert (generating - plain).abs().max() < 1e-5


def test_exemplar_codes_and_projection():
    cfg = TextureGANConfig(**TINY, n_exemplars=3)
    G, D = Generator(cfg), Discriminator(cfg)
    z = _z(G, 32, 32)
    with torch.no_grad():
        a, b = G(*z, 0), G(*z, 2)
        assert not torch.equal(a, b) and torch.equal(G(*z), a)  # no exemplar: the first
        torch.nn.init.normal_(D.scales[0].embed)
        assert not torch.equal(D(a, torch.tensor([0]))[0], D(a, torch.tensor([1]))[0])
    with pytest.raises(ValueError, match=r"exemplar must be in 0..2"):
        G(*z, 3)
    single = Generator(TextureGANConfig(**TINY))
    assert single.codes is None and torch.equal(single(*_z(single, 32, 32), 5), single(*_z(single, 32, 32)))
    with pytest.raises(ValueError, match="n_exemplars"):
        TextureGANConfig(n_exemplars=-1)


def test_each_discriminator_scale_judges_the_crop_downsampled():
    """Scale 1 sees the crop box-filtered 2x: a pattern that averages out over 2x2 pixels changes
    the finest scale's logits and leaves the coarse scale's exactly as they were."""
    cfg = TextureGANConfig(**TINY, d_scales=2)
    D = Discriminator(cfg)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    checker = 0.1 * (torch.arange(32)[:, None] + torch.arange(32)).remainder(2).mul(2).sub(1).float()
    with torch.no_grad():
        plain, patterned = D(x), D(x + checker)
    assert [t.shape[-1] for t in plain] == [4, 2]
    assert (plain[0] - patterned[0]).abs().max() > 1e-4
    assert (plain[1] - patterned[1]).abs().max() < 1e-5


def test_a_one_scale_discriminator_checkpointed_before_scales_existed_loads():
    from engine.texture.model import PatchDiscriminator
    cfg = TextureGANConfig(**TINY, d_scales=1)
    old = PatchDiscriminator(cfg).state_dict()  # stored as the module itself: net.0.weight, ...
    D = Discriminator(cfg)
    D.load_state_dict(old)
    assert torch.equal(D.scales[0].net[0].weight, old["net.0.weight"])


def test_defaults_are_the_measured_recipe():
    cfg = TextureGANConfig()
    assert (cfg.r1_gamma, cfg.d_lr_scale, cfg.upsample, cfg.crop, cfg.stride) == (0.1, 4.0, "nearest", 96, 16)
    assert (cfg.d_scales, cfg.g_head_layers) == (1, 1)  # structure at every scale is not (yet) the recipe
    assert cfg.n_scale_noise == 1  # noise at every scale
    assert (cfg.channels, cfg.maps) == (0, ())  # as the training images are


def test_maps_are_stacked_after_the_colour():
    cfg = TextureGANConfig(**{**TINY, "channels": 1}, maps=("normal", "roughness", "height", "metallic", "ao"))
    G, D = Generator(cfg), Discriminator(cfg)
    out = G(*_z(G, 16, 24))
    assert cfg.out_channels == 8 and out.shape == (1, 8, 16, 24) and D(out)[0].shape[1] == 1


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


@pytest.mark.parametrize("variant", ["lowpass", "nearest", "pixel_shuffle", "lowpass+noise", "nearest+noise+head"])
def test_banded_synthesis_is_the_one_pass_synthesis(variant):
    """Large pictures are made a band of rows of each layer at a time (to report progress and stop
    between bands); the margins cover each layer's reach, so the pixels are the same."""
    G = _generator(variant, maps=("normal",))
    fractions = []
    with torch.no_grad():
        z = G.noise(*_z(G, 96, 64))
        whole, banded = G.synthesize(z), G.synthesize(z, fractions.append, band=50_000)
    assert len(fractions) > 20 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (whole - banded).abs().max() < 1e-5  # float rounding: the convolutions see other shapes
    assert lattice(whole) > 0  # a picture at all


def test_noise_at_every_scale_leaves_no_lattice():
    """Noise drawn per pixel at each scale, full size, strengths on: still 1 +- 0.05 at every period
    with the smooth upsampler (with a bilinear last step the finest noise read 0.87-0.90)."""
    torch.manual_seed(0)
    G = _noisy(Generator(TextureGANConfig(channels=3, upsample="lowpass", n_scale_noise=1)).eval(), 0.1)
    with torch.no_grad():
        ratios = lattice_ratios(G(*G.sample_noise(8, 256, 256, torch.Generator().manual_seed(0))))
    assert all(abs(r - 1) <= 0.05 for r in ratios.values()), ratios


def test_each_scale_has_its_own_noise_and_the_other_draws_are_unchanged():
    """A seed's local, global and phase draws are those of a model without per-scale noise; each
    scale's noise is drawn at that scale's size, and changing one scale's noise changes the picture
    there (finer scales: a smaller neighbourhood)."""
    plain = Generator(TextureGANConfig(**TINY, n_scale_noise=0))
    G = _generator("lowpass+noise")
    z_local, z_global, phase = _z(G, 32, 48, seed=5)
    ref = _z(plain, 32, 48, seed=5)
    assert torch.equal(z_local[:, :TINY["n_local"]], ref[0]) and torch.equal(z_global, ref[1]) \
        and torch.equal(phase, ref[2])
    z = G.noise(z_local, z_global, phase)
    scales = G.scale_noise(z)
    assert [tuple(n.shape[-2:]) for n in scales] == [(8, 12), (16, 24), (32, 48)]  # strides 4, 2, 1
    with torch.no_grad():
        base = G.synthesize(z)
        reach = []
        for j, noise in enumerate(scales):
            changed = [n.clone() for n in scales]
            changed[j][..., 2, 3] += 5.0  # one pixel of scale j's noise
            packed = [torch.nn.functional.pixel_unshuffle(n, 2 ** (i + 1)) for i, n in enumerate(changed)]
            diff = (G.synthesize(torch.cat([z[:, :G.cfg.n_noise], *packed], 1)) - base).abs().amax((0, 1))
            assert diff.max() > 1e-3
            reach.append(int((diff > 1e-6).sum()))
    assert reach[0] > reach[1] > reach[2] > 0


def test_a_seed_draws_the_same_global_code_and_phases_at_every_size():
    """Only the local noise depends on the size: an artist who previews a seed small and then makes
    it large gets the same texture, not another one (the global code was drawn after the local noise)."""
    G = _generator("nearest+noise")
    small, large = _z(G, 32, 32, seed=7), _z(G, 64, 128, seed=7)
    assert torch.equal(small[1], large[1]) and torch.equal(small[2], large[2])
    assert not torch.equal(small[1], _z(G, 32, 32, seed=8)[1])


def test_models_saved_before_per_scale_noise_load_without_it():
    from engine.texture.generation import load

    G = _generator("lowpass")
    config = {k: v for k, v in dataclasses.asdict(G.cfg).items() if k != "n_scale_noise"}
    model = load(config, {f"G_ema.{k}": v for k, v in G.state_dict().items()})
    assert model.config.n_scale_noise == 0
    with torch.no_grad():
        assert torch.equal(model.G(*_z(model.G, 32, 32)), G(*_z(G, 32, 32)))


def test_a_model_with_per_scale_noise_generates_morphs_and_crops_like_any_other():
    """Through TextureModel: a seed gives the same picture, any size crops from a larger one, a
    morph of a seed into itself is that seed's picture (the per-scale noise rides through the blend
    unchanged), and a tileable picture of tiled noise is the tiled picture."""
    import numpy as np

    from engine.texture.generation import TextureModel

    G = _generator("lowpass+noise")
    model = TextureModel(G.cfg, G)
    a = model.generate(32, 32, seed=3)
    assert np.array_equal(a, model.generate(32, 32, seed=3)) and not np.array_equal(a, model.generate(32, 32, seed=4))
    assert model.generate(37, 21, seed=3, tileable=False).shape == (21, 37, 3)
    for tileable in (True, False):
        same = model.morph(48, 32, 3, 3, tileable)
        assert np.array_equal(same, model.generate(48, 32, seed=3, tileable=tileable))
    z_local, z_global, phase = model._noise(32, 32, 3)
    with torch.no_grad():
        big = model._picture(G.noise(z_local, z_global, phase).repeat(1, 1, 2, 2), 64, 64, lambda: None)
    assert np.abs(np.tile(a, (2, 2, 1)).astype(int) - big["image"].astype(int)).max() <= 1  # uint8 rounding
