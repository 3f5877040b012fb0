"""Engine results -> Blender datablocks. Plain functions of a finished `Job`, run on the main
thread (by the timer in the UI; called directly by tests and blocking operators).

Either everything a result needs is made, or nothing is left behind: on any error the
datablocks made so far are removed again.

The heavy parts happen on the worker thread first (`prepare_texture`: PNG encoding and
writing), so the main thread only loads and packs a file and wires a few nodes.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import bpy
import numpy as np

from . import png, provenance
from .worker import Job

TEXTURE_MAPS = ("image", "normal", "roughness")


# ---- textures ---------------------------------------------------------------------------------
def prepare_texture(job: Job) -> dict[str, str]:
    """Worker thread: write each returned map as a PNG file; return {map: path}."""
    folder = tempfile.mkdtemp(prefix="atelier-")
    paths = {}
    for key in TEXTURE_MAPS:
        array = job.value.get(key)
        if array is None:
            continue
        path = os.path.join(folder, f"{key}.png")
        with open(path, "wb") as f:
            f.write(png.encode(np.asarray(array)))
        paths[key] = path
    if "image" not in paths:
        raise ValueError("the engine returned no image")
    return paths


def texture_name(prov: dict, image: np.ndarray) -> str:
    params = prov.get("params") or {}
    seed = params.get("seed", params.get("seed_a", 0))
    kind = "morph" if prov.get("op") == "texture.morph" else "s"
    return f"Atelier {prov.get('model')} {kind}{seed} {image.shape[1]}x{image.shape[0]}"


def apply_texture(job: Job) -> list[str]:
    """Images (packed) and a material from a texture result, put on the target object.

    job.context: object (name or ""), target ("NEW" material or into the "ACTIVE" one's Base
    Color), assign (False: add as an extra material slot, e.g. variations).
    """
    value, paths, ctx = job.value, job.prepared, job.context
    prov = dict(value["provenance"])
    inputs = ctx.get("inputs")
    name = texture_name(prov, value["image"])
    made: list[Any] = []
    try:
        images = {}
        for key, path in paths.items():
            image = bpy.data.images.load(path, check_existing=False)
            made.append(image)
            image.name = name if key == "image" else f"{name} {key}"
            image.pack()
            if key != "image":
                image.colorspace_settings.name = "Non-Color"
            provenance.stamp(image, prov, map=key, inputs=inputs)
            images[key] = image
        obj = bpy.data.objects.get(ctx.get("object") or "")
        use_uv = bool(obj is not None and obj.type == "MESH" and obj.data.uv_layers)
        material = None
        if ctx.get("target") == "ACTIVE" and obj is not None and obj.active_material is not None:
            material = obj.active_material
            if not _wire_into(material, images, use_uv):
                material = None
        if material is None:
            material = bpy.data.materials.new(name)
            made.append(material)
            _wire_into(material, images, use_uv, fresh=True)
        provenance.stamp(material, prov, inputs=inputs)
        if obj is not None and hasattr(obj.data, "materials"):
            if ctx.get("assign", True) and len(obj.material_slots):
                obj.active_material = material
            else:
                obj.data.materials.append(material)
    except Exception:
        _remove(made)
        raise
    finally:
        for path in paths.values():
            _unlink(path)
    return [material.name] + [image.name for image in images.values()]


def _principled(tree) -> Any:
    return next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)


def _wire_into(material, images: dict, use_uv: bool, fresh: bool = False) -> bool:
    """Image nodes into the material's Principled BSDF: Base Color, Roughness and, through a
    Normal Map node, Normal. False when an existing material has no Principled BSDF."""
    if material.node_tree is None:
        material.use_nodes = True
    tree = material.node_tree
    bsdf = _principled(tree)
    if bsdf is None:
        if not fresh:
            return False
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        output = next((n for n in tree.nodes if n.type == "OUTPUT_MATERIAL"), None) \
            or tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    x, y = bsdf.location.x - 700, bsdf.location.y
    coords = None
    if not use_uv:  # generated meshes have no UVs: box-project generated coordinates
        coords = tree.nodes.new("ShaderNodeTexCoord")
        coords.location = (x - 300, y)
    for row, key in enumerate(("image", "roughness", "normal")):
        if key not in images:
            continue
        node = tree.nodes.new("ShaderNodeTexImage")
        node.image = images[key]
        node.label = f"Atelier {key}"
        node.location = (x, y - 300 * row)
        if coords is not None:
            node.projection = "BOX"
            node.projection_blend = 0.2
            tree.links.new(coords.outputs["Generated"], node.inputs["Vector"])
        if key == "image":
            tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
        elif key == "roughness":
            tree.links.new(node.outputs["Color"], bsdf.inputs["Roughness"])
        else:
            normal_map = tree.nodes.new("ShaderNodeNormalMap")
            normal_map.location = (x + 350, y - 300 * row)
            tree.links.new(node.outputs["Color"], normal_map.inputs["Color"])
            tree.links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    return True


# ---- meshes -----------------------------------------------------------------------------------
def mesh_from_arrays(name: str, vertices: np.ndarray, faces: np.ndarray):
    """A mesh datablock from float N×3 vertices and int M×3 triangles, smooth shaded."""
    vertices = np.ascontiguousarray(vertices, np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, np.int32).reshape(-1, 3)
    mesh = bpy.data.meshes.new(name)
    try:
        mesh.vertices.add(len(vertices))
        mesh.vertices.foreach_set("co", vertices.ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.update(calc_edges=True)
        mesh.shade_smooth()
    except Exception:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


def mesh_arrays(obj) -> tuple[np.ndarray, np.ndarray]:
    """An object's evaluated mesh (modifiers applied) as world-space vertices and triangles."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", vertices)
        faces = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", faces)
    finally:
        evaluated.to_mesh_clear()
    vertices = vertices.reshape(-1, 3)
    matrix = np.array(obj.matrix_world, np.float32)
    vertices = vertices @ matrix[:3, :3].T + matrix[:3, 3]
    return np.ascontiguousarray(vertices, np.float32), faces.reshape(-1, 3)


def _offsets(meshes: list[dict], layout: str) -> list[tuple[float, float, float]]:
    extent = max(float(np.ptp(np.asarray(m["vertices"]), axis=0).max()) for m in meshes) if meshes else 1.0
    step = max(extent, 1e-3) * 1.3
    if layout == "GRID":
        columns = int(np.ceil(np.sqrt(len(meshes))))
        return [((i % columns) * step, -(i // columns) * step, 0.0) for i in range(len(meshes))]
    return [(i * step, 0.0, 0.0) for i in range(len(meshes))]


def apply_meshes(job: Job) -> list[str]:
    """Mesh objects from a shape result, at the 3D cursor (job.context['location']), laid out
    in a row or grid; or, for a preview, replacing the mesh of job.context['replace']."""
    value, ctx = job.value, job.context
    prov = dict(value["provenance"])
    meshes = list(value["meshes"])
    indices = list(range(len(meshes)))
    if ctx.get("only_index") is not None:
        indices = [ctx["only_index"]]
    if not meshes or indices[-1] >= len(meshes):
        raise ValueError(f"the engine returned {len(meshes)} meshes; nothing to place")
    base = ctx.get("name") or f"Atelier {prov.get('op', 'shape').split('.')[-1]}"
    inputs = ctx.get("inputs")
    replace = bpy.data.objects.get(ctx.get("replace") or "")
    if replace is not None:
        mesh = mesh_from_arrays(replace.name, meshes[indices[0]]["vertices"], meshes[indices[0]]["faces"])
        provenance.stamp(mesh, prov, index=indices[0], inputs=inputs)
        old, replace.data = replace.data, mesh
        provenance.stamp(replace, prov, index=indices[0], inputs=inputs)
        if old.users == 0:
            bpy.data.meshes.remove(old)
        return [replace.name]
    scene = bpy.context.scene
    collection = ctx.get("collection") and bpy.data.collections.get(ctx["collection"]) or scene.collection
    origin = np.asarray(ctx.get("location", (0.0, 0.0, 0.0)), np.float64)
    offsets = _offsets([meshes[i] for i in indices], ctx.get("layout", "ROW"))
    made: list[Any] = []
    try:
        objects = []
        for n, i in enumerate(indices):
            name = base if len(indices) == 1 else f"{base} {i + 1}"
            mesh = mesh_from_arrays(name, meshes[i]["vertices"], meshes[i]["faces"])
            made.append(mesh)
            provenance.stamp(mesh, prov, index=i, inputs=inputs)
            obj = bpy.data.objects.new(name, mesh)
            made.append(obj)
            provenance.stamp(obj, prov, index=i, inputs=inputs)
            obj.location = tuple(origin + np.asarray(offsets[n]))
            collection.objects.link(obj)
            objects.append(obj)
    except Exception:
        _remove(made)
        raise
    view_layer = bpy.context.view_layer
    for other in view_layer.objects:
        if other.select_get():
            other.select_set(False)
    for obj in objects:
        obj.select_set(True)
    view_layer.objects.active = objects[0]
    return [obj.name for obj in objects]


# ---- shared -----------------------------------------------------------------------------------
def _remove(datablocks: list[Any]) -> None:
    """Remove what was made, newest first (objects before their meshes)."""
    for block in reversed(datablocks):
        try:
            collection = {bpy.types.Object: bpy.data.objects, bpy.types.Mesh: bpy.data.meshes,
                          bpy.types.Image: bpy.data.images, bpy.types.Material: bpy.data.materials}
            for kind, blocks in collection.items():
                if isinstance(block, kind):
                    blocks.remove(block)
                    break
        except ReferenceError:
            pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
