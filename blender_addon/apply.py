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

TEXTURE_MAPS = ("image", "normal", "roughness", "height", "metallic", "ao")
MAP_NAMES = {"image": "color"}  # how a map is called in file and image names


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


def image_stems(prov: dict, keys) -> dict[str, str]:
    """{map: file stem} such as atelier_gravel_s7_normal: the model, seed and map, unique among
    this file's images (names and file names), so that unpacking writes each to its own file."""
    params = prov.get("params") or {}
    model = "".join(c if c.isalnum() or c in "-." else "_" for c in str(prov.get("model") or "texture"))
    if prov.get("op") == "texture.morph":
        seeds = f"s{params.get('seed_a', 0)}-{params.get('seed_b', 0)}"
    else:
        seeds = f"s{params.get('seed', 0)}"
    taken = set()
    for image in bpy.data.images:
        taken.add(image.name.lower())
        for path in [image.filepath] + [p.filepath for p in getattr(image, "packed_files", [])]:
            if path:
                taken.add(os.path.splitext(os.path.basename(bpy.path.abspath(path)))[0].lower())
    for n in range(1, 100000):
        base = f"atelier_{model}_{seeds}" + (f"_{n}" if n > 1 else "")
        stems = {key: f"{base}_{MAP_NAMES.get(key, key)}" for key in keys}
        if not any(stem.lower() in taken for stem in stems.values()):
            return stems
    raise ValueError("no free image name")


def apply_texture(job: Job) -> list[str]:
    """Images (packed) and a material from a texture result, put on the target mesh.

    job.context: object (a mesh's name), target ("NEW" material or into the "ACTIVE" one),
    assign (False: add as an extra material slot, e.g. variations), scale (metres the
    texture spans; measured on the target), also (more meshes to wear the same material).
    Warnings for the artist go to job.context["warnings"].
    """
    value, paths, ctx = job.value, job.prepared, job.context
    prov = dict(value["provenance"])
    obj = bpy.data.objects.get(ctx.get("object") or "")
    if obj is None or obj.type != "MESH":  # deleted while the engine worked: make nothing
        for path in paths.values():
            _unlink(path)
        raise ValueError(f"the mesh {ctx.get('object')!r} it was meant for is no longer in this file")
    inputs = ctx.get("inputs")
    name = texture_name(prov, value["image"])
    made: list[Any] = []
    paths = dict(paths)
    warnings = ctx.setdefault("warnings", [])
    try:
        images = {}
        for key, stem in image_stems(prov, paths).items():
            # The file's name is what Unpack Resources writes: make it say what the image is.
            named = os.path.join(os.path.dirname(paths[key]), f"{stem}.png")
            os.replace(paths[key], named)
            paths[key] = named
            image = bpy.data.images.load(named, check_existing=False)
            made.append(image)
            image.name = stem
            image.pack()
            if key != "image":
                image.colorspace_settings.name = "Non-Color"
            provenance.stamp(image, prov, map=key, inputs=inputs)
            images[key] = image
        use_uv, unit = bool(obj.data.uv_layers), metres_per_unit(obj)
        scale = float(ctx.get("scale") or 1.0)
        material = None
        active = obj.active_material
        if ctx.get("target") == "ACTIVE" and active is not None:
            if _wire_into(active, images, use_uv, unit, scale):
                material = active
                if active.get("atelier_op"):  # a name Atelier gave it: keep it true
                    active.name = name
            else:
                warnings.append(f"{active.name!r} has no Principled BSDF to plug the texture into: it went into "
                                "a new material in a new slot instead")
        if material is None:
            material = bpy.data.materials.new(name)
            made.append(material)
            _wire_into(material, images, use_uv, unit, scale, fresh=True)
            # Into the active slot when asked (and there is one); never over a material we could not use.
            if ctx.get("assign", True) and len(obj.material_slots) and not warnings:
                obj.active_material = material
            else:
                obj.data.materials.append(material)
                obj.active_material_index = len(obj.material_slots) - 1
        provenance.stamp(material, prov, inputs=inputs)
        for other in filter(None, map(bpy.data.objects.get, ctx.get("also") or [])):
            if other.type != "MESH" or material.name in other.data.materials:
                continue
            if ctx.get("assign", True) and len(other.material_slots):
                other.active_material = material
            else:
                other.data.materials.append(material)
                other.active_material_index = len(other.material_slots) - 1
    except Exception:
        _remove(made)
        raise
    finally:
        for path in paths.values():
            _unlink(path)
    return [material.name] + [image.name for image in images.values()]


FRAME = "Atelier texture"  # the frame holding every node Atelier adds to a material
MAPPING = "Atelier mapping"
DISPLACEMENT = "Atelier displacement"
HEIGHT_SHARE = 0.05  # displacement depth as a share of the texture's size


def _principled(tree) -> Any:
    return next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)


def _output(tree) -> Any:
    outputs = [n for n in tree.nodes if n.type == "OUTPUT_MATERIAL"]
    return next((n for n in outputs if n.is_active_output), outputs[0] if outputs else None)


def metres_per_unit(obj) -> float:
    """How many metres one unit of the texture coordinates spans on this object: for UVs the
    ratio of the surface's real area to its UV area; for object coordinates its scale."""
    scale = np.abs(np.array(obj.matrix_world.to_scale(), np.float64))
    mesh = obj.data
    if not mesh.uv_layers or not len(mesh.polygons):
        return float(np.cbrt(np.prod(scale))) or 1.0
    mesh.calc_loop_triangles()
    tris = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("loops", tris)
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    (mesh.uv_layers.active or mesh.uv_layers[0]).data.foreach_get("uv", uv)
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    loop_vertex = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loop_vertex)
    tris = tris.reshape(-1, 3)
    uv = uv.reshape(-1, 2)[tris].astype(np.float64)
    xyz = (co.reshape(-1, 3)[loop_vertex[tris]] * scale).astype(np.float64)
    uv_area = 0.5 * np.abs(np.cross(uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0])).sum()
    area = 0.5 * np.linalg.norm(np.cross(xyz[:, 1] - xyz[:, 0], xyz[:, 2] - xyz[:, 0]), axis=1).sum()
    return float(np.sqrt(area / uv_area)) if uv_area > 1e-12 and area > 0 else 1.0


def set_texture_scale(material, scale: float) -> bool:
    """The texture spans `scale` metres: the Mapping node and the displacement depth follow.
    False when the material has no nodes of Atelier's."""
    tree = material.node_tree
    mapping = tree.nodes.get(MAPPING) if tree else None
    if mapping is None:
        return False
    unit = float(material.get("atelier_metres_per_unit", 1.0))
    mapping.inputs["Scale"].default_value = (unit / scale,) * 3
    displacement = tree.nodes.get(DISPLACEMENT)
    if displacement is not None:
        displacement.inputs["Scale"].default_value = HEIGHT_SHARE * scale
    material["atelier_texture_scale"] = scale
    return True


def _wire_into(material, images: dict, use_uv: bool, unit: float, scale: float, fresh: bool = False) -> bool:
    """Atelier's nodes, in a frame of their own, into the material: colour to Base Color (times
    the ambient occlusion, where the model makes it: Principled BSDF has no AO input), roughness
    to Roughness, metallic to Metallic, normal through a Normal Map node to Normal, height
    through a Displacement node to the output; all through one Mapping node that sets the texture's
    real size. What an earlier texture put there is replaced, nothing else is touched.
    False (and nothing changed) when an existing material has no Principled BSDF."""
    if material.node_tree is None:
        material.use_nodes = True
    tree = material.node_tree
    bsdf = _principled(tree)
    if bsdf is None and not fresh:
        return False
    if fresh:
        tree.nodes.clear()
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
    output = _output(tree)
    if output is None:
        output = tree.nodes.new("ShaderNodeOutputMaterial")
        output.location = (bsdf.location.x + 400, bsdf.location.y)
    if fresh:
        tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    old = tree.nodes.get(FRAME)
    if old is not None:
        for node in [n for n in tree.nodes if n.parent == old]:
            tree.nodes.remove(node)
        tree.nodes.remove(old)
    frame = tree.nodes.new("NodeFrame")
    frame.name = frame.label = FRAME
    x, y = bsdf.location.x - 700, bsdf.location.y

    def add(kind: str, name: str, dx: float, row: int) -> Any:
        node = tree.nodes.new(kind)
        node.name = node.label = name
        node.parent = frame
        node.location = (x + dx, y - 300 * row)
        return node

    coords = add("ShaderNodeTexCoord", "Atelier coordinates", -600, 0)
    mapping = add("ShaderNodeMapping", MAPPING, -400, 0)
    tree.links.new(coords.outputs["UV" if use_uv else "Object"], mapping.inputs["Vector"])
    for row, key in enumerate(("image", "roughness", "normal", "height", "metallic", "ao")):
        if key not in images:
            continue
        node = add("ShaderNodeTexImage", f"Atelier {MAP_NAMES.get(key, key)}", 0, row)
        node.image = images[key]
        if not use_uv:  # no UVs: box-projected object coordinates
            node.projection = "BOX"
            node.projection_blend = 0.2
        tree.links.new(mapping.outputs["Vector"], node.inputs["Vector"])
        if key == "image":
            tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
        elif key == "roughness":
            tree.links.new(node.outputs["Color"], bsdf.inputs["Roughness"])
        elif key == "metallic":
            tree.links.new(node.outputs["Color"], bsdf.inputs["Metallic"])
        elif key == "ao":
            base = tree.nodes.get("Atelier color")
            if base is not None:  # colour x occlusion, into Base Color
                multiply = add("ShaderNodeMix", "Atelier occlusion", 350, row)
                multiply.data_type, multiply.blend_type = "RGBA", "MULTIPLY"
                multiply.inputs["Factor"].default_value = 1.0
                # The Mix node has A, B and Result sockets for each data type: the colour ones by identifier.
                colour = {socket.identifier: socket for socket in (*multiply.inputs, *multiply.outputs)}
                tree.links.new(base.outputs["Color"], colour["A_Color"])
                tree.links.new(node.outputs["Color"], colour["B_Color"])
                tree.links.new(colour["Result_Color"], bsdf.inputs["Base Color"])
        elif key == "normal":
            normal_map = add("ShaderNodeNormalMap", "Atelier normal map", 350, row)
            tree.links.new(node.outputs["Color"], normal_map.inputs["Color"])
            tree.links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
        elif key == "height":
            displacement = add("ShaderNodeDisplacement", DISPLACEMENT, 350, row)
            tree.links.new(node.outputs["Color"], displacement.inputs["Height"])
            tree.links.new(displacement.outputs["Displacement"], output.inputs["Displacement"])
    material["atelier_metres_per_unit"] = abs(unit)
    set_texture_scale(material, scale)
    return True


# ---- meshes -----------------------------------------------------------------------------------
def mesh_from_arrays(name: str, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None = None):
    """A mesh datablock from float N×3 vertices and int M×3 triangles, smooth shaded; with the
    engine's per-corner UVs (M×3×2) as its UV map (a triangle's loops are its three corners in order)."""
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
        if uvs is not None:
            mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", np.ascontiguousarray(uvs, np.float32).ravel())
        mesh.update(calc_edges=True)
        mesh.shade_smooth()
    except Exception:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


def mesh_arrays(obj, space: str = "WORLD") -> tuple[np.ndarray, np.ndarray]:
    """An object's evaluated mesh (modifiers applied) as vertices and triangles: in world space,
    or ("SHAPE") in the object's own axes at its real size (scaled, not rotated or moved), the
    frame its variations are made in and put back with its rotation."""
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
    if space == "SHAPE":
        vertices = vertices * np.array(obj.matrix_world.to_scale(), np.float32)
    else:
        matrix = np.array(obj.matrix_world, np.float32)
        vertices = vertices @ matrix[:3, :3].T + matrix[:3, 3]
    return np.ascontiguousarray(vertices, np.float32), faces.reshape(-1, 3)


def shape_frame(*objects) -> dict:
    """What a result made from these meshes keeps of them: their size (the largest side of each,
    in metres) and the first one's rotation (Euler XYZ)."""
    sizes = [float(max(o.dimensions)) for o in objects]
    rotation = tuple(objects[0].matrix_world.to_quaternion().to_euler("XYZ")) if objects else (0.0, 0.0, 0.0)
    return {"sizes": sizes, "rotation": rotation}


def _fit(vertices: np.ndarray, size: float) -> np.ndarray:
    """Centre a result on its bounding box and scale it so its largest side is `size`."""
    vertices = np.asarray(vertices, np.float64).reshape(-1, 3)
    low, high = vertices.min(0), vertices.max(0)
    extent = float((high - low).max()) or 1.0
    return ((vertices - (low + high) / 2) * (size / extent)).astype(np.float32)


def _fitted(meshes: list[dict], indices: list[int], frame: dict | None, params: dict) -> list[dict]:
    """The results at the size of the meshes they came from (for two meshes, in between by t)."""
    if not frame or not frame.get("sizes"):
        return meshes
    sizes, out = frame["sizes"], list(meshes)
    steps = max(2, int(params.get("steps") or 2))
    for i in indices:
        if len(sizes) == 1:
            size = sizes[0]
        else:
            t = params["t"] if params.get("t") is not None else i / (steps - 1)
            size = sizes[0] + (sizes[-1] - sizes[0]) * float(t)
        out[i] = {**meshes[i], "vertices": _fit(meshes[i]["vertices"], size)}
    return out


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
    if any(not len(meshes[i]["faces"]) for i in indices):
        raise ValueError("the model made an empty shape (nothing reached its surface level): try another seed, "
                         "or train the model longer")
    base = ctx.get("name") or f"Atelier {prov.get('op', 'shape').split('.')[-1]}"
    inputs = ctx.get("inputs")
    frame = ctx.get("frame")
    meshes = _fitted(meshes, indices, frame, prov.get("params") or {})
    replace = bpy.data.objects.get(ctx.get("replace") or "")
    if replace is not None:  # a preview, or Regenerate in place: same object, new mesh
        chosen = meshes[indices[0]]
        mesh = mesh_from_arrays(replace.data.name, chosen["vertices"], chosen["faces"], chosen.get("uvs"))
        for material in replace.data.materials:
            mesh.materials.append(material)
        provenance.stamp(mesh, prov, index=indices[0], inputs=inputs)
        old, replace.data = replace.data, mesh
        provenance.stamp(replace, prov, index=indices[0], inputs=inputs)
        if frame and not ctx.get("keep_transform"):
            replace.rotation_euler = frame["rotation"]
        if old.users == 0:
            name = old.name
            bpy.data.meshes.remove(old)
            mesh.name = name
        return [replace.name]
    scene = bpy.context.scene
    # The collection that was active when asked (the Scene Collection when it is gone or was it).
    collection = ctx.get("collection") and bpy.data.collections.get(ctx["collection"]) or scene.collection
    origin = np.asarray(ctx.get("location", (0.0, 0.0, 0.0)), np.float64)
    offsets = _offsets([meshes[i] for i in indices], ctx.get("layout", "ROW"))
    made: list[Any] = []
    try:
        objects = []
        for n, i in enumerate(indices):
            name = base if len(indices) == 1 else f"{base} {i + 1}"
            mesh = mesh_from_arrays(name, meshes[i]["vertices"], meshes[i]["faces"], meshes[i].get("uvs"))
            made.append(mesh)
            provenance.stamp(mesh, prov, index=i, inputs=inputs)
            obj = bpy.data.objects.new(name, mesh)
            made.append(obj)
            provenance.stamp(obj, prov, index=i, inputs=inputs)
            obj.location = tuple(origin + np.asarray(offsets[n]))
            if frame:
                obj.rotation_euler = frame["rotation"]
            collection.objects.link(obj)
            objects.append(obj)
    except Exception:
        _remove(made)
        raise
    if ctx.get("keep_selection"):
        return [obj.name for obj in objects]
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
