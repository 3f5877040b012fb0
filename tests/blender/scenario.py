"""Runs inside the real `bpy` module (in .venv-blender), driven by test_addon.py.

    python scenario.py CONFIG.json

Installs the built extension zip, enables it, and walks the panel's features against a
real engine process; every check is recorded (pass/fail, details) in the results file named
in the config, which test_addon.py turns into one pytest test per check. The process exits
0 only when it ends cleanly: the add-on is disabled (unregistered) again at the end, since a
bpy process with classes still registered hangs at exit.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from pathlib import Path

import bpy  # first: it puts Blender's own modules (addon_utils, ...) on the path
import numpy as np

import addon_utils  # noqa: E402

CONFIG = json.loads(Path(sys.argv[-1]).read_text())
MODULE = "bl_ext.user_default.atelier"
results: dict[str, dict] = {}
shared: dict = {}


def check(name: str):
    def run(fn):
        started = time.perf_counter()
        try:
            detail = fn() or {}
            results[name] = {"ok": True, **detail}
        except Exception as e:
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - started, 3)
        print(f"[scenario] {name}: {'ok' if results[name]['ok'] else results[name]['error']}", flush=True)
        return fn
    return run


def addon():
    return sys.modules[MODULE]


def s():
    return bpy.context.scene.atelier


def prefs():
    return bpy.context.preferences.addons[MODULE].preferences


def point_at_engine(port: int | None = None) -> None:
    p = prefs()
    p.use_engine_json = False
    p.host = CONFIG["host"]
    p.port = port or CONFIG["port"]
    p.token_file = CONFIG["token_file"]
    p.autostart = False


def select_only(*objects) -> None:
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    for o in objects:
        o.select_set(True)
    bpy.context.view_layer.objects.active = objects[0] if objects else None


def pixels(image) -> np.ndarray:
    """An image's pixels as uint8 H×W×4, top row first (Blender stores bottom row first)."""
    width, height = image.size
    flat = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(flat)
    return np.round(flat.reshape(height, width, 4)[::-1] * 255).astype(np.uint8)


def same_pixels(image, array: np.ndarray) -> bool:
    array = array[..., None] if array.ndim == 2 else array
    got = pixels(image)
    if array.shape[-1] == 1:
        return bool(np.array_equal(got[..., :3], np.repeat(array, 3, -1)))
    return bool(np.array_equal(got[..., :array.shape[-1]], array))


def vertices(obj) -> np.ndarray:
    out = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def watertight(obj) -> tuple[bool, int]:
    """Every edge shared by exactly two triangles, each direction once (consistent winding)."""
    mesh = obj.data
    loops = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loops)
    faces = loops.reshape(-1, 3)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, 1)
    _, counts = np.unique(undirected, axis=0, return_counts=True)
    unique_directed = len(np.unique(directed, axis=0)) == len(directed)
    return bool((counts == 2).all() and unique_directed), len(faces)


def pump_until(condition, timeout: float = 120.0) -> None:
    """What the UI's timer does, by hand: background mode has no timers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        addon().jobs.pump(undo=True)
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError("waited too long for the engine")


def datablock_counts() -> dict:
    return {k: len(getattr(bpy.data, k)) for k in ("objects", "meshes", "images", "materials")}


def engine_client():
    vendor = addon()._vendor
    return vendor.client.Client(CONFIG["host"], CONFIG["port"], token=Path(CONFIG["token_file"]).read_text().strip(),
                                name="scenario")


def as_float32(*values: float) -> tuple:
    """bpy keeps float properties as 32-bit floats."""
    return tuple(float(np.float32(v)) for v in values)


# ---------------------------------------------------------------------------------------------
@check("install_and_enable")
def _():
    started = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(filepath=CONFIG["zip"], repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert addon_utils.check(MODULE) == (True, True), addon_utils.check(MODULE)
    assert hasattr(bpy.types.Scene, "atelier") and hasattr(bpy.ops.atelier, "texture_generate")
    assert "torch" not in sys.modules
    return {"seconds_install": round(time.perf_counter() - started, 3),
            "path": str(Path(addon().__file__).parent)}


@check("register_unregister_clean")
def _():
    addon_utils.disable(MODULE)
    leftovers = [n for n in dir(bpy.types) if n.startswith(("ATELIER_", "Atelier"))]
    assert not hasattr(bpy.types.Scene, "atelier") and not hasattr(bpy.types.WindowManager, "atelier")
    assert not leftovers, leftovers
    assert "atelier" not in dir(bpy.ops) or not dir(bpy.ops.atelier), dir(bpy.ops.atelier)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        addon_utils.enable(MODULE)
        times.append(time.perf_counter() - started)
        addon_utils.disable(MODULE)
    addon_utils.enable(MODULE)
    assert hasattr(bpy.types.Scene, "atelier")
    return {"enable_ms_median": round(1000 * sorted(times)[2], 2)}


@check("connect_reads_capabilities")
def _():
    point_at_engine()
    assert bpy.ops.atelier.connect(blocking=True) == {"FINISHED"}
    w = addon().worker.get()
    assert w.info and "texture.generate" in w.info["capabilities"]["ops"], w.info
    names = [m["name"] for m in w.models]
    assert CONFIG["texture_model"] in names and CONFIG["shape_model"] in names, names
    runtime = bpy.context.window_manager.atelier
    assert CONFIG["texture_model"] in [m.name for m in runtime.texture_models]
    lines = addon().panels.status_lines()
    assert lines[0][0] == "CHECKMARK" and w.info["engine"] in lines[0][1], lines
    return {"status": lines}


@check("panel_ranges_follow_op_declarations")
def _():
    props = s().bl_rna.properties
    table = addon().op_params.OP_PARAMS
    for prop in ("texture_width", "texture_height"):
        assert (props[prop].hard_min, props[prop].hard_max) == tuple(CONFIG["texture_sides"]), prop
    for prop, op, param in (("normal_strength", "texture.generate", "normal_strength"),
                            ("shape_count", "shape.sample", "count"), ("spread", "shape.variations", "spread"),
                            ("interp_steps", "shape.interpolate", "steps")):
        spec = table[op][param]
        assert (props[prop].hard_min, props[prop].hard_max, props[prop].default) == as_float32(
            spec["min"], spec["max"], spec["default"]), (prop, spec)
    return {"texture_sides": [props["texture_width"].hard_min, props["texture_width"].hard_max]}


@check("texture_generate_on_active_object")
def _():
    cube = bpy.data.objects["Cube"]
    select_only(cube)
    st = s()
    st.texture_model, st.texture_width, st.texture_height, st.texture_seed = CONFIG["texture_model"], 64, 32, 3
    st.pbr, st.tileable, st.texture_target = True, True, "NEW"
    assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    job = addon().jobs.state.last_job
    material = cube.active_material
    assert material is not None and material.name == job.context["created"][0], job.context
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    base = bsdf.inputs["Base Color"].links[0].from_node
    image = base.image
    assert tuple(image.size) == (64, 32), tuple(image.size)
    assert image.packed_file is not None, "image not packed"
    assert same_pixels(image, job.value["image"]), "pixels differ from the job's result"
    with engine_client() as client:  # the same request, straight to the engine
        direct = client.call("texture.generate", {"model": CONFIG["texture_model"], "width": 64, "height": 32,
                                                  "seed": 3, "tileable": True, "pbr": True}, timeout=120)
    assert same_pixels(image, direct["image"]), "pixels differ from what the engine returns"
    normal_link = bsdf.inputs["Normal"].links[0].from_node
    assert normal_link.type == "NORMAL_MAP", normal_link.type
    normal_image = normal_link.inputs["Color"].links[0].from_node.image
    assert normal_image.colorspace_settings.name == "Non-Color"
    assert same_pixels(normal_image, direct["normal"]), "normal map differs"
    assert bsdf.inputs["Roughness"].links, "roughness not linked"
    prov = json.loads(image["atelier_provenance"])
    assert prov["model"] == CONFIG["texture_model"] and prov["params"]["seed"] == 3 and prov["model_hash"]
    assert material["atelier_seed"] == 3 and material["atelier_model_hash"] == prov["model_hash"]
    shared["texture_image"] = image.name
    return {"image": image.name, "material": material.name, "engine_shape": list(direct["image"].shape)}


@check("texture_generate_async_through_pump")
def _():
    cube = bpy.data.objects["Cube"]
    select_only(cube)
    before = cube.active_material
    s().texture_seed = 5
    assert bpy.ops.atelier.texture_generate() == {"FINISHED"}  # returns at once
    assert addon().jobs.state.last_job is not None
    pump_until(lambda: cube.active_material is not before)
    image = cube.active_material.node_tree.nodes["Atelier color"].image
    return {"material": cube.active_material.name, "image": image.name}


@check("texture_variations_and_morph")
def _():
    cube = bpy.data.objects["Cube"]
    select_only(cube)
    slots = len(cube.material_slots)
    s().texture_variations = 2
    s().pbr = False
    assert bpy.ops.atelier.texture_variations(blocking=True) == {"FINISHED"}
    assert len(cube.material_slots) == slots + 2
    s().morph_seed = 9
    assert bpy.ops.atelier.texture_morph(blocking=True) == {"FINISHED"}
    assert cube.active_material["atelier_op"] == "texture.morph"
    # Exemplars: the test model was trained on one image, so 0 is the only one there is.
    s().texture_exemplar = 0
    assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    image = cube.active_material.node_tree.nodes["Atelier color"].image
    assert json.loads(image["atelier_provenance"])["params"]["exemplar"] == 0
    s().texture_exemplar, counts = 3, datablock_counts()
    try:
        bpy.ops.atelier.texture_generate(blocking=True)
        raise AssertionError("an exemplar the model does not have was accepted")
    except RuntimeError as e:  # the engine's message, reported by the operator
        assert "exemplar 3 does not exist" in str(e) and "1 exemplar" in str(e), e
    finally:
        s().texture_exemplar = -1
    assert datablock_counts() == counts, "a failed request left something behind"
    return {"slots": len(cube.material_slots)}


@check("texture_needs_a_mesh_target")
def _():
    """An Empty, a Light or nothing active: the texture buttons are greyed out with the reason,
    a script gets the reason as its error, and nothing is made."""
    empty = bpy.data.objects.new("Test empty", None)
    light = bpy.data.objects.new("Test light", bpy.data.lights.new("Test light", "POINT"))
    for obj in (empty, light):
        bpy.context.scene.collection.objects.link(obj)
    counts, messages = datablock_counts(), []
    try:
        for active in (empty, light, None):
            select_only(*([active] if active else []))
            for operator in (bpy.ops.atelier.texture_generate, bpy.ops.atelier.texture_variations,
                             bpy.ops.atelier.texture_morph):
                assert not operator.poll(), (operator, active)
                try:
                    operator(blocking=True)
                    raise AssertionError(f"{operator} made a texture for {active}")
                except RuntimeError as e:
                    messages.append(str(e))
                    assert "Select a mesh to put the texture on" in str(e), str(e)
        assert datablock_counts() == counts, "something was made without a mesh to put it on"
    finally:
        light_data = light.data
        bpy.data.objects.remove(empty)
        bpy.data.objects.remove(light)
        bpy.data.lights.remove(light_data)
    return {"messages": sorted(set(messages))}


@check("errors_speak_to_the_artist")
def _():
    """Engine errors reach the artist reworded: no command lines, no array shapes."""
    bpy.ops.mesh.primitive_plane_add(location=(-30.0, 5.0, 0.0))
    plane = bpy.context.active_object
    select_only(plane)
    st = s()
    said = {}
    try:
        try:
            bpy.ops.atelier.shape_variations(blocking=True)
            raise AssertionError("variations of a plane were accepted")
        except RuntimeError as e:
            said["too_simple"] = str(e)
        assert "too simple" in said["too_simple"] and "triangulate" not in said["too_simple"] \
            and "int32" not in said["too_simple"], said
        st.texture_model = "no-such-model"
        try:
            bpy.ops.atelier.texture_generate(blocking=True)
            raise AssertionError("a missing model was accepted")
        except RuntimeError as e:
            said["missing_model"] = str(e)
        assert "There is no model called 'no-such-model'" in said["missing_model"] \
            and "atelier train" not in said["missing_model"], said
    finally:
        st.texture_model = CONFIG["texture_model"]
        mesh = plane.data
        bpy.data.objects.remove(plane)
        bpy.data.meshes.remove(mesh)
    return said


@check("material_model_wires_metallic_and_occlusion")
def _():
    """A model trained on a material's maps returns all six; metallic goes to Metallic (non-colour),
    the occlusion multiplies the colour into Base Color."""
    bpy.ops.mesh.primitive_plane_add(size=2.0, location=(-46.0, 0.0, 0.0))
    plane = bpy.context.active_object
    select_only(plane)
    st = s()
    st.texture_model, st.pbr, st.texture_target, st.texture_seed = CONFIG["material_model"], True, "NEW", 5
    assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    tree = plane.active_material.node_tree
    images = {json.loads(n.image["atelier_provenance"])["map"]: n for n in tree.nodes if n.type == "TEX_IMAGE"}
    assert set(images) == {"image", "normal", "roughness", "height", "metallic", "ao"}, set(images)
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Metallic"].links[0].from_node == images["metallic"]
    assert images["metallic"].image.colorspace_settings.name == "Non-Color"
    occlusion = bsdf.inputs["Base Color"].links[0].from_node
    assert occlusion.name == "Atelier occlusion" and occlusion.blend_type == "MULTIPLY"
    assert {link.from_node for socket in occlusion.inputs for link in socket.links} == {images["image"], images["ao"]}
    st.texture_model = CONFIG["texture_model"]


@check("full_material_every_map_wired_and_scaled")
def _():
    """Every map the engine returns is wired (height through a Displacement node), through one
    Mapping node whose scale follows the texture's real size; Into: Active material replaces
    only what Atelier put there, and a material without a Principled BSDF is left alone, with
    a warning."""
    bpy.ops.mesh.primitive_plane_add(size=2.0, location=(-40.0, 0.0, 0.0))
    plane = bpy.context.active_object
    select_only(plane)
    st = s()
    st.texture_model, st.pbr, st.texture_target, st.texture_scale, st.texture_seed = \
        CONFIG["texture_model"], True, "NEW", 1.0, 12
    assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    returned = {k for k in ("image", "normal", "roughness", "height")
                if addon().jobs.state.last_job.value.get(k) is not None}
    assert returned == {"image", "normal", "roughness", "height"}, returned
    material = plane.active_material
    tree = material.node_tree
    frame, mapping = tree.nodes["Atelier texture"], tree.nodes["Atelier mapping"]
    images = {json.loads(n.image["atelier_provenance"])["map"]: n for n in tree.nodes if n.type == "TEX_IMAGE"}
    assert set(images) == returned, set(images)
    for key, node in images.items():
        assert node.outputs["Color"].links and node.parent == frame, key
        assert node.inputs["Vector"].links[0].from_node == mapping, key
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    output = next(n for n in tree.nodes if n.type == "OUTPUT_MATERIAL")
    assert bsdf.inputs["Base Color"].links[0].from_node == images["image"]
    assert bsdf.inputs["Roughness"].links[0].from_node == images["roughness"]
    assert bsdf.inputs["Normal"].links[0].from_node.inputs["Color"].links[0].from_node == images["normal"]
    displacement = output.inputs["Displacement"].links[0].from_node
    assert displacement.type == "DISPLACEMENT" and displacement.inputs["Height"].links[0].from_node == images["height"]
    assert abs(material["atelier_metres_per_unit"] - 2.0) < 1e-3, material["atelier_metres_per_unit"]  # 2 m plane
    assert np.allclose(tuple(mapping.inputs["Scale"].default_value), (2.0, 2.0, 2.0))
    st.texture_scale = 0.5  # half a metre per copy: four times across the plane
    assert np.allclose(tuple(mapping.inputs["Scale"].default_value), (4.0, 4.0, 4.0)), \
        tuple(mapping.inputs["Scale"].default_value)
    assert abs(displacement.inputs["Scale"].default_value - 0.5 * addon().apply.HEIGHT_SHARE) < 1e-6
    # Into the active material again: Atelier's own nodes are replaced, the artist's stay.
    mine = tree.nodes.new("ShaderNodeValue")
    mine.name = "Artist's value"
    nodes = len(tree.nodes)
    st.texture_target, st.texture_seed = "ACTIVE", 13
    assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    assert plane.active_material == material and len(tree.nodes) == nodes, (len(tree.nodes), nodes)
    assert "Artist's value" in tree.nodes and material["atelier_seed"] == 13
    assert np.allclose(tuple(tree.nodes["Atelier mapping"].inputs["Scale"].default_value), (4.0, 4.0, 4.0))
    # No Principled BSDF: that material is left as it is; the texture goes into a new slot, with a warning.
    plain = bpy.data.materials.new("Plain emission")
    if plain.node_tree is None:
        plain.use_nodes = True
    for node in [n for n in plain.node_tree.nodes if n.type == "BSDF_PRINCIPLED"]:
        plain.node_tree.nodes.remove(node)
    plain.node_tree.nodes.new("ShaderNodeEmission")
    plane.data.materials.append(plain)
    plane.active_material_index = len(plane.material_slots) - 1
    plain_nodes, slots = len(plain.node_tree.nodes), len(plane.material_slots)
    assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    warnings = addon().jobs.state.last_job.context.get("warnings")
    assert warnings and "no Principled BSDF" in warnings[0], warnings
    assert len(plain.node_tree.nodes) == plain_nodes and len(plane.material_slots) == slots + 1
    assert plane.material_slots[slots - 1].material == plain and plane.active_material != plain
    st.texture_target, st.texture_scale = "NEW", 1.0
    return {"nodes": nodes, "warning": warnings[0]}


@check("progress_previews_show_in_the_panel")
def _():
    """The small images the engine sends with progress reach the job and become panel icons."""
    Job = addon().worker.Job
    job = addon().jobs.run(bpy.context, Job("texture.animate", {"model": CONFIG["texture_model"], "width": 32,
                                                                "height": 32, "frames": 3}, "Animate"))
    pump_until(lambda: job.finished)
    assert job.state == "done" and job.preview_serial == 3, (job.state, job.error, job.preview_serial)
    previews = addon().previews
    previews.icon(job)  # the icon id is 0 in background mode (no icons without a UI); the image is there
    height, width = np.asarray(job.preview).shape[:2]
    assert tuple(previews._collection[f"{id(job)}-3"].image_size) == (width, height)
    job.preview, job.preview_serial = np.zeros((24, 32), np.float32), 4  # a float, grey preview too
    previews.icon(job)
    keys = [k for k in previews._collection.keys() if k.startswith(f"{id(job)}-")]
    assert keys == [f"{id(job)}-4"], keys  # only the newest is kept
    assert tuple(previews._collection[keys[0]].image_size) == (32, 24)
    return {"previews": job.preview_serial, "shape": list(np.asarray(job.value["frames"]).shape)}


@check("texture_first_look_shows_before_the_material")
def _():
    """A 1024² texture: the engine's first look (a small picture of the same material, sent with
    its first progress) reaches the panel's preview collection while the job runs, before the
    material lands on the object; the preview goes once the result is applied."""
    bpy.ops.mesh.primitive_plane_add(location=(-70.0, 0.0, 0.0))
    plane = bpy.context.active_object
    st = s()
    before = (st.texture_model, st.texture_target, st.pbr, st.texture_seed, st.texture_width, st.texture_height)
    st.texture_model, st.texture_target, st.pbr, st.texture_seed = CONFIG["texture_model"], "NEW", False, 31
    st.texture_width = st.texture_height = 1024
    collection = addon().previews._collection
    try:
        assert bpy.ops.atelier.texture_generate() == {"FINISHED"}, addon().jobs.state.error
        job = addon().worker.get().active_jobs()[0]
        shown = lambda: [k for k in collection.keys() if k.startswith(f"{id(job)}-")]  # noqa: E731
        pump_until(lambda: shown() or job.finished)
        assert shown(), f"no preview while the job ran ({job.state}, {job.message})"
        assert plane.active_material is None and not job.applied, "the material landed before the preview"
        size = tuple(collection[shown()[0]].image_size)
        message = job.message
        pump_until(lambda: job.finished and plane.active_material is not None)
    finally:
        (st.texture_model, st.texture_target, st.pbr, st.texture_seed, st.texture_width,
         st.texture_height) = before
    assert job.state == "done" and not shown(), (job.state, shown())
    assert max(size) < 1024 and plane.active_material.get("atelier_op") == "texture.generate", size
    return {"preview_size": list(size), "message_with_preview": message}


@check("texture_on_all_selected_meshes")
def _():
    planes = []
    for n in range(3):
        bpy.ops.mesh.primitive_plane_add(location=(-50.0 - 3 * n, 0.0, 0.0))
        planes.append(bpy.context.active_object)
    light = bpy.data.objects.new("Selected light", bpy.data.lights.new("Selected light", "POINT"))
    bpy.context.scene.collection.objects.link(light)
    st = s()
    st.texture_target, st.texture_seed, st.pbr = "NEW", 14, False
    try:
        select_only(planes[0], planes[1], light)  # the light is skipped: it cannot wear a material
        st.texture_all_selected = False
        assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
        assert planes[0].active_material is not None and planes[1].active_material is None
        st.texture_all_selected = True
        select_only(planes[1], planes[0], planes[2], light)
        assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
        material = planes[1].active_material
        assert material is not None and all(p.active_material == material for p in planes), \
            [p.active_material for p in planes]
    finally:
        st.texture_all_selected, st.pbr = False, True
        light_data = light.data
        bpy.data.objects.remove(light)
        bpy.data.lights.remove(light_data)
    return {"material": material.name}


@check("unpacked_images_keep_their_own_pixels")
def _():
    """File ▸ External Data ▸ Unpack Resources ▸ Write files to current directory: each image
    is written to a file of its own (model, seed and map in its name) and keeps its pixels."""
    import os
    import tempfile

    st = s()
    st.texture_model, st.pbr, st.texture_target = CONFIG["texture_model"], True, "NEW"
    made = {}
    for n, seed in enumerate((7, 8)):
        bpy.ops.mesh.primitive_plane_add(location=(-20.0 - 3 * n, 0.0, 0.0))
        plane = bpy.context.active_object
        select_only(plane)
        st.texture_seed = seed
        assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
        for name in addon().jobs.state.last_job.context["created"][1:]:
            made[name] = (seed, pixels(bpy.data.images[name]))
    assert len(made) >= 6, list(made)  # colour, normal, roughness (and height) of each
    files = {os.path.basename(bpy.data.images[name].filepath) for name in made}
    assert len(files) == len(made), files
    for name, (seed, _) in made.items():
        image = bpy.data.images[name]
        prefix = f"atelier_{CONFIG['texture_model']}_s{seed}"
        assert name.startswith(prefix) and os.path.basename(image.filepath).startswith(prefix), (name, image.filepath)
        kind = json.loads(image["atelier_provenance"])["map"]
        assert name.endswith("_color" if kind == "image" else f"_{kind}"), (name, kind)
    folder = tempfile.mkdtemp(prefix="atelier-unpack-")
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "scene.blend"))
    assert bpy.ops.file.unpack_all(method="WRITE_LOCAL") == {"FINISHED"}
    written = sorted(os.listdir(os.path.join(folder, "textures")))
    for name, (seed, before) in made.items():
        image = bpy.data.images[name]
        path = bpy.path.abspath(image.filepath)
        assert image.packed_file is None and os.path.dirname(path) == os.path.join(folder, "textures"), path
        image.reload()
        assert np.array_equal(pixels(image), before), f"{name} lost its pixels on unpacking"
    return {"files": written}


@check("shape_generate_at_cursor")
def _():
    bpy.context.scene.cursor.location = (3.0, -2.0, 0.5)
    st = s()
    st.shape_model, st.shape_seed, st.shape_count, st.shape_smooth = CONFIG["shape_model"], 4, 1, 2
    before = set(bpy.data.objects)
    assert bpy.ops.atelier.shape_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    new = [o for o in bpy.data.objects if o not in before]
    assert len(new) == 1, new
    obj = new[0]
    assert tuple(round(c, 5) for c in obj.location) == (3.0, -2.0, 0.5), tuple(obj.location)
    closed, faces = watertight(obj)
    assert closed, "mesh is not watertight"
    assert all(p.use_smooth for p in obj.data.polygons)
    uv_map = obj.data.uv_layers.active  # the engine's per-corner UVs, one per loop
    assert uv_map is not None and len(uv_map.data) == len(obj.data.loops), "the engine's UVs made no UV map"
    uv = np.empty(len(uv_map.data) * 2, np.float32)
    uv_map.data.foreach_get("uv", uv)
    assert 0 <= uv.min() and uv.max() <= 1 and np.ptp(uv) > 0.5, (uv.min(), uv.max())
    assert bpy.context.view_layer.objects.active == obj and obj.select_get()
    assert json.loads(obj.data["atelier_provenance"])["op"] == "shape.sample"
    shared["shape"] = obj.name
    return {"object": obj.name, "faces": faces}


@check("shape_interpolate_count")
def _():
    st = s()
    st.interp_source, st.interp_steps, st.interp_seed_b, st.shape_layout = "SEEDS", 4, 11, "ROW"
    before = set(bpy.data.objects)
    assert bpy.ops.atelier.shape_interpolate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    new = sorted((o for o in bpy.data.objects if o not in before), key=lambda o: o.name)
    assert len(new) == 4, [o.name for o in new]
    assert all(watertight(o)[0] for o in new)
    xs = sorted(o.location.x for o in new)
    assert len(set(round(x, 4) for x in xs)) == 4, xs  # laid out in a row
    shared["interpolated"] = [o.name for o in new]
    # between two selected meshes
    a, b = bpy.data.objects[shared["shape"]], new[-1]
    select_only(a, b)
    st.interp_source, st.interp_steps = "SELECTED", 3
    before = set(bpy.data.objects)
    assert bpy.ops.atelier.shape_interpolate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    meshes_new = [o for o in bpy.data.objects if o not in before]
    assert len(meshes_new) == 3
    shared["interpolated_meshes"] = [o.name for o in meshes_new]
    return {"seeds": len(new), "meshes": len(meshes_new)}


@check("shape_variations_count")
def _():
    source = bpy.data.objects[shared["shape"]]
    select_only(source)
    s().shape_variations, s().shape_layout = 5, "GRID"
    before = set(bpy.data.objects)
    assert bpy.ops.atelier.shape_variations(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    new = [o for o in bpy.data.objects if o not in before]
    assert len(new) == 5, len(new)
    ys = {round(o.location.y, 4) for o in new}
    assert len(ys) == 2, ys  # 5 in a 3-column grid: two rows
    shared["variation"] = new[2].name
    return {"objects": len(new)}


@check("interpolation_slider_preview")
def _():
    select_only(bpy.data.objects[shared["shape"]])
    st = s()
    st.interp_source = "SEEDS"
    st.interp_t = 0.25  # the update callback sends a request
    name = addon().operators.PREVIEW_NAME
    pump_until(lambda: name in bpy.data.objects and not addon().worker.get().busy())
    first = vertices(bpy.data.objects[name]).copy()
    st.interp_t = 0.9
    pump_until(lambda: not addon().worker.get().busy() and addon().operators._preview["job"].applied)
    second = vertices(bpy.data.objects[name])
    previews = [o for o in bpy.data.objects if o.name.startswith(name)]
    assert len(previews) == 1, [o.name for o in previews]
    assert first.shape != second.shape or not np.allclose(first, second)
    return {"preview_vertices": [len(first), len(second)]}


@check("two_mesh_preview_slider_moved_five_times")
def _():
    """Between two selected meshes, every move of the slider shows a new shape, and the two
    stay selected (the first move used to select the preview instead)."""
    a, b = bpy.data.objects[shared["shape"]], bpy.data.objects[shared["interpolated"][-1]]
    select_only(a, b)
    st = s()
    st.interp_source = "SELECTED"
    ops = addon().operators
    name, shapes = ops.PREVIEW_NAME, []
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        before = ops._preview["job"]
        addon().jobs.state.error = ""
        st.interp_t = t
        assert not addon().jobs.state.error, addon().jobs.state.error
        pump_until(lambda: ops._preview["job"] is not before and ops._preview["job"].applied)
        shapes.append(vertices(bpy.data.objects[name]).round(5).tobytes())
        assert a.select_get() and b.select_get() and bpy.context.view_layer.objects.active == a
    assert len(set(shapes)) == 5, f"{len(set(shapes))} different shapes from 5 moves"
    st.interp_source = "SEEDS"
    return {"shapes": len(set(shapes))}


@check("variations_keep_size_and_rotation")
def _():
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 30.0, 0.0))
    cube = bpy.context.active_object
    cube.scale, cube.rotation_euler = (3.0, 3.0, 3.0), (0.0, 0.0, 0.5)
    bpy.context.view_layer.update()
    select_only(cube)
    s().shape_variations = 2
    before = set(bpy.data.objects)
    assert bpy.ops.atelier.shape_variations(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    new = [o for o in bpy.data.objects if o not in before]
    assert len(new) == 2, new
    sizes = [round(max(o.dimensions), 4) for o in new]
    assert all(abs(size - 3.0) < 1e-3 for size in sizes), sizes
    for o in new:
        assert np.allclose(tuple(o.rotation_euler), (0.0, 0.0, 0.5), atol=1e-5), tuple(o.rotation_euler)
    return {"sizes": sizes}


@check("objects_land_in_the_active_collection")
def _():
    view_layer = bpy.context.view_layer
    props = bpy.data.collections.new("Atelier props")
    bpy.context.scene.collection.children.link(props)
    view_layer.active_layer_collection = view_layer.layer_collection.children[props.name]
    try:
        st = s()
        st.shape_count = 1
        before = set(bpy.data.objects)
        assert bpy.ops.atelier.shape_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
        new = [o for o in bpy.data.objects if o not in before]
        assert len(new) == 1 and list(new[0].users_collection) == [props], [c.name for c in new[0].users_collection]
    finally:
        view_layer.active_layer_collection = view_layer.layer_collection
    return {"collection": props.name}


def _regenerate_shape(name: str) -> dict:
    """Regenerate replaces the object's mesh in place: same name, transform and materials, and
    exactly the vertices it had."""
    original = bpy.data.objects[name]
    select_only(original)
    material = bpy.data.materials.new(f"{name} paint")
    original.data.materials.append(material)
    original.location.z += 0.25
    bpy.context.view_layer.update()
    materials = list(original.data.materials)
    before, old_mesh, mesh_name = set(bpy.data.objects), original.data.as_pointer(), original.data.name
    old_vertices, matrix = vertices(original).copy(), [tuple(row) for row in original.matrix_world]
    assert bpy.ops.atelier.regenerate(blocking=True, what="SHAPE") == {"FINISHED"}, addon().jobs.state.error
    assert set(bpy.data.objects) == before, "Regenerate made a new object"
    obj = bpy.data.objects[name]
    assert obj.data.as_pointer() != old_mesh and obj.data.name == mesh_name, obj.data.name
    assert np.array_equal(vertices(obj), old_vertices), "vertices differ"
    assert [tuple(row) for row in obj.matrix_world] == matrix and list(obj.data.materials) == materials
    assert material in materials
    return {"object": name, "vertices": len(old_vertices)}


@check("regenerate_shape_from_provenance")
def _():
    out = {"sample": _regenerate_shape(shared["shape"]),
           "interpolate_3rd": _regenerate_shape(shared["interpolated"][2]),
           "variation": _regenerate_shape(shared["variation"])}
    return out


@check("regenerate_texture_from_provenance")
def _():
    original = bpy.data.images[shared["texture_image"]]
    plane = bpy.data.objects.new("Regen target", bpy.data.meshes.new("Regen target"))
    bpy.context.scene.collection.objects.link(plane)
    plane.data.materials.append(next(m for m in bpy.data.materials if m.node_tree and any(
        n.type == "TEX_IMAGE" and n.image == original for n in m.node_tree.nodes)))
    select_only(plane)
    assert bpy.ops.atelier.regenerate(blocking=True, what="TEXTURE") == {"FINISHED"}, addon().jobs.state.error
    material = plane.active_material
    image = next(n for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image
                 and n.image.get("atelier_provenance") and '"map": "image"' in n.image["atelier_provenance"]).image
    assert image != original
    assert np.array_equal(pixels(image), pixels(original)), "pixels differ"
    # history recall makes it once more
    history = s().history
    assert len(history) >= 8, len(history)
    return {"image": image.name, "history": len(history)}


@check("history_lists_everything_with_thumbnails")
def _():
    """More than 8 entries, newest first, each labelled with what, which model and seed, and
    textures shown by their image."""
    from types import SimpleNamespace

    history = s().history
    assert len(history) > 8, len(history)
    models = (CONFIG["texture_model"], CONFIG["shape_model"], CONFIG["material_model"])
    for item in history:
        assert item.label.endswith(models) and item.thumbnail, (item.label, item.thumbnail)
        if item.thumbnail_kind == "IMAGE":
            assert item.thumbnail in bpy.data.images and item.thumbnail.endswith("_color"), item.thumbnail
    textures = [item.label for item in history if item.op == "texture.generate"]
    assert f"Texture seed 3 · 64×32 · {CONFIG['texture_model']}" in textures, textures
    ul = addon().panels.ATELIER_UL_history
    flags, order = ul.filter_items(SimpleNamespace(bitflag_filter_item=1 << 30, filter_name=""), None,
                                   s(), "history")
    assert order[-1] == 0 and order[0] == len(history) - 1 and all(flags)
    assert hasattr(bpy.types, "ATELIER_UL_history")
    return {"entries": len(history), "newest": history[-1].label}


class FakeLayout:
    """Stands in for a panel's layout (background mode draws nothing): it checks that every
    property, operator and list the panel names exists."""

    def __init__(self, calls: list):
        self.calls = calls

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append(name)
            if name in ("prop", "prop_search"):
                assert hasattr(args[0], args[1]), args[1]
            if name == "operator":
                module, op = args[0].split(".")
                assert op in dir(getattr(bpy.ops, module)), args[0]
                return type("Props", (), {})()
            if name == "template_list":
                assert hasattr(args[2], args[3]) and hasattr(args[4], args[5]), args
            if name == "icon":
                return 0
            return self
        return call


@check("panel_draws_every_section")
def _():
    calls: list = []
    select_only(bpy.data.objects["Cube"])
    for section in addon().panels.ATELIER_PT_view3d.sections:
        section(FakeLayout(calls), bpy.context)
    ul = addon().panels.ATELIER_UL_history
    for i, item in enumerate(s().history):
        ul.draw_item(None, bpy.context, FakeLayout(calls), s(), item, 0, s(), "history_index", i)
    assert "template_list" in calls and calls.count("operator") > 10, calls
    return {"calls": len(calls)}


@check("train_shape_from_selection_sends_meshes")
def _():
    made = []
    for add, location in ((bpy.ops.mesh.primitive_cube_add, (10, 0, 0)),
                          (bpy.ops.mesh.primitive_uv_sphere_add, (12, 0, 0)),
                          (bpy.ops.mesh.primitive_cylinder_add, (14, 0, 0)),
                          (bpy.ops.mesh.primitive_cone_add, (16, 0, 0))):
        add(location=location)
        made.append(bpy.context.active_object)
    select_only(*made)
    st = s()
    st.train_name, st.train_steps = "from-blender", 2
    st.train_config = json.dumps(CONFIG["shape_config"])
    assert bpy.ops.atelier.train_shape(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    job = addon().jobs.state.last_job
    assert sorted(job.context["sent"]) == sorted(o.name for o in made)
    assert job.value["model"] == "from-blender" and job.value["step"] == 2, job.value
    with engine_client() as client:
        info = client.call("models.info", {"name": "from-blender"})["metadata"]
    data = info.get("data") or {}
    shapes = data.get("train_shapes", 0) + data.get("held_out_shapes", 0)
    assert shapes == len(made) and sorted(data["source"]["sent_meshes"]) == sorted(o.name for o in made), data
    assert "from-blender" in [m.name for m in bpy.context.window_manager.atelier.shape_models]
    return {"data": data}


@check("train_texture_sends_pixels_not_a_path")
def _():
    """The engine reads no paths a client names (it may run elsewhere): the panel sends the pixels."""
    image = bpy.data.images.new("Stripes exemplar", 64, 64)
    stripes = np.repeat(np.repeat((np.arange(64) // 4 % 2).astype(np.float32), 64)[:, None], 4, 1).ravel()
    image.pixels.foreach_set(stripes)
    st = s()
    st.train_image, st.train_image_path = image, ""
    st.train_name, st.train_steps = "tex-from-blender", 2
    shape_config, st.train_config = st.train_config, json.dumps(CONFIG["texture_config"])
    try:
        assert bpy.ops.atelier.train_texture(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    finally:
        st.train_config = shape_config
    with engine_client() as client:
        info = client.call("models.info", {"name": "tex-from-blender"})["metadata"]
    assert [i["path"] for i in info["data"]["images"]] == ["Stripes exemplar"], info["data"]
    assert info["step"] == 2
    # the panel says what training found in the stripes and that 2 steps is a short run
    said = addon().jobs.state.message
    assert info["data"]["notes"] and all(f"Note: {note}" in said for note in info["data"]["notes"]), said
    assert f"Warning: {info['warning']}" in said and "short run" in info["warning"], said
    return {"data": info["data"]}


@check("cancel_stops_running_job")
def _():
    select_only(bpy.data.objects[shared["shape"]])
    st = s()
    st.train_name, st.train_steps = "cancel-me", 100000
    counts = datablock_counts()
    assert bpy.ops.atelier.train_shape() == {"FINISHED"}
    job = addon().worker.get().active_jobs()[0]
    pump_until(lambda: "step" in job.message or job.progress > 0, timeout=90)
    started = time.perf_counter()
    assert bpy.ops.atelier.cancel() == {"FINISHED"}
    pump_until(lambda: job.finished, timeout=60)
    assert job.state == "cancelled", (job.state, job.error)
    assert datablock_counts() == counts
    with engine_client() as client:
        listed = [j for j in client.call("jobs.list")["jobs"] if j.get("id") == job.request.job_id]
    return {"seconds_to_stop": round(time.perf_counter() - started, 3), "engine_job": listed,
            "message_at_cancel": job.message}


@check("large_texture_cancels_within_a_second")
def _():
    """A 4096² texture from the shipped model reports real progress, and Cancel stops it within a
    second, leaving nothing behind (the engine makes large pictures in bands and checks between them)."""
    select_only(bpy.data.objects[shared["shape"]])
    st = s()
    st.texture_model, st.pbr, st.texture_seed = "texture-default", False, 21
    st.texture_width = st.texture_height = 4096
    counts = datablock_counts()
    try:
        assert bpy.ops.atelier.texture_generate() == {"FINISHED"}, addon().jobs.state.error
        job = addon().worker.get().active_jobs()[0]
        pump_until(lambda: job.progress > 0.05 or job.finished, timeout=120)
        assert not job.finished, "a 4096² texture finished before it could be cancelled"
        started = time.perf_counter()
        assert bpy.ops.atelier.cancel() == {"FINISHED"}
        pump_until(lambda: job.finished, timeout=30)
        seconds = time.perf_counter() - started
    finally:
        st.texture_model, st.texture_width, st.texture_height = CONFIG["texture_model"], 64, 32
    assert job.state == "cancelled", (job.state, job.error)
    assert seconds <= 1.0, f"cancel took {seconds:.2f} s"
    assert datablock_counts() == counts
    return {"seconds_to_stop": round(seconds, 3), "progress_at_cancel": round(job.progress, 3)}


@check("cancelled_training_model_never_chosen")
def _():
    """The cancelled run above saved its checkpoint as model "cancel-me" (first in alphabetical
    order): it is listed as partial, left out of the pickers, and an empty Model field uses the
    user's last choice or the shipped model instead."""
    with engine_client() as client:
        listed = {m["name"]: m for m in client.call("models.list")["models"]}
    assert listed["cancel-me"].get("partial") is True, listed["cancel-me"]
    assert listed[CONFIG["shape_model"]].get("partial") is False, listed[CONFIG["shape_model"]]
    assert bpy.ops.atelier.connect(blocking=True) == {"FINISHED"}
    addon().jobs.pump()
    runtime = bpy.context.window_manager.atelier
    assert "cancel-me" not in [m.name for m in runtime.shape_models]
    assert "cancel-me" in [m.name for m in runtime.models if m.partial]
    models = addon().worker.get().models
    choose = addon().worker.default_model
    assert choose(models, "shape", "") == "shape-default", choose(models, "shape", "")
    assert choose(models, "shape", "cancel-me") == "shape-default"
    assert choose([m for m in models if m["name"] != "shape-default"], "shape", "") != "cancel-me"
    st = s()
    assert st.last_shape_model == CONFIG["shape_model"], st.last_shape_model  # set when the field was
    st.shape_model, st.shape_count = "", 1
    select_only(bpy.data.objects[shared["shape"]])
    assert bpy.ops.atelier.shape_generate(blocking=True) == {"FINISHED"}, addon().jobs.state.error
    job = addon().jobs.state.last_job
    assert job.params["model"] == CONFIG["shape_model"], job.params["model"]
    st.shape_model = CONFIG["shape_model"]
    return {"chosen": job.params["model"]}


@check("engine_down_clear_message_nothing_half_made")
def _():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    point_at_engine(closed_port)
    cube = bpy.data.objects["Cube"]
    select_only(cube)
    material = cube.active_material
    counts = datablock_counts()
    try:
        try:  # a script calling an operator that reports an error gets it as RuntimeError
            bpy.ops.atelier.texture_generate(blocking=True)
            raise AssertionError("texture_generate did not fail")
        except RuntimeError as e:
            raised = str(e)
        lines = addon().panels.status_lines()
        errors = [text for icon, text in lines if icon == "ERROR"]
        assert errors and "Cannot reach the Atelier engine" in errors[0] and str(closed_port) in errors[0], lines
        assert "Cannot reach the Atelier engine" in raised
        # Now known to be down: the buttons are greyed out, with the reason as their tooltip.
        for operator in (bpy.ops.atelier.texture_generate, bpy.ops.atelier.shape_generate,
                         bpy.ops.atelier.train_shape):
            assert not operator.poll(), operator
        try:
            bpy.ops.atelier.shape_generate(blocking=True)
            raise AssertionError("shape_generate ran while disconnected")
        except RuntimeError as e:
            assert "Not connected to the Atelier engine" in str(e), str(e)
        assert len([text for icon, text in addon().panels.status_lines() if icon == "ERROR"]) == 1
        assert datablock_counts() == counts and cube.active_material == material
    finally:
        point_at_engine()
    assert bpy.ops.atelier.connect(blocking=True) == {"FINISHED"}
    assert not [t for i, t in addon().panels.status_lines() if i == "ERROR"]
    return {"message": errors[0]}


@check("render_generated_mesh_wearing_generated_texture")
def _():
    scene = bpy.context.scene
    for o in scene.objects:
        o.hide_render = True
    bpy.context.scene.cursor.location = (0.0, 0.0, -40.0)
    s().shape_seed, s().shape_count = 1, 1
    assert bpy.ops.atelier.shape_generate(blocking=True) == {"FINISHED"}
    obj = bpy.context.active_object
    st = s()
    st.texture_width = st.texture_height = 128
    st.pbr, st.texture_seed = True, 21
    assert bpy.ops.atelier.texture_generate(blocking=True) == {"FINISHED"}
    assert obj.active_material is not None and obj.active_material.get("atelier_op") == "texture.generate"
    obj.scale = (3, 3, 3)
    bpy.context.view_layer.update()
    centre = sum((obj.matrix_world @ v.co for v in obj.data.vertices), obj.location * 0) / len(obj.data.vertices)
    camera = bpy.data.objects.new("Render camera", bpy.data.cameras.new("Render camera"))
    sun = bpy.data.objects.new("Render sun", bpy.data.lights.new("Render sun", "SUN"))
    sun.data.energy = 4.0
    for helper in (camera, sun):
        scene.collection.objects.link(helper)
    size = max(obj.dimensions) or 1.0  # frame the object whatever size the tiny model makes it
    camera.location = centre + type(centre)((1.0, -1.4, 1.0)) * (1.5 * size)
    camera.rotation_euler = (centre - camera.location).to_track_quat("-Z", "Y").to_euler()
    sun.rotation_euler = camera.rotation_euler
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 8
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 128
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    out = Path(CONFIG["artifacts"]) / "blender_render.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(out)
    started = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    seconds = time.perf_counter() - started
    assert out.exists()
    rendered = bpy.data.images.load(str(out))
    px = pixels(rendered)[..., :3].astype(np.float32)
    background = np.median(px.reshape(-1, 3), 0)
    differs = (np.abs(px - background).max(-1) > 12).mean()
    spread = float(px.std())
    assert spread > 5 and differs > 0.03, (spread, differs)
    return {"png": str(out), "render_seconds": round(seconds, 3), "std": round(spread, 2),
            "object_share": round(float(differs), 3)}


@check("start_restart_stop_engine_from_panel")
def _():
    import os
    import socket

    state = Path(CONFIG["own_engine_dir"])
    os.environ["ATELIER_STATE_DIR"] = str(state / "state")  # the engine inherits it, the add-on reads it
    os.environ["ATELIER_MODELS_DIR"] = str(state / "models")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    p = prefs()
    p.use_engine_json, p.port, p.token_file = True, port, ""
    p.engine_python, p.device = CONFIG["engine_python"], "cpu"
    w = addon().worker.get()
    started = time.perf_counter()
    assert bpy.ops.atelier.engine_start(blocking=True) == {"FINISHED"}, w.error
    seconds_to_start = time.perf_counter() - started
    assert w.info and w.info["device"] == "cpu", w.info
    assert w.owns_engine()  # so Stop stops it without asking
    first_pid = json.loads((state / "state" / "engine.json").read_text())["pid"]
    assert bpy.ops.atelier.engine_restart(blocking=True) == {"FINISHED"}, w.error
    second_pid = json.loads((state / "state" / "engine.json").read_text())["pid"]
    assert second_pid != first_pid and w.info
    assert bpy.ops.atelier.engine_stop(blocking=True) == {"FINISHED"}
    assert w.info is None and "stopped" in addon().panels.status_lines()[-1][1], addon().panels.status_lines()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the engine still listens"
    return {"seconds_to_start": round(seconds_to_start, 2), "pids": [first_pid, second_pid]}


@check("stop_engine_started_elsewhere")
def _():
    import os
    import subprocess

    # An engine the add-on did not start: it is found and stopped through the engine.json it wrote.
    state = Path(os.environ["ATELIER_STATE_DIR"])
    process = subprocess.Popen([CONFIG["engine_python"], "-m", "engine", "serve", "--port", "0", "--device", "cpu"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (state / "engine.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        recorded = addon()._vendor.paths.running_engine()
        assert recorded is not None and recorded.pid == process.pid, recorded
        p = prefs()
        p.use_engine_json, p.port = True, 1  # nothing listens on port 1: only engine.json can lead there
        assert bpy.ops.atelier.connect(blocking=True) == {"FINISHED"}, addon().worker.get().error
        assert addon().worker.get().info, addon().worker.get().error
        assert not addon().worker.get().owns_engine()  # Stop from the panel asks before stopping it
        assert bpy.ops.atelier.engine_stop(blocking=True) == {"FINISHED"}  # a script's stop does not ask
        assert process.wait(timeout=30) == 0
        assert not (state / "engine.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return {"port": recorded.port}


@check("unregister_leaves_nothing")
def _():
    addon_utils.disable(MODULE)
    assert not hasattr(bpy.types.Scene, "atelier")
    assert not [n for n in dir(bpy.types) if n.startswith(("ATELIER_", "Atelier"))]
    time.sleep(0.1)
    threads = [t.name for t in threading.enumerate() if t.name.startswith("atelier")]
    assert not [t for t in threads if t == "atelier-worker"], threads
    return {"threads": threads}


Path(CONFIG["results"]).write_text(json.dumps(results, indent=1, default=str))
if addon_utils.check(MODULE)[1]:  # a failed check above may have left it enabled
    addon_utils.disable(MODULE)
print("[scenario] done", flush=True)
