"""Texture kind: glue between the periodic spatial GAN, the shared trainer and the engine.

- `TextureObjective` is what `engine.train` trains (nets G, D, G_ema; groups D then G).
- `load(config, weights, device)` rebuilds a `TextureModel` from a checkpoint's exported nets.
- `TextureModel` generates seamless textures (calibrated to the exemplar's spectrum and grey
  levels as measured when the model was saved), morphs between global codes (or between the
  exemplars of a model trained on several), animates along a latent loop; `pbr_maps` derives
  height, normal and roughness maps from any texture.
Metrics and the judging sheet live in `engine.kinds.texture_eval`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from engine.data.images import DEMO_EXEMPLARS, ImageCrops, LoadReport, exemplar, load_images, to_channels
from engine.device import interactive_threads, intra_op_threads
from engine.kinds.texture_calibration import calibrate, code_moments, measure
from engine.models.texture_gan import (Discriminator, Generator, TextureGANConfig, d_loss, ema_update,
                                       g_loss, make_ema)
from engine.train.objective import Objective

ProgressFn = Callable[[float, str], None]
CancelledFn = Callable[[], bool]

# How the stabilisation was chosen (reproduce: bench/texture_stabilisation_probe.py). Tiny config
# (g_width 16, crop 64, batch 8), procedural `bricks` exemplar, Adam 2e-4 betas (0.5, 0.99), one
# CPU thread; ratios of 16 G_ema samples to the real-vs-real baseline (lower is better, except
# diversity: ~1 good, << 1 collapse):
#   recipe       steps   gram   swd   spectrum   diversity
#   nonsat        250    2.88   7.95   134        0.11   collapsed
#   hinge + SN    250    5.54   8.55   112        0.28   collapsing
#   hinge + SN    600    4.42   8.02   142        0.13   collapsed
#   nonsat + R1   250    4.49   5.73    68        1.52
#   nonsat + R1   600    2.68   4.19    33        1.10   best on every distance, diverse
#   hinge + R1    600    2.70   6.33    91        2.03
# Hence non-saturating loss, R1 (lazily every 4th D step), no spectral norm: spectral norm
# starved this small D and G collapsed to one look. (R1's gamma came down to 0.1 below.)
#
# Upsampling and the D/G balance (reproduce: bench/texture_recipe_probe.py). Shipped recipe's
# model (engine/recipes/texture.toml), gravel, 500 steps, batch 8, G lr 2e-4, one CPU thread;
# ratios of 12 G_ema samples at 256^2:
#   upsample        R1 gamma  D lr    gram   swd   spectrum  diversity  by eye
#   pixel_shuffle   1         2e-4    1.17   1.93  12.9      2.55       worms + 2x2 pixel grid
#   bilinear        1         2e-4    2.75   5.07  37.8      7.08       few big smooth blobs
#   nearest         1         2e-4    1.79   2.35   9.0      6.34       blocky streaks
#   either, G+D lr 1e-3       1e-3    6.9   13.5  250        0.00       collapsed to flat gray
#   bilinear        0.1       8e-4    1.63   3.61  29.2      5.10       big smooth blobs
#   nearest         0.1       8e-4    1.11   1.50   5.7      3.88       stone-sized cells, streaks
# With gamma 1 and equal rates d_loss sat at ln 4: D could not tell the worms from gravel, so G
# learned little. Hence TextureGANConfig's defaults: nearest resize + circular conv (no sub-pixel
# grid), R1 gamma 0.1, D at 4x G's rate (TTUR). Shipped (15 CPU minutes, 2108 steps, 16 samples
# at 96^2): spectrum 7.70 -> 1.59, gram 0.97 -> 0.59, swd 1.12 -> 0.92; gravel-like stones
# instead of worms. Brick (rot90 off, 500 steps): gram 0.90 swd 1.09 spectrum 1.13, but only
# vertical mortar lines yet.
#
# Scales beyond the discriminator's ~80 px view (tried in bench/texture_recipe_probe.py, code
# not kept): G made 192 px images cut into four crops for D, so its outputs could vary beyond
# one crop. 2400 gravel steps: spectrum 2.36 (2.46 with 4 low-passed noise channels) against
# 1.95 for the plain recipe, and a visible cell grid. What worked is measuring the missing
# power after training and restoring it at generation (engine/kinds/texture_calibration.py).


class GenerationCancelled(Exception):
    """Raised when a long call sees `cancelled()` turn true."""


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the trainer may wrap nets for distributed training)."""
    return getattr(net, "module", net)


def resolve_images(images: str | Path | np.ndarray | list[np.ndarray], channels: int, min_size: int
                   ) -> tuple[list[np.ndarray], LoadReport]:
    """Exemplar arrays in [-1, 1] from a path, a demo name ('brick', 'grass', 'gravel') or arrays."""
    if isinstance(images, (str, Path)) and not Path(images).expanduser().exists() and str(images) in DEMO_EXEMPLARS:
        arrays, report = [exemplar(str(images))], LoadReport(used=[(f"skimage:{images}", (512, 512))])
    elif isinstance(images, (str, Path)):
        if not Path(images).expanduser().exists():
            raise FileNotFoundError(f"no such file or folder: {images} (or name a demo exemplar: "
                                    f"{', '.join(DEMO_EXEMPLARS)})")
        return load_images(images, channels=channels, min_size=min_size)
    else:
        arrays = [images] if isinstance(images, np.ndarray) else list(images)
        report = LoadReport(used=[(f"array[{i}]", a.shape[:2]) for i, a in enumerate(arrays)])
    out = []
    for a in arrays:
        a = np.asarray(a, np.float32)
        a = a[..., None] if a.ndim == 2 else a
        if min(a.shape[:2]) < min_size:
            raise ValueError(f"exemplar of size {a.shape[1]}x{a.shape[0]} is smaller than {min_size} px")
        out.append(to_channels((a + 1) / 2, channels) * 2 - 1)
    return out, report


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def grid_rgb(images: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 HxWx3 picture, images in rows of `cols`."""
    n, h, w, c = images.shape
    rgb = np.repeat(images, 3, -1) if c == 1 else images[..., :3]
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        out[y:y + h, x:x + w] = rgb[i]
    return out


class TextureObjective(Objective):
    export_nets = ("G_ema",)
    # GANs train badly with Adam's default beta1 = 0.9 (momentum chases a moving target); the
    # shared trainer should use these when the objective names them.
    adam_betas = (0.5, 0.99)

    def __init__(self, config: TextureGANConfig, images: str | Path | np.ndarray | list[np.ndarray], *,
                 device: str | torch.device = "cpu", flips: bool = True, rot90: bool = True,
                 jitter: float = 0.0, min_size: int | None = None, seed: int = 0):
        self.device, self.seed = torch.device(device), seed
        self.images, self.report = resolve_images(images, config.channels, min_size or config.crop)
        n = len(self.images)
        if config.n_exemplars == 0 and n > 1:  # one learned code per exemplar (morphing between them)
            config = dataclasses.replace(config, n_exemplars=n)
        elif config.n_exemplars > 1 and config.n_exemplars != n:
            raise ValueError(f"n_exemplars is {config.n_exemplars} but {n} usable image(s) were found; leave "
                             f"it at 0 (one code per image) or set 1 to pool them")
        self.config = config
        self.crops = ImageCrops(self.images, config.crop, flips=flips, rot90=rot90, jitter=jitter, seed=seed)
        self.options = dict(flips=flips, rot90=rot90, jitter=jitter, seed=seed)
        # The trained nets are channels_last: a training step is ~15% faster in that layout on a
        # CPU (oneDNN). The EMA copy, which is exported, keeps the plain layout safetensors saves.
        G = Generator(config).to(self.device)
        G_ema = make_ema(G)
        G = G.to(memory_format=torch.channels_last)
        D = Discriminator(config).to(self.device, memory_format=torch.channels_last)
        self.nets = {"G": G, "D": D, "G_ema": G_ema}
        self.lr_scale = {"D": config.d_lr_scale}
        self._fake: tuple[dict, torch.Tensor] | None = None  # (batch, G's output) from the D step

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"D": list(self.nets["D"].parameters()), "G": list(self.nets["G"].parameters())}

    def noise_for(self, keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = unwrap(self.nets["G"])
        parts = [g.sample_noise(1, self.config.crop, self.config.crop,
                                torch.Generator().manual_seed((int(k) * 1_000_003 + self.seed) & (2 ** 63 - 1)))
                 for k in keys.reshape(-1).tolist()]
        return tuple(torch.cat(p).to(self.device) for p in zip(*parts))

    def batch(self, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        z_local, z_global, phase = self.noise_for(keys)
        channels_last = dict(memory_format=torch.channels_last)
        out = {"real": self.crops.batch(keys).to(self.device).contiguous(**channels_last),
               "z_local": z_local.contiguous(**channels_last), "z_global": z_global, "phase": phase}
        if self.config.n_exemplars > 1:  # the fake of a key mimics the same exemplar as its real crop
            out["exemplar"] = self.crops.exemplar_of(keys).to(self.device)
        return out

    def loss(self, group: str, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        G, D, cfg = self.nets["G"], self.nets["D"], self.config
        z = (batch["z_local"], batch["z_global"], batch["phase"])
        which = batch.get("exemplar")
        if group == "D":
            # The fakes keep their graph: the G step that follows (G's weights unchanged by D's
            # step) reuses them instead of running G a second time.
            self._fake = (batch, G(*z, which))
            fake = self._fake[1].detach()
            real = batch["real"]
            lazy_r1 = cfg.r1_gamma > 0 and step % 4 == 0  # lazy regularisation (StyleGAN2), scaled by 4
            if lazy_r1:
                real = real.detach().requires_grad_(True)
            real_logits, fake_logits = D(real, which), D(fake, which)
            loss = d_loss(real_logits, fake_logits, cfg.loss)
            logs = {"d_loss": loss.item(), "real_score": real_logits.mean().item(),
                    "fake_score": fake_logits.mean().item()}
            if lazy_r1:
                (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                r1 = grad.pow(2).sum((1, 2, 3)).mean()
                loss = loss + cfg.r1_gamma / 2 * r1 * 4
                logs["r1"] = r1.item()
            return loss, logs
        if group == "G":
            fake = self._fake[1] if self._fake and self._fake[0] is batch else G(*z, which)
            self._fake = None
            # D's weights need no gradient here; the unwrapped D keeps a DDP wrapper from waiting for them.
            critic = unwrap(D).requires_grad_(False)
            try:
                loss = g_loss(critic(fake, which), cfg.loss)
            finally:
                critic.requires_grad_(True)
            return loss, {"g_loss": loss.item()}
        raise ValueError(f"unknown parameter group {group!r}; the texture GAN has 'D' and 'G'")

    def after_step(self, step: int) -> None:
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA follows G
        ema_update(self.nets["G_ema"], unwrap(self.nets["G"]), decay)

    @torch.no_grad()
    def samples(self, n: int, size: int, seed: int = 1234) -> torch.Tensor:
        g = self.nets["G_ema"]
        which = torch.arange(n, device=self.device) % max(self.config.n_exemplars, 1)
        return g(*g.sample_noise(n, size, size, torch.Generator().manual_seed(seed), self.device), which)

    def export_config(self, final: bool = True) -> TextureGANConfig:
        # A checkpoint while training runs gets a 1 s calibration instead of 10-30 s: nine of
        # those come out of a 10-minute budget (and a cancelled run keeps the last of them).
        quick = {} if final else {"n": 16, "rounds": 1}
        return dataclasses.replace(self.config, **measure(self.nets["G_ema"], self.images, **quick))

    def evaluate(self) -> dict[str, float]:
        from engine.kinds.texture_eval import quick_metrics
        return quick_metrics(self.nets["G_ema"], self.images, self.config.crop, device=self.device)

    def preview(self) -> np.ndarray:
        fake = to_uint8(self.samples(6, self.config.crop))
        real = to_uint8(self.crops.batch(torch.arange(2, dtype=torch.int64)))
        return grid_rgb(np.concatenate([real, fake]), cols=4)

    def data_summary(self) -> dict[str, Any]:
        return {"images": [{"path": p, "height": int(s[0]), "width": int(s[1])} for p, s in self.report.used],
                "skipped": [{"path": p, "reason": r} for p, r in self.report.skipped],
                "channels": self.config.channels, "crop": self.config.crop, **self.options}


def load(config: dict[str, Any], weights: dict[str, torch.Tensor], device: str | torch.device = "cpu"
         ) -> TextureModel:
    """A TextureModel from a checkpoint: `config` is dataclasses.asdict(TextureGANConfig) and
    `weights` holds "G_ema.<param>" tensors (as the checkpoint store exports them)."""
    known = {f.name for f in dataclasses.fields(TextureGANConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"texture model config has unknown keys {unknown}; it was made by a newer "
                         f"Atelier or is not a texture model")
    # Models saved before `upsample` existed all ended in a sub-pixel conv: keep them loading.
    cfg = TextureGANConfig(**{"upsample": "pixel_shuffle", **config})
    state = {k[len("G_ema."):]: v for k, v in weights.items() if k.startswith("G_ema.")}
    if not state:
        raise ValueError(f"no 'G_ema.*' weights among {sorted(weights)[:5]}...; is this a texture checkpoint?")
    G = Generator(cfg)
    G.load_state_dict(state)
    return TextureModel(cfg, G.to(device).eval(), device)


def morph_weights(cells: int, stride: int, tileable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """How far a morph is from a to b at each noise cell column and at each pixel column (the
    same curve through the cells' centres, so the tone it blends has no step at cell borders).
    Tileable: a -> b -> a, periodic; else linear from the first cell's centre to the last's."""
    def weight(pos: torch.Tensor) -> torch.Tensor:  # pos in cells
        return (1 - torch.cos(2 * math.pi * pos / cells)) / 2 if tileable else (pos / max(cells - 1, 1)).clamp(0, 1)

    pixels = (torch.arange(cells * stride, dtype=torch.float32) + 0.5) / stride - 0.5
    return weight(torch.arange(cells, dtype=torch.float32)), weight(pixels)


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

    def _size(self, width: int, height: int, tileable: bool) -> tuple[int, int]:
        if tileable:
            self.G.grid(height, width)  # raises a clear ValueError
            return width, height
        if width < 1 or height < 1:
            raise ValueError(f"size must be positive, got {width}x{height}")
        s = self.stride
        return -(-width // s) * s, -(-height // s) * s  # generate larger, crop afterwards

    def _exemplar(self, exemplar: int | None, seed: int) -> int:
        if exemplar is None:
            return seed % self.n_exemplars
        if not 0 <= exemplar < self.n_exemplars:
            raise ValueError(f"exemplar must be in 0..{self.n_exemplars - 1}: this model was trained on "
                             f"{self.n_exemplars} exemplar(s); got {exemplar}")
        return exemplar

    def _noise(self, width: int, height: int, seed: int) -> tuple[torch.Tensor, ...]:
        return self.G.sample_noise(1, height, width, torch.Generator().manual_seed(seed), self.device)

    @torch.inference_mode()
    def _image(self, z: torch.Tensor, width: int, height: int,
               tone: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        """The calibrated picture of noise z, cropped; `tone()` gives the moments of its codes
        (called only for a model that sets each picture's tone)."""
        with intra_op_threads(interactive_threads()):
            moments = tone() if self.config.image_moments else None
            return to_uint8(calibrate(self.G.synthesize(z), z, self.config, moments))[0, :height, :width]

    def generate(self, width: int, height: int, seed: int = 0, tileable: bool = True, *,
                 exemplar: int | None = None, progress: ProgressFn | None = None,
                 cancelled: CancelledFn | None = None) -> np.ndarray:
        """One texture, uint8 [height, width, channels]. With tileable=True the size must be a
        multiple of `stride` and the result wraps seamlessly; otherwise any size is cropped from
        a larger tile."""
        w, h = self._size(width, height, tileable)
        which = self._exemplar(exemplar, seed)
        if cancelled and cancelled():
            raise GenerationCancelled("generation cancelled before it started")
        if progress:
            progress(0.0, "generating")
        z_local, z_global, phase = self._noise(w, h, seed)
        with torch.inference_mode():
            img = self._image(self.G.noise(z_local, z_global, phase, which), width, height,
                              lambda: code_moments(self.G, z_global, phase, which))
        if progress:
            progress(1.0, "done")
        return img

    def morph(self, width: int, height: int, seed_a: int, seed_b: int, tileable: bool = True, *,
              exemplar_a: int | None = None, exemplar_b: int | None = None,
              progress: ProgressFn | None = None, cancelled: CancelledFn | None = None) -> np.ndarray:
        """Blend the global code of (seed_a, exemplar_a) into that of (seed_b, exemplar_b) across
        the width; local noise and wave phases stay seed_a's. Tileable: a -> b at the centre -> a
        at the edges (a periodic blend, so the result still wraps exactly); else a linear a -> b
        from left to right, which does not wrap. Exemplars default as in `generate`."""
        w, h = self._size(width, height, tileable)
        which_a, which_b = self._exemplar(exemplar_a, seed_a), self._exemplar(exemplar_b, seed_b)
        if cancelled and cancelled():
            raise GenerationCancelled("morph cancelled before it started")
        z_local, g_a, phase = self._noise(w, h, seed_a)
        g_b = self._noise(w, h, seed_b)[1]
        blend, per_pixel = (t.to(self.device).view(1, 1, 1, -1)
                            for t in morph_weights(z_local.shape[-1], self.stride, tileable))

        def tone() -> tuple[torch.Tensor, torch.Tensor]:  # each column's moments blend as the codes around it do
            a, b = code_moments(self.G, g_a, phase, which_a), code_moments(self.G, g_b, phase, which_b)
            return torch.lerp(a[0], b[0], per_pixel), torch.lerp(a[1], b[1], per_pixel)

        with torch.inference_mode():
            z = torch.lerp(self.G.noise(z_local, g_a, phase, which_a), self.G.noise(z_local, g_b, phase, which_b), blend)
            img = self._image(z, width, height, tone)
        if progress:
            progress(1.0, "done")
        return img

    def animate(self, width: int, height: int, frames: int, seed: int = 0, tileable: bool = True,
                loop: bool = True, *, exemplar: int | None = None, progress: ProgressFn | None = None,
                cancelled: CancelledFn | None = None,
                on_frame: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
        """`frames` textures along a latent path, uint8 [frames, height, width, channels].

        All noise moves on a great circle a·cos θ + b·sin θ, which keeps it Gaussian at every
        frame; loop=True goes once round (the last frame leads back into the first), else a
        quarter turn from a to b. Wave phases advance one period per loop. `on_frame(i, frame)`
        sees each frame as soon as it is made (e.g. to send a preview).
        """
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        w, h = self._size(width, height, tileable)
        which = self._exemplar(exemplar, seed)
        a, b = self._noise(w, h, seed), self._noise(w, h, seed + 1_000_003)
        out = np.empty((frames, height, width, self.channels), np.uint8)
        for i in range(frames):
            if cancelled and cancelled():
                raise GenerationCancelled(f"animation cancelled after {i} of {frames} frames")
            theta = 2 * math.pi * i / frames if loop else (math.pi / 2) * i / max(frames - 1, 1)
            c, s = math.cos(theta), math.sin(theta)
            phase = a[2] + (theta if loop else s * (b[2] - a[2]))
            z_global = c * a[1] + s * b[1]
            with torch.inference_mode():
                z = self.G.noise(c * a[0] + s * b[0], z_global, phase, which)
                out[i] = self._image(z, width, height, lambda: code_moments(self.G, z_global, phase, which))
            if on_frame:
                on_frame(i, out[i])
            if progress:
                progress((i + 1) / frames, f"frame {i + 1}/{frames}")
        return out


def pbr_maps(image: np.ndarray, strength: float = 2.0, tileable: bool = True) -> dict[str, np.ndarray]:
    """Height, normal (OpenGL convention, +Y up, as Blender expects) and roughness maps from a
    uint8 texture, all uint8: height and roughness HxW, normal HxWx3. The height estimate is the
    blurred luminance; with tileable=True all filters wrap, so the maps tile like the texture."""
    from scipy.ndimage import gaussian_filter
    img = image.astype(np.float32) / 255.0
    img = img[..., None] if img.ndim == 2 else img
    lum = img[..., 0] if img.shape[-1] < 3 else img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    mode = "wrap" if tileable else "reflect"
    height = gaussian_filter(lum, 1.0, mode=mode)
    height = (height - height.min()) / max(float(height.max() - height.min()), 1e-6)
    if tileable:
        dx = (np.roll(height, -1, 1) - np.roll(height, 1, 1)) / 2
        dy = (np.roll(height, -1, 0) - np.roll(height, 1, 0)) / 2
    else:
        dy, dx = np.gradient(height)
    normal = np.stack([-dx * strength * 8, dy * strength * 8, np.ones_like(height)], -1)  # rows grow downwards
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    detail = np.abs(lum - gaussian_filter(lum, 2.0, mode=mode))
    detail = detail / max(float(detail.max()), 1e-6)
    roughness = np.clip(0.55 + 0.35 * (1 - height) + 0.25 * detail - 0.15, 0.0, 1.0)  # cavities rougher
    u8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return {"height": u8(height), "normal": u8((normal + 1) / 2), "roughness": u8(roughness)}
