"""Seamless textures at any size from a periodic spatial GAN trained on your own exemplar.

The texture kind as the engine serves it: training-data options, ops and CLI output. Kept
light (no scipy or scikit-image at import) so the engine starts fast; the work happens in
engine.texture.objective, engine.texture.generation and engine.texture.evaluation, imported on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from engine import protocol
from engine.ops import MODEL, Context, JobFailed, Op, Param, provenance

if TYPE_CHECKING:
    from engine.texture.model import TextureGANConfig


MIN_SIDE, MAX_SIDE = 16, 4096
MAX_ANIMATION_PIXELS = 64 * 1024 * 1024  # frames x height x width: 64 frames of 1024², 192 MB of RGB
PREVIEW_SIDE = 96
FIRST_LOOK_PIXELS = 512 * 512  # pictures larger than this send a first look (see _first_look)
MAP_NAMES = ("normal", "roughness", "height", "metallic", "ao")  # the value keys of maps beside "image"
DEMO_NAMES = ("brick", "grass", "gravel")  # exemplars that ship with scikit-image, named instead of a path

DATA_PARAMS = {
    "images": Param("str", path=True, names=DEMO_NAMES,
                     doc="an image, a folder of images (PNG/JPEG/TIFF), or a demo exemplar: brick, grass, gravel"),
    "image_arrays": Param("list", doc="exemplars sent by a client: [{name, pixels: uint8 HxW or HxWxC array}], "
                          "top row first"),
    "flips": Param("bool", True, doc="augment with mirror flips"),
    "rot90": Param("bool", doc="augment with 90° rotations; default: on unless the exemplar has a direction (wood "
                   "grain, brick courses), which training finds and reports"),
    "jitter": Param("float", 0.0, min=0.0, max=0.5, doc="mild colour jitter strength; 0 is off"),
    "min_size": Param("int", min=8, max=65536, doc="skip images smaller than this on a side (default: the smallest crop the model trains on)"),
}

# GANs train badly with Adam's default beta1 = 0.9 (momentum chases a moving target). Sample
# grids every 100 steps land in the model's run folder (and as previews in progress events).
# Batches of 4 make ~1.7x the steps in the budget: better at the fine scale, worse at the coarse
# one (docs/BENCHMARKS.md, "Batches of 4").
TRAIN_DEFAULTS = {"minutes": 10.0, "schedule": "cosine", "beta1": 0.5, "beta2": 0.99, "lr": 2e-4, "batch_size": 8,
                  "preview_every": 100, "checkpoint_every": 250}


def config_class() -> type:
    from engine.texture.model import TextureGANConfig

    return TextureGANConfig


def objective(config: TextureGANConfig, data: dict[str, Any], device):
    from engine.texture.objective import TextureObjective

    if bool(data.get("images")) == bool(data.get("image_arrays")):
        raise ValueError("texture training needs exactly one source of images: --images PATH (an image or a "
                         "folder), a demo exemplar name (brick, grass, gravel), or image_arrays sent by a client")
    images = data["images"] or _sent_images(data["image_arrays"])
    return TextureObjective(config, images, device=device, flips=data["flips"], rot90=data["rot90"],
                            jitter=data["jitter"], min_size=data.get("min_size"))


def _sent_images(sent: list) -> dict[str, np.ndarray]:
    """{name: float array in [-1, 1]} from a client's [{name, pixels}], or a ValueError saying what is wrong."""
    from engine.texture.images import MAX_PIXELS

    out = {}
    for i, item in enumerate(sent):
        pixels = item.get("pixels") if isinstance(item, dict) else None
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) \
                or (pixels.ndim == 3 and not 1 <= pixels.shape[2] <= 4):
            raise ValueError(f"image_arrays[{i}] must be {{name, pixels: a uint8 HxW or HxWxC array, C 1-4}}")
        if pixels.shape[0] * pixels.shape[1] > MAX_PIXELS:
            raise ValueError(f"image_arrays[{i}] has {pixels.shape[1]}x{pixels.shape[0]} pixels, over the limit of "
                             f"{MAX_PIXELS / 1e6:.1f} megapixels; send a smaller image")
        name = str(item.get("name") or f"image {i}")
        out[name if name not in out else f"{name} ({i})"] = pixels.astype(np.float32) / 127.5 - 1
    return out


def load(config: dict, weights: dict, device):
    from engine.texture.generation import load as load_model

    return load_model(config, weights, device)


def _bad(message: str) -> JobFailed:
    return JobFailed(protocol.BAD_PARAMS, message)


def _size(op: str, model, params: dict) -> tuple[int, int]:
    """(width, height) from `size` ('W' or 'WxH') or width/height, checked by the model."""
    width, height = params["width"], params["height"]
    if params.get("size"):
        text = params["size"].lower().replace(" ", "")
        try:
            parts = [int(p) for p in text.split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise _bad(f"{op}: 'size' must be W or WxH, e.g. 512 or 1024x512; got {params['size']!r}")
        width, height = parts[0], parts[-1]
    height = width if height is None else height
    for name, side in (("width", width), ("height", height)):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise _bad(f"{op}: {name} must be between {MIN_SIDE} and {MAX_SIDE} px, got {side}")
    try:
        model.size_for(width, height, params.get("tileable", True))
    except ValueError as e:
        raise _bad(f"{op}: {e}") from None
    params.update(width=width, height=height, size=None)  # provenance records the size made
    return width, height


def _check_exemplars(op: str, model, params: dict, *names: str) -> None:
    for name in names:
        value = params.get(name)
        if value is not None and value >= model.n_exemplars:
            raise _bad(f"{op}: {name} {value} does not exist: this model was trained on {model.n_exemplars} "
                       f"exemplar(s), numbered from 0 in the order of its training images")


def _first_look(context: Context, model, width: int, height: int, make: Callable[[int], dict]) -> None:
    """Before a large picture, send a small one with the first progress event, so a client shows
    the material at once. It is `make(side)`: the same model, seed and exemplar(s) at side x side,
    a look at the same material at 1:1 scale (its pixels as large as the result's), not a downscale
    of the final picture, whose noise is drawn for its own grid. Tileable at a multiple of the
    model's training crop, the lattice its waves snap to; a few tens of ms on 2 CPU cores."""
    if width * height <= FIRST_LOOK_PIXELS:
        return
    crop = model.config.crop
    side = max(1, round(PREVIEW_SIDE / crop)) * crop
    context.progress(0.0, f"first look; making {width}x{height}", make(side)["image"])


def _generate(engine, context: Context, **params) -> dict:
    from engine.texture.generation import pbr_maps

    metadata, model = engine.model(params["model"], "texture")
    width, height = _size("texture.generate", model, params)
    _check_exemplars("texture.generate", model, params, "exemplar", "morph_to")
    estimate = params["pbr"] and not {"normal", "roughness", "height"} <= set(model.maps)
    progress = lambda f, msg: context.progress(0.8 * f if estimate else f, msg)  # noqa: E731

    def make(w: int, h: int, tileable: bool, report=None) -> dict[str, Any]:
        if params["morph_to"] is None:
            return model.generate_maps(w, h, params["seed"], tileable, exemplar=params["exemplar"], progress=report)
        return model.morph_maps(w, h, params["seed"], params["seed"], tileable, exemplar_a=params["exemplar"],
                                exemplar_b=params["morph_to"], progress=report)

    _first_look(context, model, width, height, lambda side: make(side, side, True))
    value = make(width, height, params["tileable"], progress)
    if estimate:  # a model of a photo alone: maps estimated from its colour, beside any it makes
        context.progress(0.85, "deriving normal and roughness maps")
        estimated = pbr_maps(value["image"], strength=params["normal_strength"], tileable=params["tileable"],
                             progress=lambda f, msg: context.progress(0.85 + 0.15 * f, msg))
        value.update({k: v for k, v in estimated.items() if k not in value})
    value["provenance"] = provenance(metadata, "texture.generate", params)
    return value


def _morph(engine, context: Context, **params) -> dict:
    metadata, model = engine.model(params["model"], "texture")
    width, height = _size("texture.morph", model, params)
    _check_exemplars("texture.morph", model, params, "exemplar", "morph_to")
    _first_look(context, model, width, height, lambda side: model.morph_maps(
        side, side, params["seed_a"], params["seed_b"], True, exemplar_a=params["exemplar"],
        exemplar_b=params["morph_to"]))
    context.progress(0.0, f"morphing seed {params['seed_a']} into {params['seed_b']}")
    value = model.morph_maps(width, height, params["seed_a"], params["seed_b"], params["tileable"],
                             exemplar_a=params["exemplar"], exemplar_b=params["morph_to"], progress=context.progress)
    return {**value, "provenance": provenance(metadata, "texture.morph", params)}


def _preview(frame: np.ndarray) -> np.ndarray:
    step = max(1, -(-max(frame.shape[:2]) // PREVIEW_SIDE))
    return np.ascontiguousarray(frame[::step, ::step])


def _animate(engine, context: Context, **params) -> dict:
    metadata, model = engine.model(params["model"], "texture")
    width, height = _size("texture.animate", model, params)
    _check_exemplars("texture.animate", model, params, "exemplar")
    frames = params["frames"]
    if frames * width * height > MAX_ANIMATION_PIXELS:
        raise _bad(f"texture.animate: {frames} frames of {width}x{height} is too much in one request "
                   f"(at most {MAX_ANIMATION_PIXELS // (1024 * 1024)} Mpx in all); ask for fewer or smaller frames")

    def on_frame(i: int, frame: np.ndarray) -> None:
        context.progress((i + 1) / frames, f"frame {i + 1}/{frames}", _preview(frame))

    context.progress(0.0, f"animating {frames} frames")
    video = model.animate(width, height, frames, params["seed"], params["tileable"], params["loop"],
                          exemplar=params["exemplar"], on_frame=on_frame)
    return {"frames": video, "provenance": provenance(metadata, "texture.animate", params)}


REPOSITORY = Path(__file__).resolve().parents[2]


def found_here(path: str) -> str:
    """A stored training image's path, or where this checkout holds it: a shipped model stored the
    paths of the machine that trained it, and what it was trained on is the repository's bench/data/."""
    inside = path.find("bench/data/")
    if inside >= 0 and not Path(path).exists() and (REPOSITORY / path[inside:]).exists():
        return str(REPOSITORY / path[inside:])
    return path


def _exemplar_source(metadata: dict, images: str | None) -> str:
    """What to measure against: the given images, else what the model was trained on."""
    if images:
        return images
    used = [found_here(entry.get("path", "")) for entry in (metadata.get("data") or {}).get("images", [])]
    if len(used) == 1 and used[0].startswith("skimage:"):
        return used[0].split(":", 1)[1]
    if len(used) == 1 and Path(used[0]).exists():
        return used[0]
    if used and all(Path(p).exists() for p in used):
        return str(Path(used[0]).parent)
    raise _bad(f"texture.eval: cannot find the images model {metadata.get('name')!r} was trained on "
               f"({used or 'not recorded'}); give 'images' (a path or brick, grass, gravel)")


def _eval(engine, context: Context, **params) -> dict:
    from engine.texture.evaluation import describe, evaluate_model, in_windows, judging_sheet_image
    from engine.texture.objective import resolve_images

    metadata, model = engine.model(params["model"], "texture")
    source = _exemplar_source(metadata, params["images"])
    size = params["size"] or model.config.crop
    try:
        model.size_for(size, size, tileable=True)
    except ValueError as e:
        raise _bad(f"texture.eval: {e}") from None
    context.progress(0.05, f"reading {source}")
    try:
        images, report = resolve_images(source, model.channels, 2 * size, model.config.exemplar_shrink)
    except (ValueError, FileNotFoundError) as e:
        raise _bad(f"texture.eval: {e} (evaluation at {size} px needs exemplars of at least {2 * size} px, "
                   "split into two halves)") from None
    images = [image[..., :model.channels] for image in images]  # a material's colour: what generate's image is
    context.progress(0.15, f"measuring {params['samples']} samples of {size}x{size} against {params['repeats']} "
                           "real-vs-real reference sets")
    metrics = evaluate_model(model, images, size=size, n=params["samples"], seed=params["seed"],
                             repeats=params["repeats"])
    rows = describe(metrics)
    context.progress(0.7, "drawing the judging sheet")
    sheet = judging_sheet_image(model, images, size=max(size, 128), seed=params["seed"])
    return {"metrics": {k: v for k, v in metrics.items() if not k.endswith("_se")},
            "uncertainty": {k[:-3]: v for k, v in metrics.items() if k.endswith("_se")},
            "ideal": {r["metric"]: r["ideal"] for r in rows}, "verdicts": {r["metric"]: r["verdict"] for r in rows},
            "samples": params["samples"], "repeats": params["repeats"], "size": size, "windows": in_windows(model),
            "downscale": model.config.exemplar_shrink,
            "sheet": sheet, "exemplars": [p for p, _ in report.used],
            **({"warning": metadata["warning"]} if metadata.get("warning") else {}),
            "provenance": provenance(metadata, "texture.eval", params)}


_SEED = Param("int", 0, min=0, max=2**31 - 1, doc="same seed, same texture")
_TILEABLE = Param("bool", True, doc="wrap seamlessly (sizes a multiple of the model's stride); "
                  "off: any size, cropped from a larger texture, a regular pattern at its measured repeat")
_EXEMPLAR = Param("int", min=0, max=1023, doc="for a model trained on several images: which one's texture "
                  "(0 = the first, in file-name order; default: seed modulo their number)")


def _morph_to(doc: str) -> Param:
    return Param("int", min=0, max=1023, doc=doc)


def _size_params(default: int) -> dict[str, Param]:
    return {"width": Param("int", default, min=MIN_SIDE, max=MAX_SIDE, doc="width in px"),
            "height": Param("int", min=MIN_SIDE, max=MAX_SIDE, doc="height in px (default: the width)"),
            "size": Param("str", doc="W or WxH (e.g. 1024x512), instead of width and height")}


OPS = [
    Op("texture.generate", _generate, {
        "model": MODEL, **_size_params(512), "seed": _SEED, "tileable": _TILEABLE, "exemplar": _EXEMPLAR,
        "morph_to": _morph_to("morph across the width from `exemplar` into this exemplar's texture (a model "
                              "trained on several images; tileable: there and back, so it still wraps)"),
        "pbr": Param("bool", False, doc="also return normal, roughness and height maps: estimated from the colour "
                     "where the model does not make them (a model trained on a material's maps returns them always)"),
        "normal_strength": Param("float", 2.0, min=0.0, max=20.0, doc="bumpiness of the normal map")},
        doc="a seamless texture, uint8 HxWxC as 'image', and every map the model makes from the same noise "
            "('normal' HxWx3 unit vectors, OpenGL convention; 'roughness', 'height', 'metallic', 'ao' HxW); "
            "over 512x512, the first progress carries a small first look of the same material as its preview"),
    Op("texture.morph", _morph, {
        "model": MODEL, **_size_params(1024), "seed_a": _SEED,
        "seed_b": Param("int", 1, min=0, max=2**31 - 1, doc="the look to blend into"), "tileable": _TILEABLE,
        "exemplar": _EXEMPLAR, "morph_to": _morph_to("the exemplar to blend into (default: seed_b modulo their "
                                                     "number); set seed_b = seed_a to change only the exemplar")},
        doc="one texture blending the look of seed_a (and exemplar) into seed_b (and morph_to) across its width, "
            "with every map the model makes"),
    Op("texture.animate", _animate, {
        "model": MODEL, **_size_params(256), "seed": _SEED, "tileable": _TILEABLE, "exemplar": _EXEMPLAR,
        "frames": Param("int", 16, min=1, max=600, doc="how many frames"),
        "loop": Param("bool", True, doc="the last frame leads back into the first")},
        doc="N frames along a latent path, uint8 NxHxWxC; progress carries a small preview per frame"),
    Op("texture.eval", _eval, {
        "model": MODEL,
        "images": Param("str", path=True, names=DEMO_NAMES,
                         doc="exemplar(s) to measure against (default: what the model was trained on)"),
        "size": Param("int", min=MIN_SIDE, max=1024, doc="sample size in px (default: the training crop)"),
        "samples": Param("int", 32, min=2, max=128, doc="how many samples to measure (the end of training "
                         "measures 32, seed 0, as here)"),
        "repeats": Param("int", 8, min=1, max=16, doc="real-vs-real reference sets (fresh crops, "
                         "halves swapped every other one): each figure is the distances summed over them, its "
                         "uncertainty a jackknife standard error over them"),
        "seed": _SEED},
        doc="metrics as ratios to real-vs-real (1 = as close as another piece of the exemplar), each with its "
            "ideal, a standard error and a verdict; tiling error, seam ratio, and a PNG judging sheet"),
]
CLI_OPS = {"generate": "texture.generate", "eval": "texture.eval"}


def describe_data(summary: dict) -> str:
    """The CLI's words for what training read: images used and skipped, conversions, channels, maps."""
    colour = {1: "grey", 3: "colour", 4: "colour with alpha"}.get(summary.get("channels"), "?")
    maps = f" with {', '.join(summary['maps'])} maps" if summary.get("maps") else ""
    lines = [f"trained on {len(summary.get('images', []))} image(s): {colour}{maps}"]
    lines += [f"  used {image['path']} ({image['width']}x{image['height']})" for image in summary.get("images", [])]
    lines += [f"  skipped {item['path']}: {item['reason']}" for item in summary.get("skipped", [])]
    lines += [f"  note: {note}" for note in summary.get("notes", [])]
    return "\n".join(lines)


def describe_result(op: str, value: dict, written: list[Path]) -> str:
    """The CLI's words for a result: texture.eval as a table (figure ± standard error, ideal, verdict)."""
    import json

    if op != "texture.eval":  # as the CLI shows any result: arrays as their dtype and shape
        return json.dumps({k: f"<{v.dtype} array {'x'.join(map(str, v.shape))}>" if isinstance(v, np.ndarray)
                           else v for k, v in value.items()}, default=str)
    metrics, se, verdicts = value["metrics"], value.get("uncertainty", {}), value.get("verdicts", {})
    what = (f"windows of {value.get('size', '?')} px (the texture at its measured repeat; seams from tileable "
            "pictures)" if value.get("windows") else f"samples of {value.get('size', '?')} px")
    shrunk = value.get("downscale", 1)
    photo = f" of the photo shrunk {shrunk}x, as training read it" if shrunk > 1 else ""
    lines = [(f"{value.get('samples', '?')} {what} against "
              f"{value.get('repeats', '?')} real-vs-real reference sets{photo}; ratios: 1 = as close as another "
              "piece of the photo, larger is worse")]
    lines += [_figure_line(key, figure, se.get(key), value.get("ideal", {}).get(key), verdicts.get(key))
              for key, figure in metrics.items()]
    if value.get("warning"):
        lines.append(f"warning: {value['warning']}")
    return "\n".join(lines)


def describe_metrics(metrics: dict) -> str:
    """The CLI's words for the figures a finished run stored (those the eval op gives, with their
    standard errors): the table `atelier eval` prints, without the training losses."""
    from engine.texture.evaluation import describe

    rows = describe(metrics)
    if not rows:
        return ""
    return "\n".join(["what `generate` makes, as `atelier eval` measures it (ratios: 1 = as close as another piece "
                      "of the photo, larger is worse):"]
                     + [_figure_line(r["metric"], r["value"], r["se"] or None, r["ideal"], r["verdict"]) for r in rows])


def _figure_line(key: str, figure: float, se: float | None, ideal: str | None, verdict: str | None) -> str:
    error = f" ± {se:.2f}" if se is not None else ""
    shown = f"{figure:.2e}" if key == "tile_error" else f"{figure:.2f}"
    return f"  {key:<14}{shown + error:<16}" + (f"ideal {ideal:<4}" if ideal else " " * 10) + (verdict or "")


def _save(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    # zlib level 1 with Huffman coding only (compress_type 2, Z_HUFFMAN_ONLY): after PNG's row
    # filters a photo-like map has few repeated strings to find. A 1024² PBR set: 0.17 s of CPU and
    # 2.4 MB, against 0.22 s and 3.2 MB at level 1 and 1.27 s (wall) at level 6.
    Image.fromarray(np.ascontiguousarray(image)).save(path, compress_level=1, compress_type=2)
    return path


def write_output(op: str, value: dict, out: Path) -> list[Path]:
    """Textures as PNG (`out` a .png file, or a folder), PBR maps beside them as NAME_normal.png,
    NAME_roughness.png, NAME_height.png, NAME_metallic.png and NAME_ao.png; animations as numbered
    PNGs; eval sheets as PNG."""
    out = Path(out)
    if "sheet" in value:
        return [_save(value["sheet"], out if out.suffix == ".png" else out / "texture-eval.png")]
    if "frames" in value:
        folder = out.with_suffix("") if out.suffix else out
        return [_save(frame, folder / f"frame-{i:04d}.png") for i, frame in enumerate(value["frames"])]
    path = out if out.suffix == ".png" else out / f"{op.split('.')[-1]}.png"
    written = [_save(value["image"], path)]
    for name in MAP_NAMES:
        if name in value:
            written.append(_save(value[name], path.with_name(f"{path.stem}_{name}.png")))
    return written


def demo(client, model: str, out: Path) -> list[Path]:
    value = client.call("texture.generate", {"model": model, "width": 512, "height": 512, "seed": 7, "pbr": True},
                        timeout=300)
    return write_output("texture.generate", value, Path(out) / "texture.png")
