"""Seamless textures from a trained generator.

- `load(config, weights, device)` rebuilds a `TextureModel` from a checkpoint's exported nets.
- `TextureModel` generates seamless textures (calibrated to the exemplar's spectrum and grey
  levels as measured when the model was saved), morphs between global codes (or between the
  exemplars of a model trained on several), animates along a latent loop.
- `pbr_maps` derives height, normal and roughness maps from any texture.
"""
from __future__ import annotations

import ctypes
import math
import platform
from typing import Any, Callable

import numpy as np
import torch

from engine.config import build
from engine.device import interactive_threads, intra_op_threads
from engine.texture.calibration import calibrate, code_moments
from engine.texture.model import Generator, TextureGANConfig
from engine.texture.tints import tint_layout

# Long calls report through `progress(fraction, message)`, which may raise (the engine's raises
# engine.ops.Cancelled once the op is cancelled) to stop them.
ProgressFn = Callable[[float, str], None]

# Pictures over LARGE pixels are synthesised a band of each layer's rows at a time (about BAND
# multiply-adds, Generator.synthesize), with a progress report (and so a chance to cancel) after
# each band: a fraction of a second each on 2 CPU cores, where one layer of a 4096^2 picture took
# seconds. Smaller ones
# are made in one pass as before (bands give the same pixels: exactly for "lowpass" models, to
# float rounding, ~1e-6, for the others).
LARGE = 1024 * 1024
BAND = 1 << 28
CONVERT_ROWS = 512  # rows of a large picture turned to uint8 between two progress reports
SYNTHESIS_SHARE = 0.85  # of a picture's progress; calibrating it is the rest


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _uint8_hwc(x: torch.Tensor) -> torch.Tensor:
    """One [C, H, W] in [-1, 1] -> a uint8 view [H, W, C]: `to_uint8`'s values, in place."""
    return x.add(1).mul_(127.5).clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0)


def unit_normals(x: torch.Tensor) -> torch.Tensor:
    """Unit normal vectors [3, H, W] from the surface's slopes: x and y as they are (where
    x*x + y*y < 1; longer ones scaled down to that) and z = sqrt(1 - x*x - y*y), at least 1e-3.
    The calibration gave x and y the exemplar's spectra and histograms; scaled to unit length
    with the z the generator made alongside, the steepest slopes lost their tails (z's spread was
    0.55-0.86x the exemplar's), and normal swd read 1.27 over the suite's sets where this reads 1.19
    (docs/BENCHMARKS.md, "Normals from their slopes")."""
    x = x.clone()
    most = 1 - 1e-6  # so that z >= 1e-3
    slope = torch.addcmul(x[0] * x[0], x[1], x[1])
    x[:2] /= slope.clamp(min=most).div_(most).sqrt_()  # exactly 1 where the slope fits
    x[2] = slope.clamp_(max=most).neg_().add_(1).sqrt_()
    return x


# glibc hands every block over 32 MB (and, once freed, smaller ones at the top of the heap) back
# to the kernel at once, so each of a picture's full-size tensors (a 1024^2 PBR set's nine
# channels: 38 MB) came back as fresh pages: 240,000 page faults per 1024^2 set, 0.59 of its 1.0 s
# on one thread. Blocks up to MMAP_THRESHOLD stay in the process and are reused (the engine then
# holds ~690 MB after a 1024^2 set instead of ~360 MB); free memory over TRIM_THRESHOLD at the top
# of the heap still goes back, and larger pictures' blocks are still returned at once.
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_kept_memory = [False]


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks up to MMAP_THRESHOLD for reuse (once per process; a no-op
    elsewhere than glibc)."""
    if _kept_memory[0] or platform.libc_ver()[0] != "glibc":
        return
    _kept_memory[0] = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):
        pass


def load(config: dict[str, Any], weights: dict[str, torch.Tensor], device: str | torch.device = "cpu"
         ) -> TextureModel:
    """A TextureModel from a checkpoint: `config` is dataclasses.asdict(TextureGANConfig) and
    `weights` holds "G_ema.<param>" tensors (as the checkpoint store exports them)."""
    keep_freed_memory()
    # Models saved before `upsample` existed all ended in a sub-pixel conv, and those saved before
    # `n_scale_noise` had no per-scale noise: keep them loading as they were. (Those saved before
    # `g_head_layers` and `d_scales` have the defaults: one head convolution, one scale.)
    cfg = build(TextureGANConfig, {"upsample": "pixel_shuffle", "n_scale_noise": 0}, config)
    state = {k[len("G_ema."):]: v for k, v in weights.items() if k.startswith("G_ema.")}
    if not state:
        raise ValueError(f"no 'G_ema.*' weights among {sorted(weights)[:5]}...; is this a texture checkpoint?")
    G = Generator(cfg)
    G.load_state_dict(state)
    return TextureModel(cfg, G.to(device).eval(), device)


def morph_weights(cells: int, stride: int, tileable: bool, start: int = 0, span: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """How far a morph is from a to b at each noise cell column and at each pixel column (the
    same curve through the cells' centres, so the tone it blends has no step at cell borders).
    Tileable: a -> b -> a, periodic; else linear across the `span` px shown from pixel column
    `start` (default: all of it), from the centre of its first cell to its last's, pure a before
    it and pure b after it."""
    span = cells * stride if span is None else span

    def weight(pos: torch.Tensor) -> torch.Tensor:  # pos in pixels, at pixel or cell centres
        if tileable:
            return (1 - torch.cos(2 * math.pi * pos / (cells * stride))) / 2
        return ((pos - start - stride / 2) / max(span - stride, 1)).clamp(0, 1)

    pixels = torch.arange(cells * stride, dtype=torch.float32) + 0.5
    centres = (torch.arange(cells, dtype=torch.float32) + 0.5) * stride
    return weight(centres), weight(pixels)


class TextureModel:
    """A trained generator with the user-facing operations. Arrays out are uint8 HxWxC.

    A model trained on several exemplars (config.n_exemplars > 1) makes the texture of the one
    named by `exemplar`; None picks it from the seed (seed % n_exemplars), so seeds cover them all.
    Single-exemplar models take exemplar None or 0.
    """

    def __init__(self, config: TextureGANConfig, G: Generator, device: str | torch.device = "cpu"):
        self.config, self.G, self.device = config, G.eval(), torch.device(device)
        self.channels, self.stride = config.channels, config.stride
        self.n_exemplars = max(config.n_exemplars, 1)
        self.layout = config.layout

    @property
    def maps(self) -> tuple[str, ...]:
        """The surface maps this model makes beside its colour ("normal", "roughness", ...)."""
        return self.config.maps

    def size_for(self, width: int, height: int, tileable: bool) -> tuple[int, int]:
        """The size to synthesise for a width x height result; a ValueError says why one is impossible."""
        return self._layout(width, height, tileable)[:2]

    def margin(self) -> int:
        """Non-tileable: px synthesised beyond each side of the result and cropped away, so its two
        ends are this far apart twice over around the (periodic) synthesis and do not wrap: one
        training crop, the generator's whole view and more, or the stride at least."""
        return max(self.config.crop, self.stride)

    def _layout(self, width: int, height: int, tileable: bool) -> tuple[int, int, int, int]:
        """(synthesised width, height, x and y of the result in it)."""
        if tileable:
            self.G.grid(height, width)  # raises a clear ValueError
            return width, height, 0, 0
        if width < 1 or height < 1:
            raise ValueError(f"size must be positive, got {width}x{height}")
        s, m = self.stride, self.margin()
        w, h = -(-(width + 2 * m) // s) * s, -(-(height + 2 * m) // s) * s  # generate larger, crop afterwards
        return w, h, (w - width) // 2, (h - height) // 2

    def _exemplar(self, exemplar: int | None, seed: int) -> int:
        if exemplar is None:
            return seed % self.n_exemplars
        if not 0 <= exemplar < self.n_exemplars:
            raise ValueError(f"exemplar must be in 0..{self.n_exemplars - 1}: this model was trained on "
                             f"{self.n_exemplars} exemplar(s); got {exemplar}")
        return exemplar

    def _noise(self, width: int, height: int, seed: int) -> tuple[torch.Tensor, ...]:
        z_local, z_global, phase = self.G.sample_noise(1, height, width, torch.Generator().manual_seed(seed), self.device)
        if self.config.global_codes:
            codes = self.config.global_codes
            z_global = torch.tensor([codes[seed % len(codes)]], dtype=z_global.dtype, device=z_global.device)
        return z_local, z_global, phase

    @torch.inference_mode()
    def _picture(self, z: torch.Tensor, width: int, height: int,
                 tone: Callable[[], tuple[torch.Tensor, torch.Tensor]], x0: int = 0, y0: int = 0,
                 progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
        """Every map of the calibrated picture of noise z, cropped at (x0, y0) to width x height:
        {"image": HxWxC, "normal": HxWx3, "roughness": HxW, ...}, uint8, each its own contiguous
        array; `tone()` gives the moments of its codes (called only for a model that sets each
        picture's tone). Normal vectors come out unit length."""
        report = progress or (lambda fraction, message: None)
        with intra_op_threads(interactive_threads()):
            moments = tone() if self.config.image_moments else None
            report(0.0, "synthesising")
            large = z.shape[-2] * z.shape[-1] * self.stride ** 2 > LARGE
            raw = self.G.synthesize(z, lambda f: report(SYNTHESIS_SHARE * f, "synthesising"), BAND if large else 0)
            raw = raw.contiguous()  # per-channel slices for the Fourier transforms
            out = {name: np.empty((height, width, part.stop - part.start), np.uint8)
                   for name, part in self.layout.items()}
            if large:  # a channel at a time (the normal's three together, the colour's if mixed): bounded memory
                groups = [self.layout["normal"]] if "normal" in self.layout else []
                groups += [self.layout["image"]] if self.config.colour_mix else []  # mixed together
                groups += [slice(c, c + 1) for c in range(self.config.out_channels)
                           if not any(g.start <= c < g.stop for g in groups)]
                layout = tint_layout(z, self.config, self.config.cell_tint) if self.config.cell_tint else None
            else:  # every channel calibrated in one go (each alone: the same pixels), then map by map
                groups = list(self.layout.values())
                calibrated = calibrate(raw, z, self.config, moments)[0, :, y0:y0 + height, x0:x0 + width]
            for i, group in enumerate(groups):
                fraction = SYNTHESIS_SHARE + (1 - SYNTHESIS_SHARE) * i / len(groups)
                check = (lambda: report(fraction, "calibrating")) if large else None
                if large:
                    part = calibrate(raw[:, group], z, self.config, moments, group, check, layout)
                    part = part[0, :, y0:y0 + height, x0:x0 + width]
                else:
                    part = calibrated[group]
                name, where = next((n, p) for n, p in self.layout.items() if p.start <= group.start < p.stop)
                target = torch.from_numpy(out[name][..., group.start - where.start:group.stop - where.start])
                for r in range(0, height, CONVERT_ROWS if large else height):  # to uint8 in bands of rows
                    rows = part[:, r:r + CONVERT_ROWS] if large else part
                    if group == self.layout.get("normal"):
                        rows = unit_normals(rows)
                    target[r:r + rows.shape[1]] = _uint8_hwc(rows)
                    if large:
                        check()
                report(SYNTHESIS_SHARE + (1 - SYNTHESIS_SHARE) * (i + 1) / len(groups), "calibrating")
        return {name: a if a.shape[-1] > 1 or name == "image" else a[..., 0] for name, a in out.items()}

    def generate_maps(self, width: int, height: int, seed: int = 0, tileable: bool = True, *,
                      exemplar: int | None = None, progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
        """`generate`'s texture as "image" and every surface map the model makes, from the same noise
        (uint8: normal HxWx3 unit vectors in the OpenGL convention, the others HxW)."""
        w, h, x0, y0 = self._layout(width, height, tileable)
        which = self._exemplar(exemplar, seed)
        if progress:
            progress(0.0, "generating")
        z_local, z_global, phase = self._noise(w, h, seed)
        with torch.inference_mode():
            z = self.G.noise(z_local, z_global, phase, which, exact_repeat=not tileable)
            picture = self._picture(z, width, height, lambda: code_moments(self.G, z_global, phase, which),
                                    x0, y0, progress)
        if progress:
            progress(1.0, "done")
        return picture

    def generate(self, width: int, height: int, seed: int = 0, tileable: bool = True, *,
                 exemplar: int | None = None, progress: ProgressFn | None = None) -> np.ndarray:
        """One texture, uint8 [height, width, channels]. With tileable=True the size must be a
        multiple of `stride` and the result wraps seamlessly; otherwise any size is cropped from
        the middle of a larger one (`margin` px more on every side), so its ends do not wrap, and a
        repeating exemplar's repeat comes as measured, where a tileable picture holds whole repeats."""
        return self.generate_maps(width, height, seed, tileable, exemplar=exemplar, progress=progress)["image"]

    def morph(self, width: int, height: int, seed_a: int, seed_b: int, tileable: bool = True, *,
              exemplar_a: int | None = None, exemplar_b: int | None = None,
              progress: ProgressFn | None = None) -> np.ndarray:
        """`morph_maps`' texture, uint8 [height, width, channels]."""
        return self.morph_maps(width, height, seed_a, seed_b, tileable, exemplar_a=exemplar_a, exemplar_b=exemplar_b,
                               progress=progress)["image"]

    def morph_maps(self, width: int, height: int, seed_a: int, seed_b: int, tileable: bool = True, *,
                   exemplar_a: int | None = None, exemplar_b: int | None = None,
                   progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
        """Blend the global code of (seed_a, exemplar_a) into that of (seed_b, exemplar_b) across
        the width; local noise and wave phases stay seed_a's. Tileable: a -> b at the centre -> a
        at the edges (a periodic blend, so the result still wraps exactly); else a linear a -> b
        from left to right, which does not wrap. Exemplars default as in `generate`."""
        w, h, x0, y0 = self._layout(width, height, tileable)
        which_a, which_b = self._exemplar(exemplar_a, seed_a), self._exemplar(exemplar_b, seed_b)
        if progress:
            progress(0.0, "morphing")
        z_local, g_a, phase = self._noise(w, h, seed_a)
        g_b = self._noise(w, h, seed_b)[1]
        blend, per_pixel = (t.to(self.device).view(1, 1, 1, -1)
                            for t in morph_weights(z_local.shape[-1], self.stride, tileable, x0, width))

        def tone() -> tuple[torch.Tensor, torch.Tensor]:  # each column's moments blend as the codes around it do
            a, b = code_moments(self.G, g_a, phase, which_a), code_moments(self.G, g_b, phase, which_b)
            return torch.lerp(a[0], b[0], per_pixel), torch.lerp(a[1], b[1], per_pixel)

        with torch.inference_mode():
            exact = not tileable
            z = torch.lerp(self.G.noise(z_local, g_a, phase, which_a, exact),
                           self.G.noise(z_local, g_b, phase, which_b, exact), blend)
            picture = self._picture(z, width, height, tone, x0, y0, progress)
        if progress:
            progress(1.0, "done")
        return picture

    def animate(self, width: int, height: int, frames: int, seed: int = 0, tileable: bool = True,
                loop: bool = True, *, exemplar: int | None = None, progress: ProgressFn | None = None,
                on_frame: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
        """`frames` textures along a latent path, uint8 [frames, height, width, channels].

        All noise moves on a great circle a·cos θ + b·sin θ, which keeps it Gaussian at every
        frame; loop=True goes once round (the last frame leads back into the first), else a
        quarter turn from a to b. Wave phases advance one period per loop. `on_frame(i, frame)`
        sees each frame as soon as it is made (e.g. to send a preview).
        """
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        w, h, x0, y0 = self._layout(width, height, tileable)
        which = self._exemplar(exemplar, seed)
        a, b = self._noise(w, h, seed), self._noise(w, h, seed + 1_000_003)
        out = np.empty((frames, height, width, self.channels), np.uint8)
        for i in range(frames):
            theta = 2 * math.pi * i / frames if loop else (math.pi / 2) * i / max(frames - 1, 1)
            c, s = math.cos(theta), math.sin(theta)
            phase = a[2] + (theta if loop else s * (b[2] - a[2]))
            z_global = c * a[1] + s * b[1]
            with torch.inference_mode():
                z = self.G.noise(c * a[0] + s * b[0], z_global, phase, which, exact_repeat=not tileable)
                picture = self._picture(z, width, height, lambda: code_moments(self.G, z_global, phase, which), x0, y0)
                out[i] = picture["image"]
            if on_frame:
                on_frame(i, out[i])
            if progress:
                progress((i + 1) / frames, f"frame {i + 1}/{frames}")
        return out


def pbr_maps(image: np.ndarray, strength: float = 2.0, tileable: bool = True,
             progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    """Height, normal (OpenGL convention, +Y up, as Blender expects) and roughness maps from a
    uint8 texture, all uint8: height and roughness HxW, normal HxWx3. The height estimate is the
    blurred luminance; with tileable=True all filters wrap, so the maps tile like the texture.
    `progress` hears of every step, each a fraction of a second at 4096^2 (it may raise to stop)."""
    from scipy.ndimage import gaussian_filter1d
    report = progress or (lambda fraction, message: None)
    mode = "wrap" if tileable else "reflect"
    done = [0]

    def step(message: str) -> None:
        done[0] += 1
        report(min(done[0] / 10, 1.0), message)

    def blur(x: np.ndarray, sigma: float) -> np.ndarray:  # scipy's gaussian_filter, one axis at a time
        x = gaussian_filter1d(x, sigma, axis=0, mode=mode)
        step("blurring")
        return gaussian_filter1d(x, sigma, axis=1, mode=mode)

    img = image.astype(np.float32) / 255.0
    img = img[..., None] if img.ndim == 2 else img
    lum = img[..., 0] if img.shape[-1] < 3 else img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    step("estimating height")
    height = blur(lum, 1.0)
    height = (height - height.min()) / max(float(height.max() - height.min()), 1e-6)
    step("estimating height")
    if tileable:
        dx = (np.roll(height, -1, 1) - np.roll(height, 1, 1)) / 2
        step("estimating normals")
        dy = (np.roll(height, -1, 0) - np.roll(height, 1, 0)) / 2
    else:
        dy, dx = np.gradient(height)
    step("estimating normals")
    u8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    normal = np.empty(height.shape + (3,), np.uint8)
    rows = max(1, (1 << 21) // height.shape[1])
    for r in range(0, len(height), rows):  # pointwise, a band of rows at a time
        part = np.stack([-dx[r:r + rows] * strength * 8, dy[r:r + rows] * strength * 8,
                         np.ones_like(dx[r:r + rows])], -1)  # rows grow downwards
        normal[r:r + rows] = u8((part / np.linalg.norm(part, axis=-1, keepdims=True) + 1) / 2)
        report(done[0] / 10, "estimating normals")
    detail = np.abs(lum - blur(lum, 2.0))
    detail = detail / max(float(detail.max()), 1e-6)
    step("estimating roughness")
    roughness = u8(np.clip(0.55 + 0.35 * (1 - height) + 0.25 * detail - 0.15, 0.0, 1.0))  # cavities rougher
    step("estimating roughness")
    return {"height": u8(height), "normal": normal, "roughness": roughness}
