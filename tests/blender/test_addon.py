"""The Blender add-on with the real `bpy` module and a real engine process.

Blender's Python pins numpy<2 and must not see torch, so bpy lives in an environment of its
own, `.venv-blender` (made by `bash .ci/setup.sh --test`). These tests run in the main venv:
they build the extension zip, start an engine, train two tiny models through the protocol,
then run tests/blender/scenario.py once in `.venv-blender/bin/python` (one Blender start for
all checks, about 2 s) and turn each of its recorded checks into a test here.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.cli.demo import start_engine
from engine.client import Client
from engine.texture.ops import MAX_SIDE, MIN_SIDE

REPO = Path(__file__).resolve().parents[2]
BLENDER_PYTHON = REPO / ".venv-blender" / "bin" / "python"
SCENARIO = Path(__file__).with_name("scenario.py")
ARTIFACTS = Path(os.environ.get("ATELIER_TEST_ARTIFACTS", REPO / "out" / "test-artifacts"))
TEXTURE_TINY = dict(channels=3, g_width=8, g_max_width=16, d_width=8, d_max_width=16, d_layers=3, crop=32,
                    g_blocks=3, n_local=4, n_global=8, n_periodic=2)
# A tiny implicit model trained 40 steps makes clean closed shapes; a tiny grid model that briefly
# trained makes noisy ones (80k triangles, 130 parts) whose UV unwrap alone outlasts the scenario.
SHAPE_TINY = dict(resolution=16, width=4, latent_dim=64, features=16, frequencies=3, points=256, kl_warmup_steps=20,
                  decoder="implicit")

needs_bpy = pytest.mark.skipif(not BLENDER_PYTHON.exists(),
                               reason=".venv-blender (the bpy wheel) is absent: run `bash .ci/setup.sh --test`")


def blender_env(tmp: Path) -> dict:
    """Blender with its own user folders (extensions, config) in tmp, never the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(BLENDER_USER_RESOURCES=str(tmp / "blender-user"), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, str(REPO / "blender_addon" / "build.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_zip_vendors_the_stdlib_client(addon_zip):
    with zipfile.ZipFile(addon_zip) as zf:
        names = set(zf.namelist())
        assert {"blender_manifest.toml", "__init__.py", "_vendor/client.py", "_vendor/protocol.py",
                "_vendor/paths.py", "_vendor/__init__.py"} <= names
        assert "build.py" not in names and not [n for n in names if "__pycache__" in n]
        for name in names:
            if name.endswith(".py"):
                tree = ast.parse(zf.read(name))
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                        for module in modules:
                            assert not module.startswith(("torch", "engine")), f"{name} imports {module}"


@needs_bpy
def test_blender_extension_validator_accepts_the_zip(addon_zip):
    validator = next((REPO / ".venv-blender").glob("lib/python*/site-packages/bpy/*/scripts/addons_core/"
                                                     "bl_pkg/cli/blender_ext.py"))
    done = subprocess.run([str(BLENDER_PYTHON), str(validator), "validate", str(addon_zip)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FATAL" not in done.stdout + done.stderr


@needs_bpy
def test_build_writes_the_repository_index_blender_would(addon_zip, tmp_path):
    """index.json next to the zip is what Blender's `server-generate` makes of that folder."""
    import shutil

    ours = json.loads((addon_zip.parent / "index.json").read_text())
    shutil.copy(addon_zip, tmp_path / addon_zip.name)
    tool = next((REPO / ".venv-blender").glob("lib/python*/site-packages/bpy/*/scripts/addons_core/"
                                               "bl_pkg/cli/blender_ext.py"))
    done = subprocess.run([str(BLENDER_PYTHON), str(tool), "server-generate", "--repo-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ours == json.loads((tmp_path / "index.json").read_text())


def test_manifest_reader_without_tomllib():
    """build.py runs on Python 3.9+: its fallback reader agrees with tomllib on the manifest."""
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("atelier_build", REPO / "blender_addon" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    import builtins
    from unittest import mock

    text = (REPO / "blender_addon" / "blender_manifest.toml").read_text()
    real_import = builtins.__import__

    def no_tomllib(name, *args, **kwargs):
        if name == "tomllib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    with mock.patch.object(builtins, "__import__", no_tomllib):
        fallback = build.read_manifest(text)
    assert fallback == tomllib.loads(text)


def material_set(tmp: Path) -> Path:
    """A material's six maps as a download names them, in the engine's models folder (a folder it reads)."""
    from PIL import Image

    folder = tmp / "models" / "material-maps"
    folder.mkdir(parents=True)
    rows = np.linspace(0, 4 * np.pi, 64)
    height = (0.5 + 0.5 * np.sin(rows)[:, None] * np.cos(rows)[None, :])
    grey = np.round(height * 255).astype(np.uint8)
    normal = np.dstack([np.full_like(grey, 128), np.full_like(grey, 128), np.full_like(grey, 255)])
    for suffix, pixels in (("Color", np.dstack([grey, grey // 2, 255 - grey])), ("NormalGL", normal),
                           ("Roughness", 255 - grey), ("Displacement", grey), ("Metalness", (grey > 128) * 255),
                           ("AmbientOcclusion", 128 + grey // 2)):
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"stone_{suffix}.png")
    return folder


@pytest.fixture(scope="module")
def scenario(addon_zip, tmp_path_factory) -> dict:
    if not BLENDER_PYTHON.exists():
        pytest.skip(".venv-blender (the bpy wheel) is absent: run `bash .ci/setup.sh --test`")
    tmp = tmp_path_factory.mktemp("blender")
    state = tmp / "state"
    state.mkdir()
    process, ready = start_engine("cpu", state, {"ATELIER_MODELS_DIR": str(tmp / "models"), "OMP_NUM_THREADS": "1"})
    try:
        with Client(ready["host"], ready["port"], token_file=ready["token_file"], name="blender-tests") as client:
            client.call("train", {"kind": "texture", "name": "tex-tiny", "data": {"images": "gravel", "rot90": False},
                                  "model": TEXTURE_TINY, "train": {"steps": 2, "batch_size": 2}}, timeout=300)
            client.call("train", {"kind": "texture", "name": "mat-tiny", "data": {"images": str(material_set(tmp))},
                                  "model": TEXTURE_TINY, "train": {"steps": 2, "batch_size": 2}}, timeout=300)
            client.call("train", {"kind": "shape", "name": "shape-tiny", "data": {"procedural": 8},
                                  "model": SHAPE_TINY, "train": {"steps": 40, "batch_size": 4, "lr": 1e-2}},
                        timeout=300)
        config = {"zip": str(addon_zip), "host": ready["host"], "port": ready["port"],
                  "token_file": ready["token_file"], "texture_model": "tex-tiny", "shape_model": "shape-tiny",
                  "material_model": "mat-tiny",
                  "shape_config": SHAPE_TINY, "texture_config": TEXTURE_TINY, "engine_python": sys.executable,
                  "own_engine_dir": str(tmp / "own-engine"), "artifacts": str(ARTIFACTS),
                  "texture_sides": [MIN_SIDE, MAX_SIDE],
                  "results": str(tmp / "results.json")}
        (tmp / "config.json").write_text(json.dumps(config))
        done = subprocess.run([str(BLENDER_PYTHON), str(SCENARIO), str(tmp / "config.json")], capture_output=True,
                              text=True, timeout=400, env=blender_env(tmp), cwd=tmp)
        log = done.stdout[-6000:] + done.stderr[-4000:]
        assert (tmp / "results.json").exists(), f"the bpy scenario wrote no results (exit {done.returncode}):\n{log}"
        results = json.loads((tmp / "results.json").read_text())
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "blender_scenario.json").write_text(json.dumps(results, indent=1))
        results["_process"] = {"returncode": done.returncode, "log": log}
        return results
    finally:
        process.terminate()
        process.wait(timeout=30)


CHECKS = ["install_and_enable", "register_unregister_clean", "panel_ranges_follow_op_declarations",
          "connect_reads_capabilities",
          "texture_generate_on_active_object", "texture_generate_async_through_pump", "texture_variations_and_morph",
          "texture_needs_a_mesh_target", "errors_speak_to_the_artist", "full_material_every_map_wired_and_scaled",
          "material_model_wires_metallic_and_occlusion",
          "texture_on_all_selected_meshes", "progress_previews_show_in_the_panel",
          "texture_first_look_shows_before_the_material", "unpacked_images_keep_their_own_pixels",
          "shape_generate_at_cursor", "shape_interpolate_count", "shape_variations_count",
          "interpolation_slider_preview",
          "two_mesh_preview_slider_moved_five_times", "variations_keep_size_and_rotation",
          "objects_land_in_the_active_collection", "regenerate_shape_from_provenance", "regenerate_texture_from_provenance",
          "history_lists_everything_with_thumbnails", "panel_draws_every_section",
          "train_shape_from_selection_sends_meshes", "train_texture_sends_pixels_not_a_path", "cancel_stops_running_job",
          "cancelled_training_model_never_chosen", "large_texture_cancels_within_a_second",
          "engine_down_clear_message_nothing_half_made", "render_generated_mesh_wearing_generated_texture",
          "start_restart_stop_engine_from_panel", "stop_engine_started_elsewhere", "unregister_leaves_nothing"]


@pytest.mark.parametrize("name", CHECKS)
def test_scenario(scenario, name):
    result = scenario.get(name)
    assert result is not None, f"check {name} did not run:\n{scenario['_process']['log']}"
    assert result["ok"], f"{result['error']}\n{result.get('traceback', '')}"


def test_blender_exits_cleanly(scenario):
    """Exit code 0: nothing left registered (a bpy process with classes registered hangs at exit)."""
    assert scenario["_process"]["returncode"] == 0, scenario["_process"]["log"]


def test_render_artifact_is_kept(scenario):
    png = Path(scenario["render_generated_mesh_wearing_generated_texture"].get("png", ARTIFACTS / "missing"))
    assert png.exists() and png.stat().st_size > 1000


def test_op_params_table_is_what_the_engine_declares():
    """The panel's ranges come from blender_addon/op_params.py: it must match the op declarations of today."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("atelier_build", REPO / "blender_addon" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.OP_PARAMS.read_text() == build.op_params_source(), \
        "an op's params changed: regenerate the table with `.venv/bin/python blender_addon/build.py --op-params`"
    sides = build.op_params()["texture.generate"]
    assert (sides["width"]["min"], sides["width"]["max"]) == (MIN_SIDE, MAX_SIDE)


def test_png_encoder_round_trips_through_pillow():
    """The add-on's PNG encoder (stdlib + numpy, for Blender) against Pillow's decoder."""
    import importlib.util
    import io

    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("atelier_png", REPO / "blender_addon" / "png.py")
    png = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(png)
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (5, 7, 1), (6, 3, 2), (4, 9, 3), (8, 8, 4)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        decoded = np.asarray(Image.open(io.BytesIO(png.encode(image))))
        assert np.array_equal(decoded.reshape(image.shape), image), shape
    with pytest.raises(ValueError):
        png.encode(np.zeros((4, 4, 3), np.float32))
