"""Periodic spatial GAN for seamless textures (SGAN, Jetchev et al. 2016; PSGAN, Bergmann et al. 2017).

The generator maps a spatial noise tensor (h x w cells) to an image of (h*stride) x (w*stride)
pixels. The noise has three kinds of channels: local (i.i.d. per cell), global (one code per
image, broadcast) and periodic (plane waves whose wave vectors are a learned function of the
global code). Every generator convolution pads circularly and the waves are snapped to whole
periods over the grid, so the noise and the network are both defined on a torus: the output
tiles exactly, and G(tile(z)) == tile(G(z)).

The discriminator is a patch discriminator at each of d_scales scales (one by default): it
returns a map of logits, one per patch, for the crop and for it downsampled 2x, 4x, ...

An exemplar that repeats (tiles, a brick bond; engine/texture/repeats.py) gives both nets its
repeat as plane waves: the generator at its noise grid, the discriminator at every pixel beside
the crop, so that where a crop sits in a repeat larger than the crop is judged too.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


# Surface maps a model can make beside its colour, in the order they are stacked, and their channels.
# A normal map's three channels are its unit vector (OpenGL convention: +x right, +y up, +z out).
MAPS = {"normal": 3, "roughness": 1, "height": 1, "metallic": 1, "ao": 1}
UPSAMPLE = ("lowpass", "nearest", "bilinear", "pixel_shuffle")
LOWPASS_REACH = 4  # input cells each side that a "lowpass" upsampled pixel reads
LOWPASS_BETA = 6.0  # Kaiser window shape: a=3 or beta 4 left a lattice of 0.9 on untrained generators
# "lowpass" makes its last 2x step, to the image, by circular bilinear interpolation: the sinc there
# cost twice the layer's convolution at full resolution (memory-bound), and the last step's period-2
# pattern is faint (an untrained generator's lattice ratios at 2/4/8/16 px: 0.98-1.04 this way).
LOWPASS_LAST = "bilinear"


@dataclass
class TextureGANConfig:
    # Defaults are the measured recipe (docs/BENCHMARKS.md, "Why the recipe is what it is"): a plain
    # `atelier train texture --images X` gets them; engine/recipes/texture.toml only adds what
    # the shipped gravel model needs on top (one channel).
    channels: int = 0        # colour channels: 1 (grey), 3 (RGB) or 4 (RGBA); 0 = as the training images are
    # Surface maps made beside the colour, stacked after it in MAPS order (a PBR set trained together,
    # so every map belongs to the same surface); () for a colour-only model.
    maps: tuple[str, ...] = ()
    n_local: int = 8         # noise channels drawn i.i.d. per cell
    n_global: int = 16       # noise channels shared by the whole image
    n_periodic: int = 4      # plane-wave channels (PSGAN)
    # Noise drawn per pixel at each upsampling step's resolution (strides 8, 4, 2 and 1 for 4
    # blocks), so fine detail need not come up through the upsampler from the stride-16 grid:
    # added to each block's features with a learned strength per feature channel (StyleGAN's
    # noise inputs), and at full resolution through a learned 3x3 filter into the image (a smooth
    # upsampler leaves the last octave empty: nothing nonlinear runs at full resolution). With
    # "lowpass" the last step is then a sinc too (bilinear leaves a period-2 lattice on white
    # noise). Channels per scale; 0 = none (models saved before it existed). On by default with
    # nearest: at about the same steps per minute, over two seeds of ground, bricks and gravel and
    # one of lava (10 minutes, one core each) it gave the better spectrum on every run and a lattice
    # nearer 1 on most, where nearest alone leaves a 4/8/16-px grid and chroma worms
    # (docs/BENCHMARKS.md, "Noise at every scale").
    n_scale_noise: int = 1
    g_blocks: int = 4        # upsampling steps; the generator stride is 2**g_blocks
    # 3x3 convolutions at the noise grid before the first upsampling: each widens what one output
    # pixel sees of the local noise by a cell (stride px) on every side, so shapes larger than
    # the upsampling blocks' reach (cobbles, tiles) can be drawn whole. One by default: see crop.
    g_head_layers: int = 1
    g_width: int = 24        # channels at the last block; doubles per block towards the noise
    g_max_width: int = 96
    # Training crop (px); its noise grid sets the lattice the waves snap to. 96 px with one
    # discriminator scale and one head convolution is the default. 192 px crops judged at two
    # scales (d_scales=2) by a generator with three head convolutions drew cobblestone as stones
    # with joints where this draws dirt and cracks, but a step costs 1.3x, and in the 10-minute
    # budget on the 2-core CPU (~3600 steps against ~4600) the whole suite came out worse: a
    # 16 px lattice on five of eleven exemplars (roof tiles 0.22, gravel 0.24), smeared bricks,
    # gravel without stones; tried again with the lattice penalty, it lost roof tiles and
    # cobblestone on 20 % fewer steps (docs/BENCHMARKS.md, "Structure at every scale").
    crop: int = 96
    # A deeper D (5 layers: each logit sees the whole crop), a wider one (d_width 48) or a faster one
    # (d_lr_scale 8) drew grass nearer the photo, but 5 layers won outright on planks (no boards left),
    # width 48 cost 45 % of the steps, and a rate of 8 lost planks' coarse Gram and rock's spectrum
    # (docs/BENCHMARKS.md, "The discriminator's width, depth and pace").
    d_layers: int = 4        # stride-2 layers: the patch a logit sees is about 2**(d_layers+1) px
    d_scales: int = 1        # patch discriminators, each on the crop downsampled 2x more than the last
    d_width: int = 24
    d_max_width: int = 96
    # Stabilisation, chosen by measurement (docs/BENCHMARKS.md, "Why the recipe is what it is").
    loss: str = "nonsat"     # "nonsat" (non-saturating logistic) or "hinge"
    spectral_norm: bool = False
    # R1 gradient penalty on real images (Mescheder et al. 2018). With 1 D barely learned. With
    # 0.03 D won on planks and the boards were gone; at 0.01 grass, where D sits at chance, drew
    # its blades, but sand grew dark tufts (docs/BENCHMARKS.md, "Along a run, and the
    # discriminator's R1 strength").
    r1_gamma: float = 0.1
    d_lr_scale: float = 4.0  # D's learning rate over G's (TTUR, Heusel et al. 2017)
    ema_decay: float = 0.999
    # Weight of the lattice penalty in G's loss (`TextureObjective._lattice_penalty`): a real
    # crop's gradients are alike at every position modulo the generator stride, since it was cut
    # anywhere in the photo; G's are not where its cells meet. On bricks, planks, cobblestone and
    # marble (10 minutes, one core each, beside runs without it) it took the lattice measure from
    # 0.68-0.90 to 0.91-1.02 and the seam ratio from 0.69-0.86 to 1.00-1.11, the median seed's
    # Gram distance lower on all four; swd, spectrum and Gram moved both ways (docs/BENCHMARKS.md,
    # "Lattice penalty"). 0 trains without it.
    lattice_weight: float = 10.0
    # How every 2x step upsamples: "nearest" (resize, then a circular conv; folded into a 2x2 conv
    # of the input), "lowpass" (zeros between the pixels, then a Kaiser-windowed sinc over
    # LOWPASS_REACH cells each side, circular; its last step to the image bilinear, LOWPASS_LAST),
    # "bilinear" (circular), or "pixel_shuffle" (nearest in the blocks, a sub-pixel conv as the
    # last step). Nearest is the default because it is the only one that learns fine detail in the
    # 10-minute budget: every noise input enters at the stride-16 grid, and a smooth upsampler
    # leaves the generator no way to make edges finer than that, so lowpass and bilinear learned
    # smooth blobs on the ground PBR set (gram 8.9 / 5.5, swd 14 / 6.4 against nearest's 2.9 / 2.3;
    # docs/BENCHMARKS.md). Its price is a lattice: nearest copies each cell into a 2x2 block, and
    # the copies stay in the output (evaluation.lattice 0.66-1.5 on the shipped colour materials,
    # 0.2-0.35 untrained; lowpass within 1 +- 0.05). Models saved with another mode keep it.
    upsample: str = "nearest"
    # Several exemplars: one learned global code each, added to the global noise, and a
    # projection discriminator (Miyato & Koyama 2018) told which exemplar a crop came from, so
    # that code i makes exemplar i's texture and codes can be blended across an image (morphing).
    # 0 or 1: no codes (all exemplars pooled); the trainer sets it to the number of images.
    n_exemplars: int = 0
    # The exemplar's repeat (engine/texture/repeats.py), set by training where it finds one: wave
    # vectors (ky, kx) in cycles per px. The generator gets each as a plane wave (sin and cos) at its
    # noise grid, with a random phase, and the discriminator the same wave at every pixel beside the
    # crop (the real crop's from where it was cut), so that structure repeating further than a crop
    # (tiles) is judged where it sits in the repeat. None or []: no repeat.
    repeat_waves: list[list[float]] | None = None
    # The exemplar's scale: training reads it shrunk this many times (averaging each block of
    # pixels), and the figures compare with it so. None: training picks it (`exemplar_scale` in
    # engine/texture/repeats.py), bringing large shapes that do not repeat inside the crops; 1: as it is.
    downscale: int | None = None
    # Set after training (engine/texture/calibration.py): the exemplar's statistics where
    # the discriminator could not teach them. Per channel the mean and standard deviation every
    # picture is given, and the share of its code's offset in mean it keeps (single-exemplar
    # models); per radial frequency (k / (2 * len) cycles per pixel): log10 power gains, and per
    # channel the amplitudes of a smooth field made from the noise, and a 3x3 matrix mixing the
    # colour channels (row-major; None: grey, or calibrated before it existed); per channel a tone
    # curve over [-1, 1]. The generator ignores them; TextureModel applies them to what it makes.
    image_moments: list[list[float]] | None = None
    calibration_size: int = 256  # the side (px) of the pictures the calibration was measured on
    spectrum_gain: list[list[float]] | list[float] | None = None  # per channel (one list: every channel)
    # per channel, direction (a * 180 / A degrees; 0: varying along the width) and radial frequency:
    # log10 power added to spectrum_gain's (None: calibrated before it existed)
    orientation_gain: list[list[list[float]]] | None = None
    field_gain: list[list[float]] | None = None
    # Set after training for an exemplar with a two-way repeat (engine/texture/tints.py): its cells
    # ("table", "joint", "centre": where each phase of the repeat belongs), the "offsets" [C, N] a
    # cell draws from and the "joints" [C, joint phases] each joint phase is shaded by. None: no tint.
    cell_tint: dict | None = None
    colour_mix: list[list[float]] | None = None
    tone_curve: list[list[float]] | None = None
    # Set after training (engine/texture/lattice.py): per axis, channel and position in a cell, the
    # share of its differences to the pixels before and after that a pixel takes, flattening the
    # generator's lattice in the calibrated pictures. None: models calibrated before it existed.
    lattice_filter: list[list[list[list[float]]]] | None = None
    # Set after training (engine/texture/screening.py): the global codes `generate` draws from,
    # seed s taking code s mod their number (single-exemplar models; None: a fresh code per seed).
    global_codes: list[list[float]] | None = None

    def __post_init__(self):
        if self.channels not in (0, 1, 3, 4):
            raise ValueError(f"channels must be 1, 3 or 4 (or 0: as the training images are), got {self.channels}")
        self.maps = tuple(self.maps)
        if list(self.maps) != [m for m in MAPS if m in self.maps]:
            raise ValueError(f"maps must be distinct names among {list(MAPS)}, in that order; got {list(self.maps)}")
        if self.loss not in ("hinge", "nonsat"):
            raise ValueError(f"loss must be 'hinge' or 'nonsat', got {self.loss!r}")
        if self.upsample not in UPSAMPLE:
            raise ValueError(f"upsample must be one of {', '.join(map(repr, UPSAMPLE))}, got {self.upsample!r}")
        if self.n_exemplars < 0:
            raise ValueError(f"n_exemplars must be 0 or more, got {self.n_exemplars}")
        if self.g_blocks < 1 or self.d_layers < 1 or self.g_head_layers < 1:
            raise ValueError("g_blocks, g_head_layers and d_layers must be at least 1")
        if self.downscale is not None and self.downscale < 1:
            raise ValueError(f"downscale must be 1 or more (or unset: training picks it), got {self.downscale}")
        if self.d_scales < 1:
            raise ValueError(f"d_scales must be at least 1, got {self.d_scales}")
        smallest = self.smallest_crop
        if self.crop % self.stride or self.crop < smallest:
            raise ValueError(f"crop {self.crop} must be a multiple of the generator stride {self.stride} "
                             f"and at least {smallest} px for the discriminator ({self.d_scales} scale(s))")

    @property
    def stride(self) -> int:
        return 2 ** self.g_blocks

    @property
    def exemplar_shrink(self) -> int:
        """How many times the exemplar is read shrunk: `downscale`, 1 where it is unset (models saved
        before it existed)."""
        return self.downscale or 1

    @property
    def largest_view(self) -> int:
        """The largest view (px of the exemplar) the discriminator judges: the crop at its coarsest scale."""
        return self.crop * 2 ** (self.d_scales - 1)

    @property
    def smallest_crop(self) -> int:
        """The smallest training crop the discriminator can judge at every scale, a multiple of the stride."""
        return -(-2 ** (self.d_layers + self.d_scales) // self.stride) * self.stride

    @property
    def n_repeat(self) -> int:
        return len(self.repeat_waves or ())

    @property
    def n_noise(self) -> int:
        return self.n_local + self.n_global + self.n_periodic + 2 * self.n_repeat

    @property
    def scale_noise_channels(self) -> int:
        """Channels the per-scale noise takes packed at the noise grid (each scale's pixels
        folded into its cells, `F.pixel_unshuffle`): n_scale_noise x (4^1 + ... + 4^g_blocks)."""
        return self.n_scale_noise * sum(4 ** j for j in range(1, self.g_blocks + 1))

    @property
    def out_channels(self) -> int:
        """Channels the generator makes: the colour's, then each map's."""
        return self.channels + sum(MAPS[m] for m in self.maps)

    @property
    def layout(self) -> dict[str, slice]:
        """Where each map sits among the generator's channels: "image" (the colour), then `maps`."""
        out, start = {"image": slice(0, self.channels)}, self.channels
        for name in self.maps:
            out[name], start = slice(start, start + MAPS[name]), start + MAPS[name]
        return out


def conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="circular")


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector (ProGAN): local, so it keeps exact tiling,
    and batch-independent, so the EMA generator needs no running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


def wrap_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Circular padding that may be wider than the tensor (a 1-cell grid padded by 4 cells)."""
    h, w = x.shape[-2:]
    if max(left, right) <= w and max(top, bottom) <= h:
        return F.pad(x, (left, right, top, bottom), mode="circular")
    rows = torch.arange(-top, h + bottom, device=x.device) % h
    cols = torch.arange(-left, w + right, device=x.device) % w
    return x[..., rows[:, None], cols]


@functools.lru_cache(maxsize=None)
def lowpass_taps(reach: int = LOWPASS_REACH, beta: float = LOWPASS_BETA) -> torch.Tensor:
    """[2, 2 * reach + 1] taps of a 2x interpolator: output pixel 2i + p lies at input position
    i - 1/4 + p/2 (as bilinear's, align_corners=False) and reads inputs i - reach .. i + reach
    through a Kaiser-windowed sinc, each phase's taps summing to 1."""
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)

    def kernel(d: torch.Tensor) -> torch.Tensor:
        inside = (1 - (d / reach).clamp(-1, 1) ** 2).sqrt()
        window = torch.special.i0(beta * inside) / torch.special.i0(torch.tensor(beta, dtype=torch.float64))
        return torch.sinc(d) * window * (d.abs() < reach)

    phases = torch.stack([kernel(-0.25 - offsets), kernel(0.25 - offsets)])
    return (phases / phases.sum(1, keepdim=True)).float()


def lowpass_up(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling on the torus by a windowed sinc, along the width then the height: a pixel's
    value no longer depends on where it sits in its 2x2 block, so no lattice is left."""
    b, c, h, w = x.shape
    taps = lowpass_taps().to(x)
    a = (taps.shape[1] - 1) // 2
    y = F.conv2d(wrap_pad(x, a, a, 0, 0), taps.view(2, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = y.view(b, c, 2, h, w).permute(0, 1, 3, 4, 2).reshape(b, c, h, 2 * w)
    y = F.conv2d(wrap_pad(y, 0, 0, a, a), taps.view(2, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return y.view(b, c, 2, h, 2 * w).permute(0, 1, 3, 2, 4).reshape(b, c, 2 * h, 2 * w)


def upsample2(x: torch.Tensor, mode: str) -> torch.Tensor:
    """2x upsampling on the torus. Bilinear interpolation reads one neighbour on each side, so
    the input is padded circularly by one cell first and the extra output cropped: the result
    is exactly what an infinitely tiled input would give."""
    if mode == "lowpass":
        return lowpass_up(x)
    if mode != "bilinear":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    x = F.interpolate(F.pad(x, (1, 1, 1, 1), mode="circular"), scale_factor=2, mode="bilinear", align_corners=False)
    return x[..., 2:-2, 2:-2]


def up_reach(mode: str) -> int:
    """Input rows each side that one 2x step plus its 3x3 conv reads (with a row to spare)."""
    return (LOWPASS_REACH if mode == "lowpass" else 1) + 2


# Which input rows (cols) a 3x3 tap reads after nearest 2x upsampling: output row 2i+p reads rows
# 2i+p-1, 2i+p, 2i+p+1, i.e. input rows i-1, i, i (p = 0) or i, i, i+1 (p = 1). _FOLD[p] sums
# the three taps onto the two input rows they land on. Numbers, not a tensor: one made at import
# inside the engine's meta-device check (server/model_loading.py) would stay a meta tensor for good.
_FOLD = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


def pad1_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Circular padding by one pixel on each side of a channels_last x, kept channels_last (F.pad's
    circular mode returns the plain layout, and converting back cost 10x the padding at 512^2)."""
    b, c, h, w = x.shape
    out = torch.empty(b, c, h + 2, w + 2, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    out[..., 1:-1, 1:-1] = x
    out[..., :1, 1:-1] = x[..., -1:, :]
    out[..., -1:, 1:-1] = x[..., :1, :]
    out[..., :1] = out[..., -2:-1]
    out[..., -1:] = out[..., 1:2]
    return out


def nearest_up_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv3x3_circular(nearest_upsample_2x(x)), computed without the upsampled tensor: each of
    the four output phases is a 2x2 conv of the input, so it costs 16 instead of 36 multiply-adds
    per input pixel and channel pair, and the layer to the image (cout = 1 or 3) stops being
    memory-bound. The same function of the same weights (float rounding aside), so checkpoints
    trained either way load into either.

    Generating, it runs channels_last and returns channels_last: there oneDNN's 2x2 convolutions
    are faster and the four phases interleave as whole pixel vectors (1024^2 colour, one thread:
    0.250 -> 0.230 s). Training keeps the plain layout's stacked phases, whose backward is
    cheaper (steps were 4.6 % slower with the channels_last copies)."""
    b, _, h, w = x.shape
    cout = weight.shape[0]
    fold = torch.tensor(_FOLD, dtype=weight.dtype, device=weight.device)
    kernel = torch.einsum("yab,xcd,oibd->yxoiac", fold, fold, weight).reshape(4 * cout, -1, 2, 2)
    bias = None if bias is None else bias.repeat(4)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        full = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), kernel, bias)
        full = full.view(b, 2, 2, cout, h + 1, w + 1)  # phase (py, px) is the window starting at (py, px)
        rows = [torch.stack([full[:, py, px, :, py:py + h, px:px + w] for px in (0, 1)], -1) for py in (0, 1)]
        return torch.stack(rows, 3).view(b, cout, 2 * h, 2 * w)
    last = torch.channels_last
    full = F.conv2d(pad1_channels_last(x.contiguous(memory_format=last)), kernel.contiguous(memory_format=last), bias)
    phases = full.contiguous(memory_format=last).permute(0, 2, 3, 1).view(b, h + 1, w + 1, 2, 2, cout)
    out = full.new_empty(b, h, 2, w, 2, cout)  # in memory [b, h + 1, w + 1, py, px, cout] and [b, h, py, w, px, cout]
    for py in (0, 1):
        for px in (0, 1):
            out[:, :, py, :, px] = phases[:, py:py + h, px:px + w, py, px]
    return out.view(b, 2 * h, 2 * w, cout).permute(0, 3, 1, 2)


# Bilinear's fold: upsampled row 2i+p+d (tap d = -1, 0, 1) mixes input rows i-1, i, i+1 with
# these weights; _BILINEAR_FOLD[p][d] (align_corners=False, as upsample2).
_BILINEAR_FOLD = (((0.75, 0.25, 0.0), (0.25, 0.75, 0.0), (0.0, 0.75, 0.25)),
                  ((0.25, 0.75, 0.0), (0.0, 0.75, 0.25), (0.0, 0.25, 0.75)))


def bilinear_up_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv3x3_circular(bilinear_upsample_2x(x)) without the upsampled tensor: each output phase
    is a 3x3 conv of the input (the same multiply-adds, a quarter of the memory traffic; the
    layer to the image is 2-5x faster on a CPU). The same function, float rounding aside."""
    b, _, h, w = x.shape
    cout = weight.shape[0]
    fold = torch.tensor(_BILINEAR_FOLD, dtype=weight.dtype, device=weight.device)
    kernel = torch.einsum("yba,xdc,oibd->yxoiac", fold, fold, weight).reshape(4 * cout, -1, 3, 3)
    out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), kernel, None if bias is None else bias.repeat(4))
    return out.view(b, 2, 2, cout, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, cout, 2 * h, 2 * w)


def up_conv(x: torch.Tensor, conv: nn.Conv2d, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return nearest_up_conv(x, conv.weight, conv.bias)
    if mode == "bilinear":
        return bilinear_up_conv(x, conv.weight, conv.bias)
    return conv(upsample2(x, mode))


# The per-scale noise strengths are stored divided by this (an equalised learning rate): at the
# trainer's rate a strength that starts at zero grows ten times faster than the weights move.
NOISE_GAIN = 10.0


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, mode: str = "nearest", n_noise: int = 0):
        super().__init__()
        self.conv = conv3(cin, cout)
        self.norm = PixelNorm()
        self.mode = mode
        # [cout, n_noise]: how much of each noise channel each feature channel gets; zero at first,
        # so an untrained generator is the one without noise.
        self.noise_strength = nn.Parameter(torch.zeros(cout, n_noise)) if n_noise else None

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        y = up_conv(x, self.conv, self.mode)
        if self.noise_strength is not None:
            # [b, H, W, n] @ [n, cout]: in the layout y has when generating (channels_last), where a 1x1
            # conv's plain-layout result made the sum cost more than the conv (1024^2: 0.245 -> 0.262 s)
            y = y + (noise.to(y.dtype).permute(0, 2, 3, 1) @ (NOISE_GAIN * self.noise_strength).T).permute(0, 3, 1, 2)
        return F.leaky_relu(self.norm(y), 0.2)


def _nearest(side: int, stride: int) -> str:
    lower, upper = max(stride, side // stride * stride), max(stride, -(-side // stride) * stride)
    return f"{lower}" if lower == upper else f"{lower} or {upper}"


class Generator(nn.Module):
    def __init__(self, cfg: TextureGANConfig):
        super().__init__()
        if not cfg.channels:
            raise ValueError("the config's channels is 0 (as the training images are): training sets it; "
                             "set 1, 3 or 4 to build a generator without images")
        self.cfg = cfg
        widths = [min(cfg.g_width * 2 ** (cfg.g_blocks - 1 - i), cfg.g_max_width) for i in range(cfg.g_blocks)]
        # Wave vectors (radians per noise cell, two per periodic channel) from the global code.
        self.waves = nn.Sequential(nn.Linear(max(cfg.n_global, 1), 64), nn.ReLU(), nn.Linear(64, 2 * cfg.n_periodic))
        self.head = conv3(cfg.n_noise, widths[0])
        self.head_convs = nn.ModuleList(conv3(widths[0], widths[0]) for _ in range(cfg.g_head_layers - 1))
        self.blocks = nn.ModuleList(UpBlock(widths[i], widths[i + 1], cfg.upsample, cfg.n_scale_noise)
                                    for i in range(cfg.g_blocks - 1))
        # The last 2x step: upsample the features, then one 3x3 conv to the image at full
        # resolution (the same multiply-adds per output pixel as the old sub-pixel conv at half
        # resolution, which gave each pixel of a 2x2 cell its own filter: a visible grid).
        self.subpixel = cfg.upsample == "pixel_shuffle"
        self.out = conv3(widths[-1], (4 if self.subpixel else 1) * cfg.out_channels)
        self.codes = nn.Parameter(torch.randn(cfg.n_exemplars, cfg.n_global)) if cfg.n_exemplars > 1 else None
        # The full-resolution noise's 3x3 filter into each image channel (scaled by NOISE_GAIN, zero at first).
        self.out_noise = nn.Parameter(torch.zeros(cfg.out_channels, cfg.n_scale_noise, 3, 3)) \
            if cfg.n_scale_noise and not self.subpixel else None

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Noise cells for an output size: the one check of a tileable size, with a clear error."""
        s = self.cfg.stride
        if height < s or width < s or height % s or width % s:
            raise ValueError(f"a tileable {width}x{height} texture is not possible: the size must be a positive "
                             f"multiple of the generator stride {s} on both sides. Nearest valid width "
                             f"{_nearest(width, s)}, height {_nearest(height, s)}; or turn tileable off to crop "
                             "any size from a larger texture")
        return height // s, width // s

    def wave_vectors(self, z_global: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[B, P, 2] wave vectors (ky, kx) in radians per cell, snapped to a whole number of
        periods over the h x w torus (a free frequency would leave a seam where the grid wraps);
        gradients pass straight through the snap."""
        k = math.pi * torch.tanh(self.waves(z_global)).view(-1, self.cfg.n_periodic, 2)
        snapped = self._snap(self._snap(k, self.cfg.crop // self.cfg.stride), torch.tensor([h, w], device=k.device))
        return k + (snapped - k).detach()

    @staticmethod
    def _snap(k: torch.Tensor, cells: int | torch.Tensor) -> torch.Tensor:
        # First to the training grid's lattice, so that training and generation see the same
        # frequencies; that lattice is exact on any grid whose sides are multiples of it.
        return torch.round(k * cells / (2 * math.pi)) * (2 * math.pi) / cells

    def global_code(self, z_global: torch.Tensor, exemplar: torch.Tensor | int | None = None) -> torch.Tensor:
        """The global noise plus the learned code of `exemplar` (an index, or one per sample;
        None is exemplar 0). Models trained on one exemplar have no codes and ignore it."""
        if self.codes is None:
            return z_global
        index = torch.as_tensor(0 if exemplar is None else exemplar, dtype=torch.long, device=z_global.device)
        if index.min() < 0 or index.max() >= len(self.codes):
            raise ValueError(f"exemplar must be in 0..{len(self.codes) - 1} (this model was trained on "
                             f"{len(self.codes)} exemplars), got {index.tolist()}")
        return z_global + self.codes[index].expand_as(z_global)

    def noise(self, z_local: torch.Tensor, z_global: torch.Tensor, phase: torch.Tensor,
              exemplar: torch.Tensor | int | None = None, exact_repeat: bool = False) -> torch.Tensor:
        """Spatial noise [B, n_noise + scale_noise_channels, h, w] from local [B, L, h, w] (its
        channels past n_local: the per-scale noise, packed), global [B, G], phase [B, P]; the
        packed per-scale noise goes last, where `synthesize` takes it from. exact_repeat: the
        exemplar's repeat as measured, not snapped to whole repeats (`repeat_vectors`)."""
        b, _, h, w = z_local.shape
        z_global = self.global_code(z_global, exemplar)
        n = self.cfg.n_local
        parts = [z_local[:, :n], z_global[:, :, None, None].expand(b, -1, h, w)]
        if self.cfg.n_periodic:
            k = self.wave_vectors(z_global, h, w)
            y = torch.arange(h, dtype=k.dtype, device=k.device).view(1, 1, h, 1)
            x = torch.arange(w, dtype=k.dtype, device=k.device).view(1, 1, 1, w)
            parts.append(torch.sin(k[..., 0, None, None] * y + k[..., 1, None, None] * x
                                   + phase[:, :self.cfg.n_periodic, None, None]))
        if self.cfg.n_repeat:
            waves = self.repeat_vectors(h, w, snap=not (self.training or exact_repeat))
            parts.append(repeat_field(waves, phase[:, self.cfg.n_periodic:], h, w))
        return torch.cat(parts + [z_local[:, n:]], 1)

    def repeat_vectors(self, h: int, w: int, snap: bool = True) -> torch.Tensor:
        """[R, 2] the exemplar's repeat waves in cycles per cell. A picture snaps them to a whole
        number of repeats over its grid, at least one, so that it tiles: 205 px tiles come out 204.8 px
        at 1024 px, 256 px at 256. Training, the calibration's measurements and pictures that need not
        tile take them as measured (a crop holds less than a repeat, and the photo's statistics are
        those of its own repeat)."""
        k = torch.tensor(self.cfg.repeat_waves, dtype=torch.float32) * self.cfg.stride
        if not snap:
            return k
        cells = torch.tensor([h, w], dtype=torch.float32)
        count = torch.round(k * cells)
        # at least one repeat along the axis the wave runs most along (a zero wave would be flat)
        count = torch.where((count == 0).all(-1, keepdim=True) & (k.abs() == k.abs().amax(-1, keepdim=True)),
                            torch.sign(k), count)
        return count / cells

    def scale_noise(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The noise [B, n_scale_noise, h * 2^j, w * 2^j] of each scale j = 1 .. g_blocks (each
        block's output, then the image) unpacked from z's last channels: each cell's values become
        its pixels at that scale, so noise that tiles over the cells tiles at every scale."""
        n, out, start = self.cfg.n_scale_noise, [], self.cfg.n_noise
        for j in range(1, self.cfg.g_blocks + 1 if n else 1):
            f = 2 ** j
            out.append(F.pixel_shuffle(z[:, start:start + n * f * f], f))
            start += n * f * f
        return out

    def sample_noise(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw random inputs (local, global, phase) for `noise`; drawn on the CPU so a seed gives
        the same picture on every device. The global code and the wave phases are drawn first, so
        a seed is the same texture at every size (only the local noise depends on the size). The
        per-scale noise is drawn last, each scale at its own size, and rides packed in local."""
        h, w = self.grid(height, width)
        c = self.cfg
        z_global = torch.randn(batch, c.n_global, generator=generator)
        phase = torch.rand(batch, c.n_periodic + c.n_repeat, generator=generator) * (2 * math.pi)
        z_local = torch.randn(batch, c.n_local, h, w, generator=generator)
        if c.n_scale_noise:
            scales = [F.pixel_unshuffle(torch.randn(batch, c.n_scale_noise, h * 2 ** j, w * 2 ** j,
                                                    generator=generator), 2 ** j) for j in range(1, c.g_blocks + 1)]
            z_local = torch.cat([z_local, *scales], 1)
        return z_local.to(device), z_global.to(device), phase.to(device)

    def forward(self, z_local: torch.Tensor, z_global: torch.Tensor, phase: torch.Tensor,
                exemplar: torch.Tensor | int | None = None) -> torch.Tensor:
        """Image [B, C, h*stride, w*stride] in [-1, 1] from the raw inputs of `sample_noise`."""
        return self.synthesize(self.noise(z_local, z_global, phase, exemplar))

    def synthesize(self, z: torch.Tensor, check: Callable[[float], None] | None = None, band: int = 0
                   ) -> torch.Tensor:
        """Image from an already built spatial noise tensor (used for morphing between codes).

        band > 0: each layer is computed a band of rows costing about `band` multiply-adds at a
        time, its input rows read with a margin that covers the layer's reach, and `check(fraction
        of the layers done)` is called after every band (it may raise to stop). Each layer is the
        same function of its input rows, so the result is the one-pass result (to float rounding),
        and a 4096^2 picture can be stopped within a fraction of a second."""
        done, layers = [0], len(self.head_convs) + len(self.blocks) + 2

        def rows(layer: Callable, x: torch.Tensor, scale: int, reach: int, cout: int) -> torch.Tensor:
            """layer(input rows, the output row its first row makes) over x, in bands of rows."""
            h, w = x.shape[-2:]
            cost = w * scale * scale * x.shape[1] * (cout + 16)  # per input row: its multiply-adds, and 16 for
            step = max(1, band // cost) if band else h  # the resampling and normalising passes over its input
            if step >= h:
                out = layer(x, 0)
            else:  # rows r0 - reach .. r1 + reach (wrapping) make output rows r0 .. r1 exactly
                out = None
                for r0 in range(0, h, step):
                    r1 = min(r0 + step, h)
                    index = torch.arange(r0 - reach, r1 + reach, device=x.device) % h
                    part = layer(x[..., index, :], (r0 - reach) * scale)[..., reach * scale:(reach + r1 - r0) * scale, :]
                    if out is None:
                        out = part.new_empty(part.shape[:-2] + (h * scale, part.shape[-1]))
                    out[..., r0 * scale:r1 * scale, :] = part
                    if check:
                        check((done[0] + r1 / h) / layers)
            done[0] += 1
            if check:
                check(done[0] / layers)
            return out

        def noise_rows(noise: torch.Tensor | None, first: int, count: int) -> torch.Tensor | None:
            if noise is None or (first == 0 and count == noise.shape[-2]):
                return noise
            return noise[..., torch.arange(first, first + count, device=noise.device) % noise.shape[-2], :]

        mode = self.cfg.upsample
        scale_noise = self.scale_noise(z) if self.cfg.n_scale_noise else [None] * (len(self.blocks) + 1)
        x = rows(lambda t, _: F.leaky_relu(self.head(t[:, :self.cfg.n_noise]), 0.2), z, 1, 2, self.head.out_channels)
        for conv in self.head_convs:
            x = rows(lambda t, _, conv=conv: F.leaky_relu(conv(t), 0.2), x, 1, 2, conv.out_channels)
        for block, noise in zip(self.blocks, scale_noise):
            x = rows(lambda t, first, block=block, noise=noise: block(t, noise_rows(noise, first, 2 * t.shape[-2])),
                     x, 2, up_reach(mode), block.conv.out_channels)
        c = self.cfg.out_channels
        if self.subpixel:
            return rows(lambda t, _: torch.tanh(F.pixel_shuffle(self.out(t), 2)), x, 2, 2, c)
        last = LOWPASS_LAST if mode == "lowpass" and self.out_noise is None else mode

        def out(t: torch.Tensor, first: int) -> torch.Tensor:
            y = up_conv(t, self.out, last)
            if self.out_noise is not None:  # rows first - 1 .. first + len + 1 of the noise, for its 3x3 filter
                noise = F.pad(noise_rows(scale_noise[-1], first - 1, y.shape[-2] + 2), (1, 1, 0, 0), mode="circular")
                y = y + F.conv2d(noise.to(y.dtype), NOISE_GAIN * self.out_noise)
            return torch.tanh(y)
        return rows(out, x, 2, up_reach(last), c)


class PatchDiscriminator(nn.Module):
    """Stride-2 4x4 convolutions, then a 3x3 conv to one logit per patch. With several
    exemplars each logit also gets <embed(exemplar), features> (projection)."""

    def __init__(self, cfg: TextureGANConfig):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if cfg.spectral_norm else (lambda m: m)
        layers, cin = [], cfg.out_channels + 2 * cfg.n_repeat
        for i in range(cfg.d_layers):
            cout = min(cfg.d_width * 2 ** i, cfg.d_max_width)
            layers += [sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(sn(nn.Conv2d(cin, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)
        self.embed = nn.Parameter(torch.zeros(cfg.n_exemplars, cin)) if cfg.n_exemplars > 1 else None

    def forward(self, x: torch.Tensor, exemplar: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net[:-1](x)
        out = self.net[-1](h)
        if self.embed is not None and exemplar is not None:
            out = out + (self.embed[exemplar][:, :, None, None] * h).sum(1, keepdim=True)
        return out


class Discriminator(nn.Module):
    """One patch discriminator per scale (pix2pixHD's multi-scale discriminator, Wang et al. 2018):
    scale s judges the crop box-filtered down 2^s times, so its patches span 2^s times as many
    pixels and structure larger than one patch (tiles, cobbles, plank joints) is judged too.
    Returns the logit maps, finest first."""

    def __init__(self, cfg: TextureGANConfig):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(cfg) for _ in range(cfg.d_scales))

    def forward(self, x: torch.Tensor, exemplar: torch.Tensor | None = None) -> list[torch.Tensor]:
        return [d(F.avg_pool2d(x, 2 ** s) if s else x, exemplar) for s, d in enumerate(self.scales)]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        # Runs checkpointed when there was one scale stored it as the module itself: they resume.
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "scales.")]:
            state_dict[f"{prefix}scales.0.{key[len(prefix):]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


def d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor], kind: str) -> torch.Tensor:
    """The mean over the discriminator's scales."""
    if kind == "hinge":
        losses = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)]
    else:
        losses = [F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(real_logits, fake_logits)]
    return sum(losses) / len(losses)


def g_loss(fake_logits: list[torch.Tensor], kind: str) -> torch.Tensor:
    losses = [-f.mean() if kind == "hinge" else F.softplus(-f).mean() for f in fake_logits]
    return sum(losses) / len(losses)


def repeat_field(waves: torch.Tensor, phase: torch.Tensor, h: int, w: int,
                 origin: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 2R, h, w]: sin and cos of each wave's angle 2 pi k . (origin + (y, x)) + phase at every
    position, from waves [R, 2] in cycles per position, phase [B, R], origin [B, 2] (default 0)."""
    waves = waves.to(phase.device, torch.float32)
    y = torch.arange(h, dtype=torch.float32, device=phase.device).view(1, 1, h, 1)
    x = torch.arange(w, dtype=torch.float32, device=phase.device).view(1, 1, 1, w)
    if origin is not None:
        phase = phase + 2 * math.pi * (origin.float() @ waves.T)
    angle = 2 * math.pi * (waves[:, 0, None, None] * y + waves[:, 1, None, None] * x) + phase[:, :, None, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], 1)


def lattice_energy(fake: torch.Tensor, period: int) -> torch.Tensor:
    """[period] gradient energy of tiling crops [B, C, H, W] at each position modulo `period`, over
    its mean (horizontal and vertical gaps pooled, wrapping: the crops tile). The generator's cells
    start at the crop's origin, so its lattice shows as positions away from 1."""
    gx = (fake - fake.roll(1, -1)).pow(2).mean((0, 1, 2))  # per column gap, x-1 to x
    gy = (fake - fake.roll(1, -2)).pow(2).mean((0, 1, 3))
    energy = (gx.view(-1, period).mean(0) + gy.view(-1, period).mean(0)) / 2 + 1e-12
    return energy / energy.mean()


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)
