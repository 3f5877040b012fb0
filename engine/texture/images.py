"""Texture exemplars: read, clean, normalise, crop and augment images.

`load_images(path)` reads one image or every image in a folder (PNG, JPEG, TIFF; 8/16-bit;
gray, RGB, RGBA), skips what cannot be used and says why, and returns float32 HxWxC arrays
in [-1, 1]: in colour when the images are, grey when they are grey, with alpha when it is
used. A folder of a material's maps (`rock_Color.jpg`, `rock_NormalGL.png`, ...) becomes one
array of the colour and every map stacked (`assemble`). `ImageCrops` turns those arrays into batches of random crops that are a pure
function of int64 sample keys. `exemplar(name)` gives the scikit-image demo textures and
`procedural(kind, size, seed)` makes exemplars for tests. Nothing here knows about models.
"""
from __future__ import annotations

import math
import re
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
    notes: list[str] = field(default_factory=list)  # what was converted, and how
    channels: int = 0  # colour channels of the arrays
    maps: tuple[str, ...] = ()  # surface maps stacked after the colour (model.MAPS order)

    def summary(self) -> str:
        lines = [f"{len(self.used)} image(s) used, {len(self.skipped)} skipped"]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        lines += [f"  note: {note}" for note in self.notes]
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
    if raw.dtype == bool:
        img = raw.astype(np.float32)
    elif np.issubdtype(raw.dtype, np.integer):
        img = raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)
    else:
        img = np.clip(raw.astype(np.float32), 0.0, 1.0)
    return img


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert an HxWxC image in [0, 1] (C = 1, 2: grey and alpha, 3 or 4) to `channels` (1, 3 or
    4) channels (alpha added opaque)."""
    c = img.shape[-1]
    if c == channels:
        return img
    if c == 2:
        grey = img[..., :1]
        return np.concatenate([np.repeat(grey, 3, -1), img[..., 1:]], -1) if channels == 4 else to_channels(grey, channels)
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


# A material's maps, recognised by the last token of a file name that names one (tokens split at
# "_", "-", "." and spaces; case-insensitive), as ambientCG (rock_NormalGL.png), Poly Haven
# (rock_nor_gl_1k.jpg) and others name them. The tokens before it name the material.
MAP_TOKENS = {
    **dict.fromkeys(("color", "colour", "albedo", "diff", "diffuse", "basecolor", "basecolour"), "image"),
    **dict.fromkeys(("normalgl", "normaldx", "normal", "nor", "nrm"), "normal"),
    **dict.fromkeys(("roughness", "rough"), "roughness"),
    **dict.fromkeys(("displacement", "height", "disp"), "height"),
    **dict.fromkeys(("metalness", "metallic", "metal"), "metallic"),
    **dict.fromkeys(("ambientocclusion", "ao", "occlusion"), "ao"),
}
MAP_ORDER = ("normal", "roughness", "height", "metallic", "ao")  # as engine.texture.model.MAPS stacks them
COLOUR_NAMES = "NAME_Color, _albedo, _diff or _basecolor"


def material_map(name: str) -> tuple[str, str, bool] | None:
    """(material, map, DirectX normal?) for a file name like 'rock_NormalDX.png' or 'rock_nor_gl_1k.jpg';
    None when the name names no map after a material's name."""
    tokens = [t for t in re.split(r"[_\-\s.]+", Path(name).stem) if t]
    found = [i for i, t in enumerate(tokens) if t.lower() in MAP_TOKENS]
    if not found or found[-1] == 0:
        return None
    i = found[-1]
    kind = MAP_TOKENS[tokens[i].lower()]
    prefix = tokens[:i - 1] if kind == "image" and tokens[i - 1].lower() == "base" else tokens[:i]
    directx = kind == "normal" and (tokens[i].lower() == "normaldx" or "dx" in (t.lower() for t in tokens[i + 1:i + 2]))
    if not prefix:
        return None
    return str(Path(name).parent / "_".join(prefix)).lower(), kind, directx


def _is_colour(img: np.ndarray) -> bool:
    if img.shape[-1] < 3:
        return False
    rgb = img[::4, ::4, :3]
    return float(np.quantile(rgb.max(-1) - rgb.min(-1), 0.99)) > 4 / 255


def colour_channels(named: list[tuple[str, np.ndarray]], channels: int | None, notes: list[str]) -> int:
    """The colour channels to train: `channels` when given, else as the pictures are: 4 when one has
    an alpha that is not opaque everywhere, 3 when one has colour, else 1. What is dropped is said."""
    varying = {n for n, img in named if img.shape[-1] in (2, 4) and float(img[..., -1].min()) < 1 - 0.5 / 255}
    if channels is None:
        channels = 4 if varying else 3 if any(_is_colour(img) for _, img in named) else 1
        grey_rgb = [n for n, img in named if img.shape[-1] >= 3] if channels == 1 else []
        notes += [f"{n}: stored as RGB but grey, so the model is grey" for n in grey_rgb]
    for n, img in named:
        if img.shape[-1] in (2, 4) and channels < 4:
            notes.append(f"{n}: alpha dropped ({'opaque everywhere' if n not in varying else 'the model has no alpha'})")
        elif img.shape[-1] < 4 and channels == 4:
            notes.append(f"{n}: has no alpha; given an opaque one")
    return channels


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).numpy()


def shrink(image: np.ndarray, factor: int, normal: slice | None = None) -> np.ndarray:
    """image (HxWxC) shrunk `factor` times by averaging each factor x factor block (edges that do not
    fill a block dropped); the normal map's channels made unit vectors again."""
    if factor == 1:
        return image
    h, w, c = (image.shape[0] // factor, image.shape[1] // factor, image.shape[2])
    out = image[:h * factor, :w * factor].reshape(h, factor, w, factor, c).mean((1, 3))
    if normal is not None:
        out[..., normal] /= np.linalg.norm(out[..., normal], axis=-1, keepdims=True).clip(1e-6)
    return out.astype(np.float32)


def _unit_normals(img: np.ndarray, directx: bool) -> np.ndarray:
    """Normal map pixels in [0, 1] -> unit vectors in [-1, 1], OpenGL convention (+y up)."""
    n = to_channels(img[..., :3] if img.shape[-1] == 4 else img, 3) * 2 - 1
    if directx:
        n[..., 1] *= -1
    n[..., 2] = np.maximum(n[..., 2], 1e-3)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def assemble(named: list[tuple[str, np.ndarray]], channels: int | None, report: LoadReport,
             min_std: float = 2e-3, min_size: int = 0) -> list[np.ndarray]:
    """Arrays in [-1, 1] from named pictures in [0, 1] (HxWxC), recording in `report` what is used,
    skipped and converted, and its channels and maps.

    Pictures are exemplars, each on its own, unless some material has two or more maps by name
    (`material_map`): then each material is one exemplar, its colour then its maps stacked (MAP_ORDER;
    normals as unit vectors, DirectX ones turned to OpenGL by flipping y, the rest one channel),
    every map resized to its colour map's size. Pictures and colour maps smaller than `min_size`
    on a side and (near-)constant pictures are skipped. A material without a colour map is skipped and
    said so; a map only some materials have is left out of those that have it and said so; pictures
    beside materials are skipped."""
    groups: dict[str, dict[str, tuple[str, np.ndarray, bool]]] = {}
    for name, img in named:
        found = material_map(name)
        if found:
            groups.setdefault(found[0], {})
            if found[1] in groups[found[0]]:
                report.skipped.append((name, f"a second {found[1]} map of the material; "
                                             f"{groups[found[0]][found[1]][0]} is used"))
            else:
                groups[found[0]][found[1]] = (name, img, found[2])
    materials = {key: maps for key, maps in groups.items() if len(maps) >= 2}
    if not materials:
        return _photos(named, channels, report, min_std, min_size)
    members = {m[0] for maps in materials.values() for m in maps.values()}
    for name, _ in named:
        if name not in members and not any(name == reason[0] for reason in report.skipped):
            report.skipped.append((name, "not a map of a material (the folder holds a material's maps, named "
                                         "NAME_Color, NAME_NormalGL, NAME_Roughness, ...)"))
    complete = {}
    for key, maps in materials.items():
        if "image" in maps and min(maps["image"][1].shape[:2]) < min_size:
            name, colour, _ = maps.pop("image")
            report.skipped.append((name, _too_small(colour, min_size)))
        if "image" not in maps:
            for name, _, _ in maps.values():
                report.skipped.append((name, f"its material has no colour map ({COLOUR_NAMES}); a material is "
                                             "trained from its colour and its maps together: add the colour map, "
                                             "or give this file alone to train on it as a picture"))
        else:
            complete[key] = maps
    if not complete:
        return []
    shared = [m for m in MAP_ORDER if all(m in maps for maps in complete.values())]
    for maps in complete.values():
        for m in MAP_ORDER:
            if m in maps and m not in shared:
                report.skipped.append((maps[m][0], f"only some of the materials have a {m} map; "
                                                   "the model makes the maps all of them have"))
    channels = colour_channels([maps["image"][:2] for maps in complete.values()], channels, report.notes)
    out = []
    for maps in complete.values():
        name, colour, _ = maps["image"]
        shape = colour.shape[:2]
        stack = [to_channels(colour, channels) * 2 - 1]
        report.used.append((name, shape))
        for m in shared:
            path, img, directx = maps[m]
            if img.shape[:2] != shape:
                report.notes.append(f"{path}: resized from {img.shape[1]}x{img.shape[0]} to the colour map's "
                                    f"{shape[1]}x{shape[0]}")
                img = _resize(img, shape)
            if m == "normal":
                if directx:
                    report.notes.append(f"{path}: a DirectX normal map, turned to OpenGL (green flipped)")
                stack.append(_unit_normals(img, directx))
            else:
                if img.shape[-1] > 1:
                    report.notes.append(f"{path}: a {m} map with {img.shape[-1]} channels; its grey level is used")
                stack.append(to_channels(img, 1) * 2 - 1)
            report.used.append((path, img.shape[:2]))
        out.append(np.concatenate(stack, -1).astype(np.float32))
    report.channels, report.maps = channels, tuple(shared)
    return out


def _too_small(img: np.ndarray, min_size: int) -> str:
    return f"too small: {img.shape[1]}x{img.shape[0]}, need at least {min_size} px on each side"


def _photos(named: list[tuple[str, np.ndarray]], channels: int | None, report: LoadReport,
            min_std: float, min_size: int) -> list[np.ndarray]:
    kept = []
    for name, img in named:
        colour = img[..., :3] if img.shape[-1] >= 3 else img[..., :1]
        if min(img.shape[:2]) < min_size:
            report.skipped.append((name, _too_small(img, min_size)))
        elif float(colour.std()) < min_std:
            report.skipped.append((name, "constant image (no texture to learn)"))
        else:
            kept.append((name, img))
    if not kept:
        return []
    report.channels = colour_channels(kept, channels, report.notes)
    report.used += [(name, img.shape[:2]) for name, img in kept]
    return [to_channels(img, report.channels) * 2.0 - 1.0 for _, img in kept]


def load_images(path: str | Path, *, channels: int | None = None, min_size: int = 64,
                min_std: float = 2e-3) -> tuple[list[np.ndarray], LoadReport]:
    """Read one image or a folder of images; return arrays in [-1, 1] and a report.

    Unreadable, smaller than `min_size` on a side, and (near-)constant images are skipped and
    listed in the report. `channels=None` follows the images (`colour_channels`); a folder of a
    material's maps is stacked (`assemble`). Raises FileNotFoundError / ValueError only when
    nothing is usable.
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
        kept.append((str(f), img))
    images = assemble(kept, channels, report, min_std, min_size) if len(files) > 1 else \
        _photos(kept, channels, report, min_std, min_size)
    if not images:
        raise ValueError(f"no usable images in {path}:\n{report.summary()}\n"
                         f"Give PNG/JPEG/TIFF images with texture, at least {min_size} px on each side, or a "
                         f"material's maps named {COLOUR_NAMES}, NAME_NormalGL, NAME_Roughness, ...")
    return images, report


def _jitter(crop: np.ndarray, rng: np.random.Generator, strength: float, colour: int) -> np.ndarray:
    """Mild brightness / contrast / saturation change on the `colour` channels of a crop in [-1, 1]."""
    c = min(colour, crop.shape[-1])
    brightness = rng.uniform(-strength, strength)
    contrast = 1.0 + rng.uniform(-strength, strength)
    mean = crop[..., :min(c, 3)].mean()
    out = crop.copy()
    k = min(c, 3)
    out[..., :k] = np.clip((crop[..., :k] - mean) * contrast + mean + brightness, -1.0, 1.0)
    if c >= 3:
        gray = out[..., :3].mean(-1, keepdims=True)
        out[..., :3] = np.clip(gray + (out[..., :3] - gray) * (1.0 + rng.uniform(-strength, strength)), -1.0, 1.0)
    return out


# How much more a picture's spectrum changes under a 90° turn than between its own quarters
# (`turn_asymmetry`) before 90° turns would teach a wrong texture. On the 14 suite exemplars:
# grass, gravel, ground, marble, rock, sand, tiles and cobblestone 0.88-0.99; denim 1.20,
# roof tiles 1.72, bark 1.89, lava 1.90, bricks 1.94, planks 3.07.
DIRECTION_THRESHOLD = 1.1


def turn_asymmetry(image: np.ndarray) -> float:
    """How far a texture is from looking the same turned by 90°: the mean |difference| of the
    log power spectrum of each quarter of its luminance and of that spectrum transposed, over
    the mean difference between the quarters' spectra (their own spread: inhomogeneity and
    estimation noise). About 1 without a direction; planks with vertical joints 3. Mid
    frequencies only (4 cycles per quarter up to a quarter of the sampling rate)."""
    from scipy.ndimage import uniform_filter

    grey = image[..., :3].mean(-1).astype(np.float64) if image.ndim == 3 else image.astype(np.float64)
    side = min(grey.shape) // 2
    window = np.outer(np.hanning(side), np.hanning(side))
    spectra = []
    for y in (0, side):
        for x in (0, side):
            quarter = grey[y:y + side, x:x + side]
            power = np.abs(np.fft.fftshift(np.fft.fft2((quarter - quarter.mean()) * window))) ** 2
            spectra.append(np.log10(uniform_filter(power, 5, mode="wrap") + 1e-12))
    k = np.hypot(*(np.indices((side, side)) - side // 2)) / side
    band = (k > 4 / side) & (k < 0.25)
    turned = np.mean([np.abs(s - s.T)[band].mean() for s in spectra])
    spread = np.mean([np.abs(a - b)[band].mean() for i, a in enumerate(spectra) for b in spectra[i + 1:]])
    return float(turned / spread)


def has_direction(image: np.ndarray) -> bool:
    """Whether 90° turns would change what the texture is (wood grain, brick courses, a twill);
    an exemplar under 128 px says too little to tell, and counts as without."""
    return min(image.shape[:2]) >= 128 and turn_asymmetry(image) > DIRECTION_THRESHOLD


class ImageCrops:
    """Random square crops of a list of images, as a pure function of int64 keys.

    Key k picks image k % n, and seeds the crop position and augmentation with k.
    Flips and 90° rotations can be switched off for textures with a direction (wood grain).
    Plain random corners count an image's centre far more often than its border (a 256 px crop
    of a 512 px image covers the middle row always and the first row once in 257 corners);
    fair_edges draws the corner over every offset at which the crop overlaps the image and
    clamps it inside, so that no pixel is counted less than half as often as the most counted one
    (a third when the crop is more than half the image).
    A normal map's vectors at channels `normal`, `normal` + 1 (x right, y up) turn with its pixels.
    """

    def __init__(self, images: list[np.ndarray], crop: int, *, flips: bool = True, rot90: bool = True,
                 jitter: float = 0.0, fair_edges: bool = False, seed: int = 0, colour: int = 4,
                 normal: int | None = None):
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
        self.colour, self.normal = colour, normal

    def _corner(self, key: int) -> tuple[np.random.Generator, np.ndarray, int, int]:
        rng = np.random.default_rng([self.seed, int(key)])
        img = self.images[int(key) % len(self.images)]
        h, w = img.shape[:2]
        reach = self.crop - 1 if self.fair_edges else 0
        y, x = (min(max(int(rng.integers(-reach, side - self.crop + 1 + reach)), 0), side - self.crop) for side in (h, w))
        return rng, img, y, x

    def corners(self, keys: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[B, 2] (y, x) in its image of each key's crop, before any flip or turn."""
        keys = np.asarray(keys.cpu() if isinstance(keys, torch.Tensor) else keys, dtype=np.int64).reshape(-1)
        return torch.tensor([self._corner(k)[2:] for k in keys], dtype=torch.float32)

    def one(self, key: int) -> np.ndarray:
        rng, img, y, x = self._corner(key)
        out = img[y:y + self.crop, x:x + self.crop]
        flip, turns = self.flips and rng.random() < 0.5, int(rng.integers(0, 4)) if self.rot90 else 0
        if flip:
            out = out[:, ::-1]
        if turns:
            out = np.rot90(out, turns)  # counter-clockwise as seen
        if self.jitter > 0:
            out = _jitter(out, rng, self.jitter, self.colour)
        out = np.array(out, dtype=np.float32)
        if self.normal is not None and (flip or turns):
            n = out[..., self.normal:self.normal + 2]
            if flip:
                n[..., 0] *= -1
            for _ in range(turns):  # (x, y) -> (-y, x): the vector turns with the picture
                n[...] = np.stack([-n[..., 1], n[..., 0].copy()], -1)
        return out

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
