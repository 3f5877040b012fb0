"""A small scene rendered with Cycles: what an artist gets from the add-on and the models Atelier ships.

    .venv-blender/bin/python bench/render_scene.py [--out docs/renders/scene.png] [--ground texture-ground]
        [--materials texture-bricks texture-planks texture-grass] [--size 960x540] [--samples 16]

Starts an engine (the main venv's Python, on the CPU, with a models folder of its own: only the
shipped models), installs the add-on's zip into the real bpy module and, through the add-on's own
operators (so its own apply code: packed images, every map wired, Mapping node scaled in metres),
makes three shapes from the shipped shape model (with the engine's UVs) on a ground plane, puts a
shipped colour material on each (the ground one on the plane; texture-default stands in for a
missing one), adds a sun, a sky colour and a camera, and renders with Cycles on the CPU.

The add-on's materials render height as bump (Blender's default). Here every material is switched
to real displacement and bump, and the meshes are made fine enough to carry it (a 280x280 grid for
the ground, one subdivision level on the shapes), as an artist would for a close-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE_PYTHON = REPO / ".venv" / "bin" / "python"
MODULE = "bl_ext.user_default.atelier"
SHAPES = ((-1.6, 0.3), (0.0, -0.5), (1.6, 0.4))  # (x, y) of each shape on the ground, metres


def start_engine(tmp: Path) -> tuple[subprocess.Popen, dict]:
    """`atelier serve` on a free port, on the CPU, seeing the shipped models only."""
    env = {**os.environ, "ATELIER_STATE_DIR": str(tmp / "state"), "ATELIER_MODELS_DIR": str(tmp / "models")}
    (tmp / "state").mkdir()
    log = open(tmp / "engine.log", "ab")
    process = subprocess.Popen([str(ENGINE_PYTHON), "-m", "engine", "serve", "--port", "0", "--json", "--device",
                                "cpu"], stdout=subprocess.PIPE, stderr=log, env=env)
    log.close()
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise RuntimeError("the engine did not start:\n" + (tmp / "engine.log").read_text()[-2000:])
    return process, json.loads(line)


def build_zip(tmp: Path) -> str:
    done = subprocess.run([str(ENGINE_PYTHON), str(REPO / "blender_addon" / "build.py"), "--out", str(tmp / "dist")],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def texture(addon, obj, model: str, seed: int, metres: float, side: int) -> object:
    """The add-on's Generate Texture on `obj`, as a click with these panel settings, waited for."""
    import bpy

    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    s = bpy.context.scene.atelier
    s.texture_model, s.texture_seed, s.pbr, s.texture_target = model, seed, True, "NEW"
    s.texture_width = s.texture_height = side
    s.texture_scale = metres
    if bpy.ops.atelier.texture_generate(blocking=True) != {"FINISHED"}:
        raise RuntimeError(addon.jobs.state.error)
    material = obj.active_material
    material.displacement_method = "BOTH"  # real displacement, plus bump for detail finer than the mesh
    return material


def shape(addon, seed: int) -> object:
    import bpy

    s = bpy.context.scene.atelier
    s.shape_model, s.shape_seed, s.shape_count = "shape-default", seed, 1
    if bpy.ops.atelier.shape_generate(blocking=True) != {"FINISHED"}:
        raise RuntimeError(addon.jobs.state.error)
    return bpy.context.active_object


def build_scene(args, config: dict) -> dict:
    import bpy  # first: it puts Blender's own modules (addon_utils, ...) on the path

    import addon_utils  # noqa: E402
    from mathutils import Vector

    assert bpy.ops.extensions.package_install_files(filepath=config["zip"], repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    addon = sys.modules[MODULE]
    try:
        prefs = bpy.context.preferences.addons[MODULE].preferences
        prefs.use_engine_json, prefs.host, prefs.port, prefs.token_file = False, config["host"], config["port"], \
            config["token_file"]
        assert bpy.ops.atelier.connect(blocking=True) == {"FINISHED"}, addon.jobs.state.error
        shipped = {m["name"] for m in addon.worker.get().models if m.get("kind") == "texture"}
        ground_model = args.ground if args.ground in shipped else "texture-default"
        on_shapes = [m for m in args.materials if m in shipped] or [ground_model]
        for obj in list(bpy.data.objects):  # the default cube, light and camera
            bpy.data.objects.remove(obj)
        scene = bpy.context.scene
        made = {"ground": ground_model, "shapes": []}
        started = time.perf_counter()

        bpy.ops.mesh.primitive_grid_add(x_subdivisions=280, y_subdivisions=280, size=14.0, calc_uvs=True)
        ground = bpy.context.active_object
        ground.name = "Ground"
        # The panel's Size is what one image covers; the models make features of a fixed size in
        # pixels, so a larger image keeps their real size only with a Size that grows with it.
        per_512 = args.texture / 512
        texture(addon, ground, ground_model, 7, 2.0 * per_512, args.texture)
        for i, (x, y) in enumerate(SHAPES):
            scene.cursor.location = (x, y, 0.0)
            obj = shape(addon, args.seeds[i])
            bpy.context.view_layer.update()
            lowest = min((obj.matrix_world @ v.co).z for v in obj.data.vertices)
            obj.location.z -= lowest  # stand on the ground
            subdivision = obj.modifiers.new("Subdivision", "SUBSURF")
            subdivision.levels = subdivision.render_levels = 1
            model = on_shapes[i % len(on_shapes)]
            texture(addon, obj, model, 3 + i, 1.0 * per_512, args.texture)
            made["shapes"].append({"model": model, "object": obj.name, "size_m": [round(d, 2) for d in obj.dimensions],
                                   "uv_layers": len(obj.data.uv_layers), "triangles": len(obj.data.polygons)})
        made["make_seconds"] = round(time.perf_counter() - started, 1)

        sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
        sun.data.energy, sun.data.angle = 3.5, 0.05
        sun.rotation_euler = (0.85, 0.15, 0.6)  # low and from the side: relief casts shadows
        scene.collection.objects.link(sun)
        world = scene.world or bpy.data.worlds.new("World")
        scene.world = world
        world.use_nodes = True
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.55, 0.65, 0.8, 1.0)
        world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.6
        camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
        camera.data.lens = 32
        camera.location = Vector((0.0, -5.0, 1.8))
        camera.rotation_euler = (Vector((0.0, 0.3, 0.3)) - camera.location).to_track_quat("-Z", "Y").to_euler()
        scene.collection.objects.link(camera)
        scene.camera = camera

        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = args.samples
        scene.cycles.use_denoising = True
        width, height = (int(v) for v in args.size.lower().split("x"))
        scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = width, height, 100
        settings = scene.render.image_settings
        settings.file_format, settings.color_mode, settings.color_depth, settings.compression = "PNG", "RGB", "8", 100
        out = Path(args.out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        scene.render.filepath = str(out)
        started = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        made["render_seconds"] = round(time.perf_counter() - started, 1)
        made.update(png=str(out), png_bytes=out.stat().st_size, samples=args.samples, size=args.size,
                    denoised=scene.cycles.use_denoising)
        return made
    finally:
        addon_utils.disable(MODULE)  # a bpy process with classes still registered hangs at exit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "renders" / "scene.png"))
    parser.add_argument("--ground", default="texture-ground", help="shipped texture model for the ground plane")
    parser.add_argument("--materials", nargs="+", default=["texture-bricks", "texture-planks", "texture-grass"],
                        help="shipped texture models for the shapes (those not shipped are left out)")
    parser.add_argument("--size", default="960x540", help="render size, WxH")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs=3, default=[4, 5, 6], help="shape seeds")
    parser.add_argument("--texture", type=int, default=1024, help="texture side in px")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atelier-render-") as tmp:
        tmp = Path(tmp)
        os.environ["BLENDER_USER_RESOURCES"] = str(tmp / "blender-user")  # read when bpy is imported
        config = {"zip": build_zip(tmp)}
        process, ready = start_engine(tmp)
        try:
            config.update(host=ready["host"], port=ready["port"], token_file=ready["token_file"])
            print("RENDER " + json.dumps(build_scene(args, config)), flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
