"""The panel's settings (per scene, saved in the .blend) and the engine's model list (per session)."""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from .op_params import OP_PARAMS

MAX_SEED = OP_PARAMS["texture.generate"]["seed"]["max"]


def declared(op: str, param: str, **panel) -> dict:
    """min, max and default of an op's param as the engine declares it; `panel` overrides or adds."""
    spec = OP_PARAMS[op][param]
    return {**{key: spec[key] for key in ("min", "max", "default") if key in spec}, **panel}


def _interp_changed(self, context):
    from . import operators

    operators.preview_interpolation(context)


def _remember_model(kind: str):
    """The user's last choice of model: what an empty Model field means from then on."""
    def update(self, context):
        name = getattr(self, f"{kind}_model").strip()
        if name and getattr(self, f"last_{kind}_model") != name:
            setattr(self, f"last_{kind}_model", name)
    return update


def _texture_scale_changed(self, context):
    """The texture's real size follows the slider on the selected (and active) objects' materials."""
    from . import apply

    objects = set(getattr(context, "selected_objects", None) or [])
    if getattr(context, "active_object", None) is not None:
        objects.add(context.active_object)
    for obj in objects:
        for slot in getattr(obj, "material_slots", []):
            if slot.material is not None:
                apply.set_texture_scale(slot.material, self.texture_scale)


class AtelierModel(bpy.types.PropertyGroup):
    kind: StringProperty()
    content_hash: StringProperty()
    partial: BoolProperty(description="Saved by a training run that did not finish")


class AtelierHistoryItem(bpy.types.PropertyGroup):
    label: StringProperty()
    op: StringProperty()
    provenance: StringProperty(description="JSON: model, model hash, op, parameters")
    created: StringProperty(description="Names of the datablocks made, one per line")
    thumbnail: StringProperty(description="The image (textures) or object (shapes) the list shows it by")
    thumbnail_kind: StringProperty()  # IMAGE or OBJECT


class AtelierRuntime(bpy.types.PropertyGroup):
    """Not worth saving: filled from the engine on every connection."""

    models: CollectionProperty(type=AtelierModel)
    texture_models: CollectionProperty(type=AtelierModel)
    shape_models: CollectionProperty(type=AtelierModel)


class AtelierSettings(bpy.types.PropertyGroup):
    # texture
    texture_model: StringProperty(name="Model", update=_remember_model("texture"),
                                  description="Texture model (empty: your last choice, else Atelier's own)")
    last_texture_model: StringProperty(options={"HIDDEN"})
    texture_width: IntProperty(name="Width", step=16, subtype="PIXEL", **declared("texture.generate", "width"))
    texture_height: IntProperty(name="Height", step=16, subtype="PIXEL", **declared(
        "texture.generate", "height", default=OP_PARAMS["texture.generate"]["width"]["default"]))
    texture_seed: IntProperty(name="Seed", **declared("texture.generate", "seed"))
    tileable: BoolProperty(name="Tileable", description="Wrap seamlessly", **declared("texture.generate", "tileable"))
    # The engine makes PBR maps only when asked; the panel asks by default.
    pbr: BoolProperty(name="PBR maps", default=True, description="Also make normal, roughness and height maps")
    normal_strength: FloatProperty(name="Bump", **declared("texture.generate", "normal_strength"))
    texture_target: EnumProperty(name="Into", items=[
        ("NEW", "New material", "A new material on the active object"),
        ("ACTIVE", "Active material", "The active material's Base Color (and normal, roughness)")], default="NEW")
    texture_scale: FloatProperty(name="Size", default=1.0, min=0.001, soft_min=0.05, soft_max=20.0, subtype="DISTANCE",
                                 unit="LENGTH", update=_texture_scale_changed,
                                 description="How much of the surface one copy of the texture covers, in real size")
    texture_all_selected: BoolProperty(name="All selected meshes", default=False,
                                       description="Put the texture's material on every selected mesh, not only "
                                       "the active one")
    texture_variations: IntProperty(name="Count", default=4, min=1, max=16)
    morph_seed: IntProperty(name="Morph into seed", **declared("texture.morph", "seed_b"))
    # -1 is the panel's "not set": the engine then chooses by the seed.
    texture_exemplar: IntProperty(name="Exemplar", **declared("texture.generate", "exemplar", min=-1, default=-1),
                                  description="For a model trained on several images: which image's texture, "
                                  "0 = the first in file-name order (-1: chosen by the seed)")
    morph_exemplar: IntProperty(name="Into exemplar", **declared("texture.morph", "morph_to", min=-1, default=-1),
                                description="Morph into this image's texture (-1: chosen by the morph seed)")
    # shape
    shape_model: StringProperty(name="Model", update=_remember_model("shape"),
                                description="Shape model (empty: your last choice, else Atelier's own)")
    last_shape_model: StringProperty(options={"HIDDEN"})
    shape_seed: IntProperty(name="Seed", **declared("shape.sample", "seed"))
    shape_count: IntProperty(name="Count", **declared("shape.sample", "count"))
    shape_temperature: FloatProperty(name="Temperature", **declared("shape.sample", "temperature"))
    # The panel smooths a little by default; the engine's default is none.
    shape_smooth: IntProperty(name="Smoothing", **declared("shape.sample", "smooth", default=2),
                              description="Taubin smoothing steps")
    shape_layout: EnumProperty(name="Layout", items=[("ROW", "Row", ""), ("GRID", "Grid", "")], default="ROW")
    interp_source: EnumProperty(name="Between", items=[
        ("SEEDS", "Two seeds", "Seed and End seed"),
        ("SELECTED", "Two meshes", "The active and one other selected mesh")], default="SEEDS")
    interp_seed_b: IntProperty(name="End seed", **declared("shape.interpolate", "seed_b"))
    interp_steps: IntProperty(name="Steps", **declared("shape.interpolate", "steps"))
    interp_t: FloatProperty(name="Preview", **declared("shape.interpolate", "t", default=0.5), update=_interp_changed,
                            description="Drag to preview the shape at this point between the two")
    shape_variations: IntProperty(name="Count", **declared("shape.variations", "count"))
    spread: FloatProperty(name="Spread", **declared("shape.variations", "spread"))
    # training
    train_name: StringProperty(name="Name", default="my-model", description="Name of the new model")
    train_image: PointerProperty(name="Image", type=bpy.types.Image, description="Exemplar image in this file")
    train_image_path: StringProperty(name="Or file", subtype="FILE_PATH", description="Exemplar image(s) on disk")
    train_steps: IntProperty(name="Steps", default=0, min=0, description="0: the engine's default")
    train_minutes: FloatProperty(name="Minutes", default=0.0, min=0.0, description="Time budget; 0: none")
    train_config: StringProperty(name="Config", default="",
                                 description='Model config overrides as JSON, e.g. {"resolution": 32}')
    train_detach: BoolProperty(name="Keep training if Blender closes", default=False)
    # history
    history: CollectionProperty(type=AtelierHistoryItem)
    history_index: IntProperty()


CLASSES = (AtelierModel, AtelierHistoryItem, AtelierRuntime, AtelierSettings)


def register() -> None:
    bpy.types.Scene.atelier = PointerProperty(type=AtelierSettings)
    bpy.types.WindowManager.atelier = PointerProperty(type=AtelierRuntime)


def unregister() -> None:
    del bpy.types.WindowManager.atelier
    del bpy.types.Scene.atelier
