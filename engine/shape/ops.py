"""The shape kind as the engine serves it: training-data options, ops and CLI output.

Kept light (no trimesh, no scikit-image at import) so the engine starts fast; the work
happens in engine.shape.objective and engine.shape.generation, imported on first use.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from engine.ops import MODEL, Context, JobFailed, Op, Param, provenance
from engine.protocol import BAD_PARAMS, TOO_LARGE

if TYPE_CHECKING:
    from engine.shape.model import ShapeVAEConfig


# The limits of engine.shape.meshes, repeated here so that this module loads without trimesh.
MAX_VERTICES = 1_000_000
MAX_FACES = 1_000_000

DATA_PARAMS = {
    "procedural": Param("int", min=8, max=100_000, doc="train on this many seeded procedural shapes"),
    "meshes": Param("str", path=True, doc="folder of meshes (OBJ, STL, PLY, GLB/GLTF, OFF) to train on"),
    "mesh_arrays": Param("list", doc="meshes sent by a client: [{name, vertices float N×3, faces int M×3}] (Z up)"),
    "up": Param("str", "auto", choices=("auto", "z", "y"), doc="up axis of the mesh files: auto (each file's "
                "format: y for glTF/GLB and OBJ, as Atelier writes them; z for STL, PLY, OFF), or z or y for all; "
                "meshes sent as arrays are always Z up"),
    "data_seed": Param("int", 0, doc="seed of the procedural shapes and the held-out split"),
    "rotate": Param("str", "quarter", choices=("none", "quarter", "free"),
                    doc="augment by turns about the up axis: none, quarter turns, or any angle"),
    "mirror": Param("bool", True, doc="augment by mirroring left-right"),
    "scale": Param("float", 0.05, min=0.0, max=0.3, doc="augment by anisotropic scaling of up to ± this"),
}

# What an artist gets by default: a 128³ surface simplified within 2/1000 of the shape's size (a quarter
# voxel) and unwrapped. A shipped-model sample: ~50-115k marching-cubes triangles -> 4-6k, decoded, meshed and
# simplified in 0.2 s and unwrapped in 0.02 s (our plane charts, engine/shape/uv_planes.py) on one core;
# xatlas alone on 65,900 triangles took 324 s.
MESH_PARAMS = {
    "resolution": Param("int", 128, min=32, max=256, doc="marching-cubes resolution of the surface: 64 for "
                        "previews, 128 for results, up to 256"),
    "smooth": Param("int", 0, min=0, max=100, doc="Taubin smoothing iterations"),
    "decimate": Param("float", 0.002, min=0.0, max=0.1, doc="simplify within this distance (a share of the shape's "
                      "size); 0 keeps every marching-cubes triangle"),
    "max_faces": Param("int", 0, min=0, max=MAX_FACES, doc="simplify further until at most this many triangles; "
                       "0 = no budget"),
    "uvs": Param("bool", True, doc="unwrap UVs (charts packed without overlap, one texel density)"),
    "keep": Param("str", "largest", choices=("largest", "all"), doc="keep the largest part (the result counts the "
                  "parts dropped) or all parts"),
}


# Trainer settings of a plain `atelier train shape`: the shipped model's schedule, over a 15-minute budget.
TRAIN_DEFAULTS = {"minutes": 15.0, "batch_size": 16, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine",
                  "warmup_steps": 20, "grad_clip": 5.0, "checkpoint_every": 200}


def config_class() -> type:
    from engine.shape.model import ShapeVAEConfig

    return ShapeVAEConfig


def objective(config: ShapeVAEConfig, data: dict[str, Any], device):
    from engine.shape import objective as shape

    options = {k: v for k, v in data.items() if v is not None}
    options["seed"] = options.pop("data_seed", 0)
    return shape.objective(config, options, device)


def load(config: dict, weights: dict, device):
    from engine.shape import generation as shape

    return shape.load(config, weights, device)


def mesh_arrays(op: str, vertices: Any, faces: Any, which: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N×3 float) and faces (M×3 int indexing them) from a client, or a bad_params error."""
    label = f"{which} mesh" if which else "mesh"
    if not isinstance(vertices, np.ndarray) or not isinstance(faces, np.ndarray):
        raise JobFailed(BAD_PARAMS, f"{op}: the {label} needs 'vertices' and 'faces' arrays")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.dtype.kind != "f" or len(vertices) < 4:
        raise JobFailed(BAD_PARAMS, f"{op}: {label} vertices must be a float N×3 array with N ≥ 4, "
                        f"got {vertices.dtype} {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu" or len(faces) < 4:
        raise JobFailed(BAD_PARAMS, f"{op}: {label} faces must be an integer M×3 array with M ≥ 4 "
                        f"(triangulate first), got {faces.dtype} {faces.shape}")
    if len(vertices) > MAX_VERTICES or len(faces) > MAX_FACES:
        raise JobFailed(TOO_LARGE, f"{op}: the {label} has {len(vertices):,} vertices and {len(faces):,} faces; the "
                        f"limits are {MAX_VERTICES:,} and {MAX_FACES:,}: simplify it (e.g. Blender's Decimate) first")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise JobFailed(BAD_PARAMS, f"{op}: {label} faces index vertices outside 0..{len(vertices) - 1}")
    if not np.isfinite(vertices).all():
        raise JobFailed(BAD_PARAMS, f"{op}: {label} vertices contain NaN or infinity")
    return vertices.astype(np.float32), faces.astype(np.int64)


def frame_of(vertices: np.ndarray, faces: np.ndarray) -> dict:
    """A mesh's frame: the centre and longest side of the bounding box of the vertices its faces
    use. The model sees every mesh moved and scaled from its frame into the unit cube
    (engine.shape.meshes.normalise); a result put back into it has the input's size and place."""
    used = vertices[np.unique(faces)].astype(np.float64)
    low, high = used.min(0), used.max(0)
    return {"centre": ((low + high) / 2).tolist(), "size": float((high - low).max())}


def _blend_frames(a: dict, b: dict, t: float) -> dict:
    return {"centre": [(1 - t) * x + t * y for x, y in zip(a["centre"], b["centre"])],
            "size": (1 - t) * a["size"] + t * b["size"]}


def _mesh_value(mesh, frame: dict | None) -> dict:
    """A mesh as it travels: {vertices, faces, uvs (per corner, M×3×2) where unwrapped, dropped_parts}."""
    vertices = mesh.vertices.astype(np.float64)
    if frame is not None:
        vertices = vertices * frame["size"] + np.asarray(frame["centre"])
    value = {"vertices": vertices.astype(np.float32), "faces": mesh.faces.astype(np.int32)}
    if mesh.face_uvs is not None:
        value["uvs"] = mesh.face_uvs.astype(np.float32)
    value["dropped_parts"] = int(mesh.dropped_parts)
    return value


def _meshes_value(meshes: list, metadata: dict, op: str, params: dict, frames: list | None = None) -> dict:
    frames = frames or [None] * len(meshes)
    return {"meshes": [_mesh_value(m, f) for m, f in zip(meshes, frames)],
            "provenance": provenance(metadata, op, params)}


def _mesh_options(params: dict) -> dict:
    return {k: params[k] for k in MESH_PARAMS}


@contextmanager
def _mesh_work(op: str, context: Context) -> Iterator[None]:
    """Work on a client's mesh: cancellable between its stages. A mesh the model cannot use (flat,
    degenerate, no inside) is the client's to fix: bad_params; one over a limit: too_large."""
    from engine.shape.meshes import MeshError, MeshTooLarge, cancellable

    try:
        with cancellable(context.check):
            yield
    except MeshTooLarge as e:
        raise JobFailed(TOO_LARGE, f"{op}: {e}") from None
    except MeshError as e:
        raise JobFailed(BAD_PARAMS, f"{op}: {e}") from None


def _sample(engine, context: Context, **params) -> dict:
    options = _mesh_options(params)
    metadata, model = engine.model(params["model"], "shape")
    meshes = model.sample(params["seed"], params["count"], temperature=params["temperature"],
                          progress=context.progress, **options)
    return _meshes_value(meshes, metadata, "shape.sample", params)


def _endpoint(op: str, params: dict, which: str) -> Any:
    if params[f"vertices_{which}"] is not None:
        return mesh_arrays(op, params[f"vertices_{which}"], params[f"faces_{which}"], which)
    return params[f"seed_{which}"]


def _interpolate(engine, context: Context, **params) -> dict:
    ts = [params["t"]] if params["t"] is not None else np.linspace(0, 1, params["steps"]).tolist()
    options = _mesh_options(params)
    metadata, model = engine.model(params["model"], "shape")
    a, b = _endpoint("shape.interpolate", params, "a"), _endpoint("shape.interpolate", params, "b")
    # Between two meshes the results move and grow from a's frame to b's; from one mesh, they keep its frame.
    fa, fb = (frame_of(*x) if isinstance(x, tuple) else None for x in (a, b))
    frames = [_blend_frames(fa or fb, fb or fa, t) for t in ts] if fa or fb else None
    with _mesh_work("shape.interpolate", context):
        meshes = model.interpolate(a, b, steps=params["steps"], t=params["t"], spherical=params["spherical"],
                                   progress=context.progress, **options)
    return _meshes_value(meshes, metadata, "shape.interpolate", params, frames)


def _encode(engine, context: Context, **params) -> dict:
    options = _mesh_options(params)
    metadata, model = engine.model(params["model"], "shape")
    vertices, faces = mesh_arrays("shape.encode", params["vertices"], params["faces"])
    with _mesh_work("shape.encode", context):
        latent = model.encode(vertices, faces)
    frame = frame_of(vertices, faces)
    value = {"latent": latent.astype(np.float32), "frame": frame}
    if params["decode"]:
        value["meshes"] = [_mesh_value(model.decode(latent, **options), frame)]
    return {**value, "provenance": provenance(metadata, "shape.encode", params)}


def _given_frame(frame: Any) -> dict | None:
    """shape.decode's frame, checked: {centre: 3 numbers, size: a positive number}, as shape.encode returns it."""
    if frame is None:
        return None
    try:
        centre, size = np.asarray(frame["centre"], np.float64), float(frame["size"])
        if centre.shape == (3,) and np.isfinite(centre).all() and np.isfinite(size) and size > 0:
            return {"centre": centre.tolist(), "size": size}
    except (KeyError, TypeError, ValueError):
        pass
    raise JobFailed(BAD_PARAMS, "shape.decode: 'frame' must be {\"centre\": [x, y, z], \"size\": a positive "
                    f"number}}, as shape.encode returns it; got {str(frame)[:100]}")


def _decode(engine, context: Context, **params) -> dict:
    options = _mesh_options(params)
    frame = _given_frame(params["frame"])
    metadata, model = engine.model(params["model"], "shape")
    latent = np.asarray(params["latent"], np.float32).reshape(-1)
    if latent.shape[0] != model.config.latent_dim or not np.isfinite(latent).all():
        raise JobFailed(BAD_PARAMS, f"shape.decode: 'latent' must hold {model.config.latent_dim} finite numbers "
                        f"for this model, got {latent.shape[0]}")
    return _meshes_value([model.decode(latent, **options)], metadata, "shape.decode", params, [frame])


def _variations(engine, context: Context, **params) -> dict:
    options = _mesh_options(params)
    metadata, model = engine.model(params["model"], "shape")
    vertices, faces = mesh_arrays("shape.variations", params["vertices"], params["faces"])
    with _mesh_work("shape.variations", context):
        meshes = model.variations(vertices, faces, params["count"], seed=params["seed"], spread=params["spread"],
                                  progress=context.progress, **options)
    frame = frame_of(vertices, faces)
    return _meshes_value(meshes, metadata, "shape.variations", params, [frame] * len(meshes))


def _eval(engine, context: Context, **params) -> dict:
    from engine.shape.dataset import build_from_folder, build_procedural
    from engine.shape.evaluation import evaluate_model, report_sheet

    metadata, model = engine.model(params["model"], "shape")
    resolution = model.config.resolution
    context.progress(0.05, "voxelising held-out shapes")
    if params["meshes"]:
        try:
            with _mesh_work("shape.eval", context):
                shapes = build_from_folder(params["meshes"], resolution)
        except FileNotFoundError as e:
            raise JobFailed(BAD_PARAMS, f"shape.eval: {e}") from None
        if not len(shapes):
            reasons = "; ".join(f"{s.source}: {s.reason}" for s in shapes.skipped[:5])
            raise JobFailed(BAD_PARAMS, f"shape.eval: no usable meshes in {params['meshes']} ({reasons})")
    else:
        # Seeds past the training range: shapes of the same families the model has not seen.
        shapes = build_procedural(params["procedural"], seed=params["seed"] + 1_000_003, resolution=resolution)
    context.progress(0.3, "measuring reconstructions and samples")
    metrics = evaluate_model(model, shapes.grids)
    context.progress(0.9, "drawing the sheet")
    return {"metrics": metrics, "sheet": report_sheet(model), "held_out_shapes": len(shapes),
            "provenance": provenance(metadata, "shape.eval", params)}


_SEED = Param("int", 0, min=0, max=2**31 - 1, doc="same seed, same shape")
_VERTICES = Param("array", doc="mesh vertices, float N×3")
_FACES = Param("array", doc="mesh triangles, int M×3")
_MESH = {"vertices": Param("array", required=True, doc="mesh vertices, float N×3"),
         "faces": Param("array", required=True, doc="mesh triangles, int M×3")}

OPS = [
    Op("shape.sample", _sample, {"model": MODEL, "seed": _SEED,
                                 "count": Param("int", 1, min=1, max=64, doc="how many shapes"),
                                 # 0.5 as engine.shape.generation.SAMPLE_TEMPERATURE (measured there)
                                 "temperature": Param("float", 0.5, min=0.0, max=3.0, doc="how far from the training "
                                                      "shapes, in posterior spreads; 0 = a training shape as the model "
                                                      "sees it"),
                                 **MESH_PARAMS}, doc="new shapes as meshes"),
    Op("shape.interpolate", _interpolate, {
        "model": MODEL, "seed_a": _SEED, "seed_b": Param("int", 1, min=0, max=2**31 - 1, doc="end seed"),
        "vertices_a": _VERTICES, "faces_a": _FACES, "vertices_b": _VERTICES, "faces_b": _FACES,
        "steps": Param("int", 5, min=1, max=64, doc="shapes from a to b, both ends included"),
        "t": Param("float", min=0.0, max=1.0, doc="one shape at this point instead of steps"),
        "spherical": Param("bool", True, doc="slerp (true) or a straight line in latent space"),
        **MESH_PARAMS}, doc="shapes between two seeds or two meshes"),
    Op("shape.encode", _encode, {"model": MODEL, **_MESH,
                                 "decode": Param("bool", False, doc="also return the mesh decoded from the code, "
                                                 "in the input's frame (a round trip)"),
                                 **MESH_PARAMS}, doc="a mesh's latent code and frame (bounding-box centre, size)"),
    Op("shape.decode", _decode, {"model": MODEL, "latent": Param("array", required=True, doc="latent code"),
                                 "frame": Param("dict", doc="put the mesh here: {centre: [x, y, z], size}, as "
                                                "shape.encode returns it; default the unit cube"),
                                 **MESH_PARAMS}, doc="the mesh of a latent code"),
    Op("shape.variations", _variations, {
        "model": MODEL, **_MESH,
        "count": Param("int", 4, min=1, max=64, doc="how many variations"), "seed": _SEED,
        "spread": Param("float", 0.3, min=0.0, max=2.0, doc="0 = the mesh as the model sees it, 1 = far"),
        **MESH_PARAMS}, doc="shapes near a given mesh"),
    Op("shape.eval", _eval, {
        "model": MODEL, "meshes": Param("str", path=True, doc="folder of held-out meshes; else procedural shapes"),
        "procedural": Param("int", 40, min=4, max=2000, doc="how many unseen procedural shapes"),
        "seed": Param("int", 0, doc="seed of the procedural shapes")},
        doc="IoU, Chamfer-L1, F-score, watertightness, coverage/MMD, and a PNG sheet"),
]
CLI_OPS = {"generate": "shape.sample", "eval": "shape.eval"}
# `atelier generate shape` runs shape.sample; each of these flags runs the op it names instead, on mesh files
# read here, in the client, and sent as arrays (as the Blender add-on sends meshes). The params in
# CLI_FROM_FILES come from those files and --out, never from flags of their own.
CLI_INPUTS = {"encode": "shape.encode", "variations_of": "shape.variations", "interpolate": "shape.interpolate"}
CLI_FROM_FILES = {"vertices", "faces", "vertices_a", "faces_a", "vertices_b", "faces_b", "seed_a", "seed_b", "decode"}
MESH_FILE_SUFFIXES = (".glb", ".obj", ".ply")  # what write_output writes (engine.shape.meshing.EXPORT_SUFFIXES)


def cli_flags(parser) -> None:
    """The flags of `atelier generate shape` that name mesh files (CLI_INPUTS) and their up axis."""
    parser.add_argument("--encode", metavar="MESH", help="a mesh file's latent code: --out CODE.npy writes it; "
                        "--out NAME.glb|.obj|.ply writes the mesh decoded from it, in the file's size and place, "
                        "and the code beside it (NAME.npy)")
    parser.add_argument("--variations-of", dest="variations_of", metavar="MESH", help="--count shapes near this "
                        "mesh file (--spread: how far), at its size and place")
    parser.add_argument("--interpolate", nargs=2, metavar=("A", "B"), help="--steps shapes from A to B (or one at "
                        "--t), each a mesh file or a seed; between two files they grow from A's size and place to B's")
    parser.add_argument("--up", choices=("auto", "z", "y"), default="auto", help="up axis of those mesh files "
                        "(default auto: y for glTF/GLB and OBJ, as Atelier writes them; z for PLY, STL, OFF); "
                        "written files follow the same conventions")


def cli_request(args) -> tuple[str, dict]:
    """(op, params read from files) for `atelier generate shape`: shape.sample, or the op of the CLI_INPUTS
    flag given."""
    from engine.shape.meshes import read_mesh_arrays

    given = [name for name in CLI_INPUTS if getattr(args, name, None)]
    if len(given) > 1:
        raise ValueError("give one of --encode, --variations-of and --interpolate, not " + " and ".join(
            "--" + name.replace("_", "-") for name in given))
    if not given:
        return "shape.sample", {}
    op = CLI_INPUTS[given[0]]
    if op == "shape.interpolate":
        params = {}
        for which, source in zip("ab", args.interpolate):
            if source.isdigit() and not Path(source).exists():
                params[f"seed_{which}"] = int(source)
            else:
                params[f"vertices_{which}"], params[f"faces_{which}"] = read_mesh_arrays(source, args.up)
        return op, params
    vertices, faces = read_mesh_arrays(getattr(args, given[0]), args.up)
    params = {"vertices": vertices, "faces": faces}
    if op == "shape.encode":
        params["decode"] = bool(args.out) and Path(args.out).suffix.lower() in MESH_FILE_SUFFIXES
    return op, params


def describe_result(op: str, value: dict, written: list[Path]) -> str:
    """A shape result in words: each mesh's triangles, size and UVs, and the parts "keep largest" dropped."""
    import json

    if "meshes" not in value:
        return json.dumps({k: v for k, v in value.items() if not isinstance(v, np.ndarray)}, default=str)
    lines = []
    for i, mesh in enumerate(value["meshes"]):
        size = float(np.ptp(mesh["vertices"], axis=0).max()) if len(mesh["vertices"]) else 0.0
        dropped = mesh.get("dropped_parts", 0)
        lines.append(f"mesh {i + 1}: {len(mesh['faces']):,} triangles, {size:.3g} across, "
                     f"{'with UVs' if 'uvs' in mesh else 'no UVs'}"
                     + (f"; {dropped} separate part{'s' * (dropped > 1)} dropped (--keep all keeps them)" if dropped
                        else ""))
    return "\n".join(lines)


def write_output(op: str, value: dict, out: Path) -> list[Path]:
    """Meshes as GLB/OBJ/PLY (by the suffix of `out`, else GLB files in the folder `out`), with their UVs;
    a latent code as .npy (beside the mesh decoded from it, if any); sheets as PNG."""
    from engine.train.plots import save_png

    if "sheet" in value:
        path = out if out.suffix == ".png" else out / "shape-eval.png"
        save_png(value["sheet"], path)
        return [path]
    written = []
    if "latent" in value:
        path = out if out.suffix == ".npy" else (out.with_suffix(".npy") if out.suffix else out / "latent.npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, value["latent"])
        written.append(path)
        if out.suffix == ".npy" or not value.get("meshes"):
            return written
    from engine.shape.meshing import Mesh, export_mesh

    meshes = [Mesh(m["vertices"], m["faces"], m.get("uvs")) for m in value["meshes"]]
    if out.suffix and len(meshes) == 1:
        return written + [export_mesh(meshes[0], out)]
    suffix = out.suffix or ".glb"
    folder = out.with_suffix("") if out.suffix else out
    folder.mkdir(parents=True, exist_ok=True)
    return written + [export_mesh(mesh, folder / f"shape-{i:02d}{suffix}") for i, mesh in enumerate(meshes)]


def demo(client, model: str, out: Path) -> list[Path]:
    value = client.call("shape.sample", {"model": model, "seed": 7, "count": 1, "smooth": 4}, timeout=300)
    return write_output("shape.sample", value, out / "shape.glb")
