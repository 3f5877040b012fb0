"""What the shared trainer trains for the texture kind: `TextureObjective` (nets G, D, G_ema;
groups D then G), and the exemplar images it reads.

Why the recipe is what it is (loss, R1, upsampling, the D/G rates) is measured in
docs/BENCHMARKS.md; `bench/texture_recipe_probe.py` reproduces it.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.texture.calibration import SIZE, measure, measurement_size
from engine.texture.generation import TextureModel, to_uint8
from engine.texture.images import (DEMO_EXEMPLARS, ImageCrops, LoadReport, assemble, exemplar, has_direction,
                                   load_images, shrink)
from engine.texture.model import (Discriminator, Generator, TextureGANConfig, d_loss, ema_update, g_loss, repeat_field,
                                  lattice_energy, make_ema)
from engine.texture.repeats import LONG_WAVE_SHARE, exemplar_scale, long_wave_share, repeat_waves
from engine.train.objective import Objective


# About the steps the default configuration reaches in its 10 minutes on the 2-core CPU, as a user's
# run has both cores (6500-7400 on the suite's photos, 3890-6150 on its PBR sets, median 5485;
# docs/BENCHMARKS.md, "Development suite"). A finished run with fewer than half of them is called
# short (`run_warning`).
RECIPE_STEPS = 6000
# `finish_steps` more where the calibration measures at 512 px (`measurement_size`): bark's took 56 s
# on one thread against 28 s at 256 px, ~140 steps at a colour step's 0.2 s.
LARGE_CALIBRATION_STEPS = 150


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the trainer may wrap nets for distributed training)."""
    return getattr(net, "module", net)


def resolve_images(images: str | Path | np.ndarray | list[np.ndarray] | dict[str, np.ndarray], channels: int | None,
                   min_size: int, downscale: int = 1) -> tuple[list[np.ndarray], LoadReport]:
    """Exemplar arrays in [-1, 1] from a path, a demo name ('brick', 'grass', 'gravel') or arrays in
    [-1, 1] (a dict names them: named like a material's maps, they are stacked as a folder's are),
    shrunk `downscale` times (a model's `downscale`) and at least `min_size` on a side after.
    channels None or 0: the colour channels follow the pictures (grey, colour, alpha); the report
    says which, and which maps are stacked after the colour."""
    out, report = _read_exemplars(images, channels, min_size * downscale)
    normal = slice(report.channels, report.channels + 3) if "normal" in report.maps else None
    return [shrink(image, downscale, normal) for image in out], report


def _read_exemplars(images: str | Path | np.ndarray | list[np.ndarray] | dict[str, np.ndarray], channels: int | None,
                    min_size: int) -> tuple[list[np.ndarray], LoadReport]:
    channels = channels or None
    if isinstance(images, (str, Path)) and not Path(images).expanduser().exists() and str(images) in DEMO_EXEMPLARS:
        named = [(f"skimage:{images}", (exemplar(str(images)) + 1) / 2)]
    elif isinstance(images, (str, Path)):
        if not Path(images).expanduser().exists():
            raise FileNotFoundError(f"no such file or folder: {images} (or name a demo exemplar: "
                                    f"{', '.join(DEMO_EXEMPLARS)})")
        return load_images(images, channels=channels, min_size=min_size)
    else:
        if isinstance(images, dict):
            names, arrays = list(images), list(images.values())
        else:
            arrays = [images] if isinstance(images, np.ndarray) else list(images)
            names = [f"array[{i}]" for i in range(len(arrays))]
        named = []
        for name, a in zip(names, arrays):
            a = np.asarray(a, np.float32)
            named.append((name, (a[..., None] if a.ndim == 2 else a) * 0.5 + 0.5))
    report = LoadReport()
    out = assemble(named, channels, report, min_std=-1.0, min_size=min_size)  # a flat picture sent on purpose trains
    if not out:
        raise ValueError(f"no usable exemplars:\n{report.summary()}")
    return out, report


def grid_rgb(images: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] (C = 1, 3 or 4) -> one uint8 HxWx3 picture, images in rows of `cols`."""
    n, h, w, c = images.shape
    rgb = np.repeat(images, 3, -1) if c == 1 else images[..., :3]
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        out[y:y + h, x:x + w] = rgb[i]
    return out


def whitening(images: list[np.ndarray], floor: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [C, C, 1, 1], bias [C]) of the 1x1 convolution that ZCA-whitens the exemplars' pixels,
    turning them as little as possible: each direction in channel space comes out uncorrelated and
    about as strong as the others, and all of them together as strong as the pixels were (so D's
    input, and with it its pace against G and R1's strength, stays as it was: at unit variance per
    direction D beat G on planks from the first steps). Each variance gets `floor` times the largest
    added, so a direction the exemplars barely use (a flat height map, JPEG noise) is scaled up at
    most 1/sqrt(floor) times as much as the strongest."""
    pixels = np.concatenate([image.reshape(-1, image.shape[-1]) for image in images]).astype(np.float64)
    mean, covariance = pixels.mean(0), np.atleast_2d(np.cov(pixels, rowvar=False))
    variance, axes = np.linalg.eigh(covariance)
    variance = variance.clip(0)
    weight = axes @ np.diag((variance + floor * max(variance.max(), 1e-12)) ** -0.5) @ axes.T
    weight *= np.sqrt(variance.sum() / max(np.trace(weight @ covariance @ weight.T), 1e-12))
    return (torch.tensor(weight, dtype=torch.float32)[:, :, None, None],
            torch.tensor(-weight @ mean, dtype=torch.float32))


class TextureObjective(Objective):
    export_nets = ("G_ema",)

    def __init__(self, config: TextureGANConfig, images: str | Path | np.ndarray | list[np.ndarray] | dict, *,
                 device: str | torch.device = "cpu", flips: bool = True, rot90: bool | None = None,
                 jitter: float = 0.0, min_size: int | None = None, seed: int = 0):
        self.device, self.seed = torch.device(device), seed
        self.images, self.report = resolve_images(images, config.channels, min_size or config.smallest_crop,
                                                  config.exemplar_shrink)
        side = min(min(image.shape[:2]) for image in self.images)
        fits = side // config.stride * config.stride
        if fits < config.crop:  # a small photo still trains, on the crops it can give
            self.report.notes.append(f"training crops of {fits} px instead of {config.crop}: the smallest picture is "
                                     f"{side} px on a side (structure larger than the crop is not learned)")
            config = dataclasses.replace(config, crop=fits)
        if config.maps and config.maps != self.report.maps:
            raise ValueError(f"the config asks for maps {list(config.maps)} but the images give "
                             f"{list(self.report.maps) or 'none'}; leave maps unset: a material's maps are found "
                             "by their file names")
        config = dataclasses.replace(config, channels=self.report.channels, maps=self.report.maps)
        n = len(self.images)
        if config.n_exemplars == 0 and n > 1:  # one learned code per exemplar (morphing between them)
            config = dataclasses.replace(config, n_exemplars=n)
        elif config.n_exemplars > 1 and config.n_exemplars != n:
            raise ValueError(f"n_exemplars is {config.n_exemplars} but {n} usable image(s) were found; leave "
                             f"it at 0 (one code per image) or set 1 to pool them")
        found = config.repeat_waves is None and n == 1 and not rot90  # asked-for turns would turn the repeat
        waves = repeat_waves(self.images[0][..., :config.channels]) if found else None
        picked = config.downscale is None
        config = self._fit_large_shapes(config, repeats=bool(config.repeat_waves or waves))
        if found:
            if picked and config.downscale > 1:  # shrunk after its repeat was looked for
                waves = repeat_waves(self.images[0][..., :config.channels])
            config = dataclasses.replace(config, repeat_waves=waves)
            if waves:  # the real crops' phases hold only as the exemplar lies
                periods = ", ".join(f"{1 / math.hypot(*k):.0f} px" for k in waves)
                self.report.notes.append(f"the exemplar repeats (periods {periods}): the discriminator judges "
                                         "where each crop sits in the repeat; no flips or turns in augmentation")
                flips, rot90 = False, False
        self.config = config
        self._large_calibration = measurement_size(self.images, config) > SIZE
        if rot90 is None:  # turned crops would teach a wrong texture where the exemplar has a direction
            directed = [i for i, image in enumerate(self.images) if has_direction(image)]
            rot90 = not directed
            if directed:
                self.report.notes.append("no 90° turns in augmentation: the exemplar has a direction (image(s) "
                                         f"{', '.join(map(str, directed))}); rot90=true turns them anyway")
        normal = config.channels if "normal" in config.maps else None  # the normal map comes first after colour
        self.crops = ImageCrops(self.images, config.crop, flips=flips, rot90=rot90, jitter=jitter, seed=seed,
                                colour=config.channels, normal=normal)
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
        self._steps = 0  # G_ema updates so far: the final calibration is measured once per state
        self._calibrated: tuple[int, dict[str, Any]] | None = None  # (steps, the full calibration)
        self._lattice: torch.Tensor | None = None  # running mean of the fakes' lattice_energy
        self._lattice_step = -1  # the step it last took in
        # A PBR set's discriminator judges whitened crops, real and fake alike (`whitening`). The
        # colour's chroma varies 10-20x less than the normal map (rock: 0.016-0.043 against 0.35 std),
        # and D judged the maps and let the colour go: red-green speckle on rock, bricks, ground and planks,
        # where rock's photo trained alone reads as rock. A colour photo alone trains as before:
        # whitened, tiles and bark got their hue but gravel lost its pebbles. docs/BENCHMARKS.md,
        # "Whitened discriminator input" and "Whitened colour photos".
        self._whiten = tuple(t.to(self.device) for t in whitening(self.images)) if config.maps else None

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
        if self.config.n_repeat:
            waves, crop, n = torch.tensor(self.config.repeat_waves), self.config.crop, self.config.n_periodic
            fields = {"real_field": repeat_field(waves, torch.zeros(len(phase), len(waves)), crop, crop,
                                                 self.crops.corners(keys)),
                      "fake_field": repeat_field(waves, phase[:, n:].cpu(), crop, crop)}
            out |= {k: v.to(self.device).contiguous(**channels_last) for k, v in fields.items()}
        return out

    @staticmethod
    def _beside(seen: torch.Tensor, field: torch.Tensor | None) -> torch.Tensor:
        """What D sees: the (whitened) crops, and beside them where each pixel sits in the repeat."""
        return seen if field is None else torch.cat([seen, field], 1)

    def loss(self, group: str, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        G, D, cfg = self.nets["G"], self.nets["D"], self.config
        z = (batch["z_local"], batch["z_global"], batch["phase"])
        which = batch.get("exemplar")
        if group == "D":
            # The fakes keep their graph: the G step that follows (G's weights unchanged by D's
            # step) reuses them instead of running G a second time.
            self._fake = (batch, G(*z, which))
            fake = self._fake[1].detach()
            real = self._whitened(batch["real"])
            lazy_r1 = cfg.r1_gamma > 0 and step % 4 == 0  # lazy regularisation (StyleGAN2), scaled by 4
            if lazy_r1:  # the penalty is on the gradient with respect to what D sees
                real = real.detach().requires_grad_(True)
            real_logits = D(self._beside(real, batch.get("real_field")), which)
            fake_logits = D(self._beside(self._whitened(fake), batch.get("fake_field")), which)
            loss = d_loss(real_logits, fake_logits, cfg.loss)
            logs = {"d_loss": loss.item(), "real_score": sum(r.mean().item() for r in real_logits) / len(real_logits),
                    "fake_score": sum(f.mean().item() for f in fake_logits) / len(fake_logits)}
            if lazy_r1:
                (grad,) = torch.autograd.grad(sum(r.sum() for r in real_logits), real, create_graph=True)
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
                loss = g_loss(critic(self._beside(self._whitened(fake), batch.get("fake_field")), which), cfg.loss)
            finally:
                critic.requires_grad_(True)
            logs = {"g_loss": loss.item()}
            if cfg.lattice_weight:
                loss = loss + cfg.lattice_weight * self._lattice_penalty(fake, step)
                logs["lattice"] = float(self._lattice.log().abs().max())
            return loss, logs
        raise ValueError(f"unknown parameter group {group!r}; the texture GAN has 'D' and 'G'")

    def _whitened(self, crops: torch.Tensor) -> torch.Tensor:
        return F.conv2d(crops, *self._whiten) if self._whiten else crops

    def _lattice_penalty(self, fake: torch.Tensor, step: int) -> torch.Tensor:
        """A loss whose gradient is that of mean((log e)^2) over the positions' energies e
        (`lattice_energy`), with e taken as its running mean over the last ~100 batches. In one
        batch e varies between positions with the content of its crops: that loss reads 0.02-0.09 on
        batches of real crops of bricks, planks and gravel, which have no grid, so penalising one
        batch would push G's crops towards less structure, not less grid."""
        energy = lattice_energy(fake.float(), self.config.stride)
        if self._lattice_step != step:  # once a step: G's loss computed again gives the same gradients
            seen = energy.detach()
            self._lattice = seen if self._lattice is None else 0.99 * self._lattice + 0.01 * seen
            self._lattice_step = step
        return (2 * self._lattice.log() / self._lattice * energy).mean()

    def after_step(self, step: int) -> None:
        self._steps += 1
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA follows G
        ema_update(self.nets["G_ema"], unwrap(self.nets["G"]), decay)

    @torch.no_grad()
    def samples(self, n: int, size: int, seed: int = 1234) -> torch.Tensor:
        g = self.nets["G_ema"]
        which = torch.arange(n, device=self.device) % max(self.config.n_exemplars, 1)
        return g(*g.sample_noise(n, size, size, torch.Generator().manual_seed(seed), self.device), which)

    def export_config(self, final: bool = True) -> TextureGANConfig:
        # A checkpoint while training runs gets a 1 s calibration instead of 10-30 s, without the
        # lattice filter and the tints: nine of those come out of a 10-minute budget (and a
        # cancelled run keeps the last of them).
        if not final:
            quick = measure(self.nets["G_ema"], self.images, n=16, rounds=1, lattice=False, tints=False)
            return dataclasses.replace(self.config, **quick)
        return dataclasses.replace(self.config, **self._full_calibration())

    def _full_calibration(self) -> dict[str, Any]:
        """The final calibration of G_ema as it is now and the global codes kept with it, measured
        once (evaluate and export share it)."""
        if self._calibrated is None or self._calibrated[0] != self._steps:
            from engine.texture.screening import screen

            calibration = measure(self.nets["G_ema"], self.images)
            model = TextureModel(dataclasses.replace(self.config, **calibration), self.nets["G_ema"], self.device)
            calibration["global_codes"] = screen(model, self.images)
            self._calibrated = (self._steps, calibration)
        return self._calibrated[1]

    def evaluate(self) -> dict[str, float]:
        """What `generate` delivers: the calibrated model (G_ema with the final calibration, which
        the export then reuses), measured as `atelier eval` measures it by default (EVAL_SAMPLES
        samples at the crop size, seed 0), so the stored figures are the ones eval prints."""
        from engine.texture.evaluation import EVAL_SAMPLES, evaluate_model

        config = dataclasses.replace(self.config, **self._full_calibration())
        model = TextureModel(config, self.nets["G_ema"], self.device)
        colour = [image[..., :config.channels] for image in self.images]  # generate's image against the photo's
        return evaluate_model(model, colour, size=self.config.crop, n=EVAL_SAMPLES, seed=0)

    @property
    def finish_steps(self) -> float:
        """The end of training (calibration, code screening, evaluation) in training steps' time, so
        the trainer ends training early enough for the run to fit its budget. Measured one core
        each, two runs side by side: gravel's colour took 57 s after training at 0.20 s a step (290
        steps); nine-channel sets 107 s at 0.25 s (bricks, 3 minutes: 430) and ~116 s at 0.22 s
        (rock and sand, 10 minutes: ~530, where 436 steps' reserve ended them at 620 s). The lattice
        filter's fit adds ~1.2 s a channel on one thread (colour 3.7 s, nine channels 10.8 s), and the
        evaluation's eight reference sets (four before 2026-12-07) ~4 s: 40 steps at a colour step's pace."""
        return 240 + 42 * self.images[0].shape[-1] + LARGE_CALIBRATION_STEPS * self._large_calibration

    def _fit_large_shapes(self, config: TextureGANConfig, repeats: bool) -> TextureGANConfig:
        """The config with its `downscale` set (where unset, the exemplars shrunk by the one training
        picks) and a note for the user. Where much of an exemplar lies in shapes larger than the
        crops and it does not repeat (a repeat is given to both nets), training picks the fewest
        halvings that bring them inside."""
        view = config.largest_view
        colour = [image[..., :config.channels] for image in self.images]
        which, whose = ("the exemplar", "the exemplar's") if len(colour) == 1 else ("the exemplars", "the exemplars'")
        if config.downscale is None:
            factor, whole, share = (1, 0.0, 0.0) if repeats else exemplar_scale(colour, view)
            config = dataclasses.replace(config, downscale=factor)
            if factor > 1:
                normal = slice(config.channels, config.channels + 3) if "normal" in config.maps else None
                self.images = [shrink(image, factor, normal) for image in self.images]
                self.report.notes.append(
                    f"trained on {which} shrunk {factor}x, so that the large shapes fit the model's {view} px crops "
                    f"({whole:.0%} of {whose} variation is at wavelengths over {view} px, {share:.0%} shrunk): a "
                    f"picture of N px covers {factor}N px of the photo (downscale=1 trains it as it is: "
                    '--set downscale=1, or {"downscale": 1} in Blender\'s Config)')
        else:
            if config.downscale > 1:
                self.report.notes.append(f"trained on {which} shrunk {config.downscale}x "
                                         f"(downscale={config.downscale})")
            share = 0.0 if repeats else max(long_wave_share(image, view) for image in colour)
        if not repeats and share > LONG_WAVE_SHARE:
            self.report.notes.append(
                f"large shapes: {share:.0%} of {whose} variation is at wavelengths over {view} px, longer than the "
                f"{view} px crops the model learns from; expect its texture without those shapes (the suite's "
                "marble slabs and bark's broad bands were lost: docs/textures/README.md)")
        return config

    def run_warning(self, step: int, train: Any) -> str | None:
        """Plain words for a finished run that stopped far short of the recipe's steps (None otherwise)."""
        if step >= RECIPE_STEPS // 2:
            return None
        if train.steps and step >= train.steps:
            why, advice = f"it reached its step cap of {train.steps}", "drop --steps so the time budget ends the run"
        else:
            why, advice = f"its {train.minutes:g}-minute time budget ran out", "give it more --minutes"
        return (f"short run: training stopped at {step} steps ({why}), far short of the ~{RECIPE_STEPS} steps the "
                f"recipe reaches in 10 minutes on a 2-core CPU; expect a texture less like the exemplar than the "
                f"recipe's. Train longer ({advice}) or continue with --resume")

    def preview(self) -> np.ndarray:
        colour = self.config.channels
        fake = to_uint8(self.samples(6, self.config.crop)[:, :colour])
        real = to_uint8(self.crops.batch(torch.arange(2, dtype=torch.int64))[:, :colour])
        return grid_rgb(np.concatenate([real, fake]), cols=4)

    def data_summary(self) -> dict[str, Any]:
        return {"images": [{"path": p, "height": int(s[0]), "width": int(s[1])} for p, s in self.report.used],
                "skipped": [{"path": p, "reason": r} for p, r in self.report.skipped],
                "notes": list(self.report.notes), "channels": self.config.channels, "maps": list(self.config.maps),
                "crop": self.config.crop, **self.options}
