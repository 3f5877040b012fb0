"""Texture data: reading, cleaning with a report, normalising, crops that are pure in the keys."""
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from engine.texture.images import ImageCrops, exemplar, load_images, procedural


def _u8(img01: np.ndarray) -> np.ndarray:
    return np.round(img01 * 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    tex = (procedural("blobs", 96, seed=1, channels=3) + 1) / 2
    Image.fromarray(_u8(tex)).save(tmp_path / "rgb.png")
    Image.fromarray(_u8(tex)).save(tmp_path / "photo.jpg", quality=90)
    rgba = np.concatenate([_u8(tex), np.full((96, 96, 1), 200, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    Image.fromarray((tex[..., 0] * 65535).astype(np.uint16)).save(tmp_path / "gray16.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", (tex * 65535).astype(np.uint16))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(_u8(rng.random((20, 30, 3)))).save(tmp_path / "tiny.png")
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(tmp_path / "constant.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_is_cleaned_and_every_skip_is_reported(folder):
    images, report = load_images(folder, min_size=64)
    used = sorted(p.split("/")[-1] for p, _ in report.used)
    assert used == ["alpha.png", "gray16.png", "photo.jpg", "rgb.png", "rgb16.tif"]
    reasons = {p.split("/")[-1]: why for p, why in report.skipped}
    assert set(reasons) == {"corrupt.png", "tiny.png", "constant.png", "notes.txt"}
    assert reasons["corrupt.png"].startswith("unreadable")
    assert reasons["tiny.png"].startswith("too small: 30x20")
    assert reasons["constant.png"].startswith("constant")
    assert "tiny.png" in report.summary()
    # alpha.png is see-through (alpha 200 of 255): its alpha is kept, and the others get an opaque one
    assert report.channels == 4 and all(im.shape == (96, 96, 4) and im.dtype == np.float32 for im in images)
    assert any("rgb.png: has no alpha; given an opaque one" in note for note in report.notes)
    assert min(im.min() for im in images) >= -1 and max(im.max() for im in images) <= 1


def test_16_bit_keeps_precision_and_channels_convert(folder):
    (gray,), _ = load_images(folder / "gray16.png", channels=1)
    (tif,), _ = load_images(folder / "rgb16.tif", channels=3)
    (rgba,), _ = load_images(folder / "alpha.png", channels=4)
    expected = (procedural("blobs", 96, seed=1, channels=3)[..., 0] + 1) / 2
    assert np.abs((gray[..., 0] + 1) / 2 - expected).max() < 1e-4  # finer than 8-bit steps
    assert np.abs((tif + 1) / 2 - (procedural("blobs", 96, seed=1) + 1) / 2).max() < 1e-4
    assert gray.shape[-1] == 1 and tif.shape[-1] == 3 and rgba.shape[-1] == 4


def _save(path, pixels):
    Image.fromarray(pixels).save(path)
    return path


def test_channels_follow_the_pictures(tmp_path):
    """No channels given (the default): colour stays colour, grey stays grey, alpha is kept when it is
    used and dropped, with a note, when it is opaque everywhere."""
    tex = _u8((procedural("blobs", 96, seed=1, channels=3) + 1) / 2)
    grey = tex[..., :1].repeat(3, -1)
    opaque = np.concatenate([tex, np.full((96, 96, 1), 255, np.uint8)], -1)
    cut = opaque.copy()
    cut[:20, :, 3] = 0
    cases = {"colour.png": (tex, 3, None), "grey.png": (tex[..., 0], 1, None),
             "grey-as-rgb.jpg": (grey, 1, "stored as RGB but grey"), "opaque.png": (opaque, 3, "alpha dropped (opaque"),
             "cut-out.png": (cut, 4, None), "grey-alpha.png": (np.stack([tex[..., 0], cut[..., 3]], -1), 4, None)}
    for name, (pixels, channels, note) in cases.items():
        (image,), report = load_images(_save(tmp_path / name, pixels))
        assert report.channels == channels and image.shape == (96, 96, channels), name
        assert note is None or any(note in n for n in report.notes), (name, report.notes)
    (image,), report = load_images(tmp_path / "cut-out.png", channels=3)
    assert image.shape[-1] == 3 and any("alpha dropped (the model has no alpha)" in n for n in report.notes)


def test_nothing_usable_says_why(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="(?s)no usable images.*bad.png: unreadable"):
        load_images(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing")


def is_window(img: np.ndarray, crop: np.ndarray) -> bool:
    """Is `crop` an unchanged window of `img`? (Checks only where the top-left pixel matches.)"""
    size = crop.shape[0]
    corner = (img[: img.shape[0] - size + 1, : img.shape[1] - size + 1] == crop[0, 0]).all(-1)
    return any(np.array_equal(img[y:y + size, x:x + size], crop) for y, x in zip(*np.nonzero(corner)))


def test_crops_are_pure_in_keys_and_augmentations_switch():
    img = procedural("bricks", 128, seed=3)
    crops = ImageCrops([img], 64, flips=True, rot90=True)
    keys = torch.tensor([5, 7, 2**40 + 3], dtype=torch.int64)
    a, b = crops.batch(keys), crops.batch(keys)
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b)
    assert torch.equal(crops.batch(keys[1:2])[0], a[1])  # independent of the rest of the batch
    plain = ImageCrops([img], 64, flips=False, rot90=False).batch(torch.arange(20)).permute(0, 2, 3, 1).numpy()
    assert all(is_window(img, p) for p in plain[:4])
    jit = ImageCrops([img], 64, flips=False, rot90=False, jitter=0.1).batch(torch.arange(4))
    assert not torch.equal(jit, torch.from_numpy(plain[:4]).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="crop 256 is larger"):
        ImageCrops([img], 256)


def test_fair_edges_counts_border_pixels_about_as_often_as_central_ones():
    side, crop = 64, 32
    img = (np.arange(side * side, dtype=np.float32).reshape(side, side, 1) / side ** 2) * 2 - 1  # unique values
    for fair, least, most in ((False, 0.0, 0.1), (True, 0.35, 1.0)):
        crops = ImageCrops([img], crop, flips=False, rot90=False, fair_edges=fair).batch(np.arange(2000))
        corners = np.rint((crops[:, 0, 0, 0].numpy() + 1) / 2 * side ** 2).astype(int)
        assert all(np.array_equal(crops[k, 0].numpy(), img[c // side:c // side + crop, c % side:c % side + crop, 0])
                   for k, c in enumerate(corners[:20]))
        rows = np.zeros(side)
        for y in corners // side:
            rows[y:y + crop] += 1
        assert least <= rows.min() / rows.max() <= most, (fair, rows.min() / rows.max())


def test_exemplars():
    for name in ("brick", "grass", "gravel"):
        ex = exemplar(name)
        assert ex.shape == (512, 512, 1) and -1 <= ex.min() < ex.max() <= 1
    assert np.array_equal(procedural("waves", 64, seed=2), procedural("waves", 64, seed=2))
    assert procedural("bricks", 64, channels=4).shape == (64, 64, 4)
    with pytest.raises(ValueError, match="unknown exemplar"):
        exemplar("marble")


def tiff_bomb(path, side: int = 12000) -> None:
    """A TIFF of under 1 MB that decodes to side x side pixels (zlib tiles, mostly zeros), written tile by tile."""
    rng = np.random.default_rng(0)

    def tiles():
        for _ in range((-(-side // 512)) ** 2):
            tile = np.zeros((512, 512), np.uint8)
            tile[:30, :30] = rng.integers(0, 255, (30, 30))
            yield tile
    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(512, 512), compression="zlib")


def png_header(path, width: int, height: int) -> None:
    """A PNG whose header declares width x height RGB pixels and which holds none."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_images_that_decode_too_large_are_skipped_from_the_header(tmp_path):
    import resource
    import time

    tiff_bomb(tmp_path / "bomb.tif")
    png_header(tmp_path / "bomb.png", 12000, 12000)
    assert (tmp_path / "bomb.tif").stat().st_size < 1_000_000
    Image.fromarray(_u8((procedural("blobs", 96, seed=1, channels=3) + 1) / 2)).save(tmp_path / "good.png")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    images, report = load_images(tmp_path)
    assert time.monotonic() - started < 2
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024 < 100  # MB
    assert len(images) == 1
    reasons = dict(report.skipped)
    for name in ("bomb.tif", "bomb.png"):
        assert reasons[str(tmp_path / name)].startswith("too large") and "12000x12000" in reasons[str(tmp_path / name)]


SUITE = Path(__file__).resolve().parents[2] / "bench" / "data" / "textures"


def test_the_suite_exemplars_with_a_direction_are_found():
    """Wood grain and brick courses change under a 90° turn; gravel and sand do not (bench/data/textures)."""
    from engine.texture.images import has_direction

    for name, directed in (("planks", True), ("bricks", True), ("gravel", False), ("sand", False)):
        images, _ = load_images(SUITE / name / f"{name}_Color.jpg")
        assert has_direction(images[0]) == directed, name


def test_a_texture_with_a_direction_trains_without_90_degree_turns_unless_asked():
    from scipy.ndimage import gaussian_filter1d

    from engine.texture.images import has_direction
    from engine.texture.model import TextureGANConfig
    from engine.texture.objective import TextureObjective

    rng = np.random.default_rng(0)
    # vertical streaks of random widths (they do not repeat: a repeat turns augmentation off
    # anyway, tests/texture/test_repeats.py) and grain
    profile = gaussian_filter1d(rng.normal(0, 1, 256), 3, mode="wrap")
    stripes = profile[None, :] / profile.std() * 0.3 + rng.normal(0, 0.2, (256, 256))
    noise = rng.normal(0, 0.3, (256, 256))
    assert has_direction(stripes[..., None]) and has_direction(stripes.T[..., None])
    assert not has_direction(noise[..., None])
    config = TextureGANConfig(g_width=8, g_max_width=8, d_width=8, d_max_width=8, crop=64)
    directed = TextureObjective(config, [stripes.clip(-1, 1)[..., None]])
    assert directed.crops.rot90 is False and directed.data_summary()["rot90"] is False
    assert any("no 90° turns" in note for note in directed.data_summary()["notes"])
    assert TextureObjective(config, [noise[..., None]]).crops.rot90 is True
    assert TextureObjective(config, [stripes.clip(-1, 1)[..., None]], rot90=True).crops.rot90 is True
