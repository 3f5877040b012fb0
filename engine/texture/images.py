"""Texture exemplars: read, clean, normalise, crop and augment images.

`load_images(path)` reads one image or every image in a folder (PNG, JPEG, TIFF; 8/16-bit;
gray, RGB, RGBA), skips what cannot be used and says why, and returns float32 HxWxC arrays
in [-1, 1]. `ImageCrops` turns those arrays into batches of random crops that are a pure
function of int64 sample keys. `exemplar(name)` gives the scikit-image demo textures and
`procedural(kind, size, seed)` makes exemplars for tests. Nothing here knows about models.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# Decoded size, checked from the file's header before decoding: 33.5 Mpx (e.g. 8192x4096, a camera's
# photo) takes at most 512 MiB as float32 RGBA. A small compressed file can declare far more.
MAX_PIXELS = 1 << 25
MAX_CHANNELS = 4
DEMO_EXEMPLARS = ("brick", "grass", "gravel")
PROCEDURAL_KINDS = ("bricks", "waves", "blobs")


@dataclass
class LoadReport:
    used: list[tuple[str, tuple[int, int]]] = field(default_factory=list)  # (path, (h, w))
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def summary(self) -> str:
        lines = [f"{len(self.used)} image(s) used, {len(self.skipped)} skipped"]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than MAX_PIXELS."""


def check_decoded_size(shape: tuple[int, ...], what: str = "the image") -> None:
    """Raise ImageTooLarge when an image of this shape (H, W[, C] or more, as its header declares)
    is over MAX_PIXELS or holds more than MAX_CHANNELS values per pixel."""
    dims = sorted((int(n) for n in shape), reverse=True)
    pixels = dims[0] * (dims[1] if len(dims) > 1 else 1)
    values = math.prod(dims)
    if pixels > MAX_PIXELS or values > MAX_PIXELS * MAX_CHANNELS:
        raise ImageTooLarge(f"{what} decodes to {'x'.join(map(str, shape))} ({values / 1e6:.1f} million values), over "
                            f"the limit of {MAX_PIXELS / 1e6:.1f} megapixels (e.g. 8192x4096) with at most "
                            f"{MAX_CHANNELS} channels; downscale it or save one image per file")


def _read(path: Path) -> np.ndarray:
    """Pixels as float32 HxWxC in [0, 1], C = 1, 3 or 4. The size is checked before decoding."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]  # what tifffile.imread returns
            check_decoded_size(series.shape)
            raw = series.asarray()
    else:
        import imageio.v3 as iio
        from PIL import Image
        with warnings.catch_warnings():  # Pillow's own bomb warning: the check below is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as header:  # reads the header only
                width, height = header.size
                check_decoded_size((height, width, len(header.getbands())))
        raw = iio.imread(path, plugin="pillow")  # palette images come back as RGB
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[0] in (1, 3, 4) and raw.shape[-1] not in (1, 3, 4):
        raw = np.moveaxis(raw, 0, -1)  # planar TIFF
    if raw.ndim == 2:
        raw = raw[..., None]
    if raw.ndim != 3 or raw.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported pixel layout {raw.shape} (multi-page or multi-channel file?)")
    if raw.shape[-1] == 2:  # gray + alpha
        raw = raw[..., :1]
    if raw.dtype == bool:
        img = raw.astype(np.float32)
    elif np.issubdtype(raw.dtype, np.integer):
        img = raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)
    else:
        img = np.clip(raw.astype(np.float32), 0.0, 1.0)
    return img


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert an HxWxC image in [0, 1] to `channels` (1, 3 or 4) channels (alpha added opaque)."""
    c = img.shape[-1]
    if c == channels:
        return img
    if channels == 1:
        rgb = img[..., :3] if c >= 3 else img[..., :1]
        return (rgb.mean(-1, keepdims=True) if c == 1 else rgb @ np.array([[0.299], [0.587], [0.114]], np.float32))
    if channels == 3:
        return np.repeat(img, 3, -1) if c == 1 else img[..., :3]
    if channels == 4:
        rgb = to_channels(img, 3)
        opaque = np.ones(img.shape[:2] + (1,), np.float32)
        return np.concatenate([rgb, opaque], -1)
    raise ValueError(f"channels must be 1, 3 or 4, got {channels}")


def load_images(path: str | Path, *, channels: int | None = None, min_size: int = 64,
                min_std: float = 2e-3) -> tuple[list[np.ndarray], LoadReport]:
    """Read one image or a folder of images; return arrays in [-1, 1] and a report.

    Unreadable, smaller than `min_size` on a side, and (near-)constant images are skipped and
    listed in the report. `channels=None` takes the most common channel count among the
    usable images. Raises FileNotFoundError / ValueError only when nothing is usable.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    else:
        files = [path]
    report = LoadReport()
    kept: list[tuple[str, np.ndarray]] = []
    for f in files:
        if f.suffix.lower() not in EXTENSIONS:
            report.skipped.append((str(f), f"not an image type we read ({', '.join(EXTENSIONS)})"))
            continue
        try:
            img = _read(f)
        except ImageTooLarge as e:
            report.skipped.append((str(f), f"too large: {e}"))
            continue
        except Exception as e:  # any decoder error means "unreadable", never a crash
            report.skipped.append((str(f), f"unreadable: {type(e).__name__}: {str(e).splitlines()[0][:120]}"))
            continue
        h, w = img.shape[:2]
        if min(h, w) < min_size:
            report.skipped.append((str(f), f"too small: {w}x{h}, need at least {min_size} px on each side"))
            continue
        colour = img[..., :3] if img.shape[-1] >= 3 else img
        if float(colour.std()) < min_std:
            report.skipped.append((str(f), "constant image (no texture to learn)"))
            continue
        kept.append((str(f), img))
    if not kept:
        raise ValueError(f"no usable images in {path}:\n{report.summary()}\n"
                         f"Give PNG/JPEG/TIFF images with texture, at least {min_size} px on each side.")
    if channels is None:
        counts = [img.shape[-1] for _, img in kept]
        channels = max(set(counts), key=counts.count)
        channels = 3 if channels not in (1, 3, 4) else channels
    images = []
    for f, img in kept:
        images.append(to_channels(img, channels) * 2.0 - 1.0)
        report.used.append((f, img.shape[:2]))
    return images, report


def _jitter(crop: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Mild brightness / contrast / saturation change on a crop in [-1, 1]."""
    c = crop.shape[-1]
    brightness = rng.uniform(-strength, strength)
    contrast = 1.0 + rng.uniform(-strength, strength)
    mean = crop[..., :3].mean()
    out = crop.copy()
    out[..., :3] = (crop[..., :3] - mean) * contrast + mean + brightness
    if c >= 3:
        gray = out[..., :3].mean(-1, keepdims=True)
        out[..., :3] = gray + (out[..., :3] - gray) * (1.0 + rng.uniform(-strength, strength))
    return np.clip(out, -1.0, 1.0)


class ImageCrops:
    """Random square crops of a list of images, as a pure function of int64 keys.

    Key k picks image k % n, and seeds the crop position and augmentation with k.
    Flips and 90° rotations can be switched off for textures with a direction (wood grain).
    Plain random corners count an image's centre far more often than its border (a 256 px crop
    of a 512 px image covers the middle row always and the first row once in 257 corners);
    fair_edges draws the corner over every offset at which the crop overlaps the image and
    clamps it inside, so that no pixel is counted less than half as often as the most counted one
    (a third when the crop is more than half the image).
    """

    def __init__(self, images: list[np.ndarray], crop: int, *, flips: bool = True, rot90: bool = True,
                 jitter: float = 0.0, fair_edges: bool = False, seed: int = 0):
        if not images:
            raise ValueError("ImageCrops needs at least one image")
        small = [im.shape[:2] for im in images if min(im.shape[:2]) < crop]
        if small:
            raise ValueError(f"crop {crop} is larger than image(s) of size {small}; use a smaller crop")
        if not 0.0 <= jitter <= 0.5:
            raise ValueError(f"jitter must be in [0, 0.5] (mild), got {jitter}")
        self.images, self.crop = images, crop
        self.flips, self.rot90, self.jitter, self.fair_edges, self.seed = flips, rot90, jitter, fair_edges, seed
        self.channels = images[0].shape[-1]

    def one(self, key: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(key)])
        img = self.images[int(key) % len(self.images)]
        h, w = img.shape[:2]
        reach = self.crop - 1 if self.fair_edges else 0
        y, x = (min(max(int(rng.integers(-reach, side - self.crop + 1 + reach)), 0), side - self.crop) for side in (h, w))
        out = img[y:y + self.crop, x:x + self.crop]
        if self.flips and rng.random() < 0.5:
            out = out[:, ::-1]
        if self.rot90:
            out = np.rot90(out, int(rng.integers(0, 4)))
        if self.jitter > 0:
            out = _jitter(out, rng, self.jitter)
        return np.ascontiguousarray(out, dtype=np.float32)

    def exemplar_of(self, keys: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Which image (int64 index) each key's crop comes from."""
        keys = torch.as_tensor(np.asarray(keys.cpu() if isinstance(keys, torch.Tensor) else keys, dtype=np.int64))
        return keys.reshape(-1) % len(self.images)

    def batch(self, keys: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Crops for int64 keys as a float32 tensor [B, C, crop, crop]."""
        keys = np.asarray(keys.cpu() if isinstance(keys, torch.Tensor) else keys, dtype=np.int64).reshape(-1)
        return torch.from_numpy(np.stack([self.one(k) for k in keys])).permute(0, 3, 1, 2).contiguous()


def exemplar(name: str) -> np.ndarray:
    """A scikit-image demo texture ('brick', 'grass', 'gravel') as 512x512x1 float32 in [-1, 1]."""
    import skimage.data
    if name not in DEMO_EXEMPLARS:
        raise ValueError(f"unknown exemplar {name!r}; choose one of {DEMO_EXEMPLARS}")
    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return img[..., None] * 2.0 - 1.0


def procedural(kind: str = "bricks", size: int = 128, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A seeded synthetic exemplar, size x size x channels float32 in [-1, 1].

    'bricks': a running-bond wall with mortar lines (regular, tests periodic structure);
    'waves': diagonal sinusoidal stripes with noise; 'blobs': smoothed random noise.
    """
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "bricks":
        bh, bw = max(size // 8, 4), max(size // 4, 8)
        row = (yy // bh).astype(int)
        col = ((xx + (row % 2) * bw / 2) // bw).astype(int)
        shade = rng.uniform(0.45, 0.8, size=(row.max() + 2, col.max() + 2))[row, col]
        mortar = ((yy % bh) < 2) | (((xx + (row % 2) * bw / 2) % bw) < 2)
        g = np.where(mortar, 0.9, shade) + 0.05 * rng.standard_normal((size, size))
    elif kind == "waves":
        g = 0.5 + 0.35 * np.sin(2 * np.pi * (xx + yy) / (size / 6)) + 0.08 * rng.standard_normal((size, size))
    elif kind == "blobs":
        g = gaussian_filter(rng.standard_normal((size, size)), size / 32, mode="wrap")
        g = 0.5 + 0.4 * g / (np.abs(g).max() + 1e-8)
    else:
        raise ValueError(f"unknown procedural kind {kind!r}; choose one of {PROCEDURAL_KINDS}")
    g = np.clip(g, 0.0, 1.0).astype(np.float32)[..., None]
    tint = np.array([1.0, 0.8, 0.65, 1.0], np.float32) if kind == "bricks" else np.array([0.7, 0.9, 1.0, 1.0], np.float32)
    if channels == 1:
        img = g
    elif channels in (3, 4):
        img = np.clip(g * tint[:channels], 0.0, 1.0)
        if channels == 4:
            img[..., 3] = 1.0
    else:
        raise ValueError(f"channels must be 1, 3 or 4, got {channels}")
    return img * 2.0 - 1.0
