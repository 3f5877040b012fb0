"""PBR material sets in and out: a folder of one material's maps (or maps sent by name) trains one
generator on the stacked maps; generate returns every map, normals unit length; colour by default;
a 4096^2 texture stops within a second of cancel."""
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from engine.client import EngineError
from engine.texture.images import ImageCrops, load_images, material_map, procedural

TINY = dict(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)  # channels unset: as the images are
STACKED = 3 + 3 + 1 + 1 + 1  # colour, normal, roughness, height, ao


def surface(size: int = 64) -> dict[str, np.ndarray]:
    """A made-up material as float maps in [0, 1]: height, colour from it, OpenGL normals of it."""
    height = (procedural("blobs", size, seed=2, channels=1)[..., 0] + 1) / 2
    d_row = (np.roll(height, -1, 0) - np.roll(height, 1, 0)) / 2
    d_col = (np.roll(height, -1, 1) - np.roll(height, 1, 1)) / 2
    normal = np.stack([-d_col * 16, d_row * 16, np.ones_like(height)], -1)  # +y up: rows grow downwards
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    colour = np.clip(height[..., None] * np.array([1.0, 0.8, 0.6]) + 0.1, 0, 1)
    return {"height": height, "normal": (normal + 1) / 2, "colour": colour, "roughness": 1 - height * 0.8,
            "ao": np.clip(0.5 + height, 0, 1)}


def u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def write_material(folder, name: str = "rock", *, directx: bool = False, rough_size: int | None = None,
                   colour: bool = True, alpha: bool = False, size: int = 64):
    folder.mkdir(parents=True, exist_ok=True)
    maps = surface(size)
    if colour:
        rgb = u8(maps["colour"])
        if alpha:
            cut = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
            cut[: size // 4] = 0
            rgb = np.concatenate([rgb, cut], -1)
        Image.fromarray(rgb).save(folder / f"{name}_Color.png")
    normal = maps["normal"].copy()
    if directx:
        normal[..., 1] = 1 - normal[..., 1]
    Image.fromarray(u8(normal)).save(folder / f"{name}_Normal{'DX' if directx else 'GL'}.png")
    rough = Image.fromarray(u8(maps["roughness"]))
    (rough.resize((rough_size, rough_size), Image.BILINEAR) if rough_size else rough).save(folder / f"{name}_Roughness.jpg")
    Image.fromarray(np.round(maps["height"] * 65535).astype(np.uint16)).save(folder / f"{name}_Displacement.png")
    Image.fromarray(u8(maps["ao"])).save(folder / f"{name}_AmbientOcclusion.jpg")
    return folder


def test_map_names_of_the_common_sources():
    assert material_map("rock_Color.jpg") == ("rock", "image", False)
    assert material_map("Bricks076C_1K-JPG_NormalDX.jpg") == ("bricks076c_1k_jpg", "normal", True)
    assert material_map("brick_wall_nor_gl_1k.png")[1:] == ("normal", False)
    assert material_map("brick_wall_nor_dx_1k.png")[1:] == ("normal", True)
    assert material_map("brick_wall_diff_1k.jpg") == ("brick_wall", "image", False)
    assert material_map("Wood_Base_Color.PNG") == ("wood", "image", False)
    names = {"x_albedo.png": "image", "x_basecolor.png": "image", "x_normal.png": "normal", "x_rough.jpg": "roughness",
             "x_height.png": "height", "x_disp_2k.tif": "height", "x_Metalness.png": "metallic",
             "x_metallic.png": "metallic", "x_AO.jpg": "ao"}
    assert {name: material_map(name)[1] for name in names} == names
    assert material_map("metal_plate.jpg") is None and material_map("photo.jpg") is None


def test_a_material_folder_is_one_stacked_exemplar(tmp_path):
    (image,), report = load_images(write_material(tmp_path / "rock"))
    assert (report.channels, report.maps) == (3, ("normal", "roughness", "height", "ao"))
    assert image.shape == (64, 64, STACKED) and image.dtype == np.float32
    assert np.abs(np.linalg.norm(image[..., 3:6], axis=-1) - 1).max() < 1e-5
    expected = surface()
    assert np.abs((image[..., 7] + 1) / 2 - expected["height"]).max() < 1e-4  # 16-bit: finer than 8-bit steps
    assert np.abs((image[..., :3] + 1) / 2 - expected["colour"]).max() < 1 / 255
    assert len(report.used) == 5 and not report.skipped


def test_a_directx_normal_map_is_turned_to_opengl(tmp_path):
    (gl,), _ = load_images(write_material(tmp_path / "gl"))
    (dx,), report = load_images(write_material(tmp_path / "dx", directx=True))
    assert np.abs(gl - dx).max() < 0.02  # the same surface, to 8-bit rounding
    assert any("DirectX normal map, turned to OpenGL (green flipped)" in note for note in report.notes)


def test_maps_of_another_size_are_resized_to_the_colour_map_and_said(tmp_path):
    (image,), report = load_images(write_material(tmp_path / "rock", rough_size=32))
    assert image.shape == (64, 64, STACKED)
    assert any("rock_Roughness.jpg: resized from 32x32 to the colour map's 64x64" in note for note in report.notes)
    assert np.abs((image[..., 6] + 1) / 2 - surface()["roughness"]).mean() < 0.03


def test_a_material_without_a_colour_map_is_refused_with_the_reason(tmp_path):
    folder = write_material(tmp_path / "rock", colour=False)
    with pytest.raises(ValueError, match="(?s)no usable images.*rock_NormalGL.png: its material has no colour map"):
        load_images(folder)
    write_material(folder, "sand")  # a complete material beside it trains; the other's files are listed
    (image,), report = load_images(folder)
    assert image.shape[-1] == STACKED and len(report.skipped) == 4
    assert all("no colour map" in why for _, why in report.skipped)


def test_a_colour_map_with_alpha_keeps_it(tmp_path):
    (image,), report = load_images(write_material(tmp_path / "leaf", alpha=True))
    assert report.channels == 4 and image.shape[-1] == STACKED + 1 and image[0, 0, 3] == -1


def test_flips_and_turns_turn_the_normal_vectors_with_the_picture():
    """A ramp rising to the right has normals leaning left; in every augmented crop the normals
    still lean against the way the (equally augmented) ramp rises."""
    size = 48
    ramp = np.tile(np.linspace(-1, 1, size, dtype=np.float32), (size, 1))
    slope = 2 / (size - 1) * 8
    normal = np.broadcast_to(np.array([-slope, 0, 1], np.float32) / np.hypot(slope, 1), (size, size, 3))
    crops = ImageCrops([np.concatenate([ramp[..., None], normal], -1)], 16, colour=1, normal=1, seed=3)
    for key in range(16):
        crop = crops.one(key)
        rise = np.array([np.diff(crop[..., 0], axis=1).mean(), -np.diff(crop[..., 0], axis=0).mean()])  # (x, y up)
        lean = crop[..., 1:3].mean((0, 1))
        assert np.allclose(lean / np.linalg.norm(lean), -rise / np.linalg.norm(rise), atol=1e-4), key


def _train(engine, name: str, data: dict, **model) -> dict:
    with engine.client() as client:
        client.call("train", {"kind": "texture", "name": name, "data": data, "model": {**TINY, **model},
                              "train": {"steps": 2, "batch_size": 2}}, timeout=300)
        return client.call("models.info", {"name": name})["metadata"]


def test_a_material_trains_a_stacked_model_whose_outputs_have_every_map(engine):
    folder = write_material(engine.models_dir / "materials" / "rock", directx=True, rough_size=32)
    info = _train(engine, "rock", {"images": str(folder)})
    assert (info["config"]["channels"], info["config"]["maps"]) == (3, ["normal", "roughness", "height", "ao"])
    assert any("DirectX" in note for note in info["data"]["notes"])
    with engine.client() as client:
        value = client.call("texture.generate", {"model": "rock", "width": 64, "height": 48, "seed": 3}, timeout=60)
        morph = client.call("texture.morph", {"model": "rock", "width": 64, "height": 32}, timeout=60)
    assert value["image"].shape == (48, 64, 3) and value["normal"].shape == (48, 64, 3)
    assert all(value[name].shape == (48, 64) for name in ("roughness", "height", "ao"))
    assert "metallic" not in value and set(morph) >= {"image", "normal", "roughness", "height", "ao"}
    length = np.linalg.norm(value["normal"].astype(np.float64) / 127.5 - 1, axis=-1)
    assert abs(length.mean() - 1) <= 1e-3 and np.abs(length - 1).max() < 0.01  # unit vectors, to 8-bit steps
    assert (value["normal"][..., 2] >= 127).all()  # facing out of the surface


def test_maps_sent_by_a_client_by_name_are_a_material_too(engine):
    maps = surface()
    sent = [{"name": "Moss_Color.png", "pixels": u8(maps["colour"])},
            {"name": "Moss_NormalGL.png", "pixels": u8(maps["normal"])},
            {"name": "Moss_Roughness.png", "pixels": u8(maps["roughness"])}]
    info = _train(engine, "moss", {"image_arrays": sent})
    assert (info["config"]["channels"], info["config"]["maps"]) == (3, ["normal", "roughness"])
    with engine.client() as client:
        value = client.call("texture.generate", {"model": "moss", "width": 32, "pbr": True}, timeout=60)
    assert set(value) >= {"image", "normal", "roughness", "height"}  # height estimated, the rest made


@pytest.mark.parametrize("pixels, channels", [(u8(surface()["colour"]), 3), (u8(surface()["height"]), 1)])
def test_colour_trains_a_colour_model_and_grey_a_grey_one_by_default(engine, pixels, channels):
    info = _train(engine, f"plain-{channels}", {"image_arrays": [{"name": "photo.png", "pixels": pixels}]})
    assert info["config"]["channels"] == channels and info["config"]["maps"] == []
    with engine.client() as client:
        value = client.call("texture.generate", {"model": f"plain-{channels}", "width": 32}, timeout=60)
    assert value["image"].shape == (32, 32, channels)


def test_a_4096_texture_reports_progress_and_stops_within_a_second_of_cancel(engine):
    """The shipped model at 4096^2 with PBR maps takes many seconds; each layer is made in bands with
    a progress report after each, and a report is where a cancelled job stops."""
    seen, started = [], threading.Event()

    def on_progress(fraction, message, preview):
        seen.append(fraction)
        if fraction >= 0.5:  # inside the largest layers, where a band takes longest
            started.set()

    with engine.client() as client:
        request = client.submit("texture.generate", {"model": "texture-default", "width": 4096, "pbr": True},
                                on_progress=on_progress)
        assert started.wait(120), f"no progress past 50 % (saw {seen})"
        cancelled_at = time.monotonic()
        request.cancel()
        with pytest.raises(EngineError) as caught:
            request.result(timeout=60)
        took = time.monotonic() - cancelled_at
        assert caught.value.code == "cancelled"
        assert client.ping() >= 0
    print(f"4096^2 cancel took {took:.2f} s")
    assert took <= 2.0  # 1 s is the goal; the CI machine is loaded
    assert seen == sorted(seen) and 0.5 <= seen[-1] < 1.0  # real progress (reports are sent at most 10 a second)


def test_generating_in_bands_gives_the_one_pass_picture(monkeypatch):
    """Pictures over LARGE pixels are made in bands (real progress, cancel between bands): the
    same pixels as in one pass, checked on a small picture with LARGE and BAND made small."""
    from engine.texture import generation
    from engine.texture.generation import TextureModel
    from engine.texture.model import Generator, TextureGANConfig

    torch.manual_seed(0)
    config = TextureGANConfig(**TINY, channels=3, maps=("normal", "height"))
    model = TextureModel(config, Generator(config))
    whole = model.generate_maps(96, 64, seed=1)
    monkeypatch.setattr(generation, "LARGE", 0)
    monkeypatch.setattr(generation, "BAND", 100_000)
    seen = []
    banded = model.generate_maps(96, 64, seed=1, progress=lambda f, msg: seen.append(f))
    assert len(seen) > 20 and seen == sorted(seen)
    for name in whole:
        assert np.abs(whole[name].astype(int) - banded[name]).max() <= 1, name
        assert (whole[name] == banded[name]).mean() > 0.999, name


def test_normals_keep_their_slopes_and_take_z_from_them():
    from engine.texture.generation import unit_normals

    x = torch.randn(3, 40, 30, generator=torch.Generator().manual_seed(0)) * 0.4
    x[:, 0, 0] = 0  # no slope points out of the surface
    x[:, 0, 1] = torch.tensor([3.0, -4.0, 0.5])  # steeper than a unit vector allows
    made = unit_normals(x)
    assert (made.norm(dim=0) - 1).abs().max() < 1e-6 and made[2].min() > 0.9e-3
    fits = x[0] ** 2 + x[1] ** 2 < 1
    assert fits.float().mean() > 0.9 and torch.equal(made[:2][:, fits], x[:2][:, fits])
    assert torch.allclose(made[:, 0, 1], torch.tensor([0.6, -0.8, 1e-3]), atol=1e-4)  # its direction kept
    assert made[:, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert not torch.equal(made, x)  # its input is left alone
