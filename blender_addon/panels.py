"""The sidebar panels: View3D ▸ Sidebar ▸ Atelier, and the same in the Image and Shader editors."""
from __future__ import annotations

import textwrap

import bpy

from . import jobs, previews, provenance, worker


def status_lines() -> list[tuple[str, str]]:
    """(icon, text) lines of the connection and the last outcome: what the panel shows."""
    w = worker.get()
    lines = []
    if w.info:
        caps = w.info.get("capabilities", {})
        lines.append(("CHECKMARK", f"Atelier {w.info.get('engine', '?')} on {w.info.get('device', '?')}"))
        lines.append(("INFO", f"{len(caps.get('ops', {}))} ops · kinds: {', '.join(caps.get('kinds', []))}"))
    else:
        lines.append(("UNLINKED", f"Engine: {w.status}"))
    if jobs.state.error:
        lines.append(("ERROR", jobs.state.error))
    elif w.error:
        lines.append(("ERROR", w.error))
    elif jobs.state.message:
        lines.append(("INFO", jobs.state.message))
    return lines


def _wrapped(layout, icon: str, text: str, width: int) -> None:
    col = layout.column(align=True)
    for i, line in enumerate(textwrap.wrap(text, max(20, width)) or [""]):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")


def _chars(context) -> int:
    region = getattr(context, "region", None)
    return int(region.width / 7) if region else 60


def draw_engine(layout, context) -> None:
    box = layout.box()
    for icon, text in status_lines():
        _wrapped(box, icon, text, _chars(context))
    row = box.row(align=True)
    row.operator("atelier.connect", icon="LINKED")
    row.operator("atelier.engine_start", text="Start", icon="PLAY")
    row.operator("atelier.engine_stop", text="Stop", icon="SNAP_FACE")
    row.operator("atelier.engine_restart", text="Restart", icon="FILE_REFRESH")
    box.operator("atelier.release_memory", icon="TRASH")


def draw_jobs(layout, context) -> None:
    active = worker.get().active_jobs()
    if not active:
        return
    box = layout.box()
    for i, job in enumerate(active):
        row = box.row(align=True)
        text = f"{job.label}: {job.message or job.state}"
        if hasattr(row, "progress"):  # Blender 4.0+
            row.progress(factor=job.progress, type="BAR", text=text)
        else:
            row.label(text=f"{text} {job.progress:.0%}")
        row.operator("atelier.cancel", text="", icon="X").index = i
        icon = previews.icon(job)
        if icon:
            box.template_icon(icon_value=icon, scale=6.0)
    if len(active) > 1:
        box.operator("atelier.cancel", text="Cancel all", icon="CANCEL").index = -1


def _default_model_hint(layout, s, kind: str) -> None:
    """What an empty Model field stands for, so the choice is never a surprise."""
    if getattr(s, f"{kind}_model").strip() or not worker.get().info:
        return
    name = worker.default_model(worker.get().models, kind, getattr(s, f"last_{kind}_model"))
    layout.label(text=f"Using {name}" if name else f"No finished {kind} model yet", icon="INFO")


def draw_texture(layout, context) -> None:
    s = context.scene.atelier
    runtime = context.window_manager.atelier
    box = layout.box()
    box.label(text="Texture", icon="TEXTURE")
    box.prop_search(s, "texture_model", runtime, "texture_models", text="Model")
    _default_model_hint(box, s, "texture")
    row = box.row(align=True)
    row.prop(s, "texture_width")
    row.prop(s, "texture_height")
    row = box.row(align=True)
    row.prop(s, "texture_seed")
    row.operator("atelier.randomize_seed", text="", icon="FILE_REFRESH").prop = "texture_seed"
    box.prop(s, "texture_exemplar")
    row = box.row(align=True)
    row.prop(s, "tileable")
    row.prop(s, "pbr")
    if s.pbr:
        box.prop(s, "normal_strength")
    box.prop(s, "texture_scale")
    box.prop(s, "texture_target")
    box.prop(s, "texture_all_selected")
    box.operator("atelier.texture_generate", icon="SHADING_TEXTURE")
    row = box.row(align=True)
    row.prop(s, "texture_variations")
    row.operator("atelier.texture_variations", text="Variations")
    row = box.row(align=True)
    row.prop(s, "morph_seed", text="Into")
    row.prop(s, "morph_exemplar", text="Exemplar")
    row.operator("atelier.texture_morph", text="Morph")


def draw_shape(layout, context) -> None:
    s = context.scene.atelier
    runtime = context.window_manager.atelier
    box = layout.box()
    box.label(text="Shape", icon="MESH_ICOSPHERE")
    box.prop_search(s, "shape_model", runtime, "shape_models", text="Model")
    _default_model_hint(box, s, "shape")
    row = box.row(align=True)
    row.prop(s, "shape_seed")
    row.operator("atelier.randomize_seed", text="", icon="FILE_REFRESH").prop = "shape_seed"
    row = box.row(align=True)
    row.prop(s, "shape_count")
    row.prop(s, "shape_smooth")
    box.prop(s, "shape_temperature")
    box.prop(s, "shape_layout", expand=True)
    box.operator("atelier.shape_generate", icon="MESH_MONKEY")
    sub = box.box()
    sub.prop(s, "interp_source", expand=True)
    if s.interp_source == "SEEDS":
        sub.prop(s, "interp_seed_b")
    row = sub.row(align=True)
    row.prop(s, "interp_steps")
    row.operator("atelier.shape_interpolate", text="Interpolate")
    sub.prop(s, "interp_t", slider=True)
    sub = box.box()
    row = sub.row(align=True)
    row.prop(s, "shape_variations")
    row.prop(s, "spread")
    sub.operator("atelier.shape_variations", text="Variations of Selected")


def draw_train(layout, context) -> None:
    s = context.scene.atelier
    box = layout.box()
    box.label(text="Train", icon="MOD_BUILD")
    box.prop(s, "train_name")
    row = box.row(align=True)
    row.prop(s, "train_steps")
    row.prop(s, "train_minutes")
    box.prop(s, "train_config")
    box.prop(s, "train_detach")
    box.template_ID(s, "train_image", open="image.open")
    box.prop(s, "train_image_path")
    box.operator("atelier.train_texture", icon="TEXTURE")
    box.operator("atelier.train_shape", text="Train Shape Model on Selected", icon="MESH_DATA")


def draw_history(layout, context) -> None:
    s = context.scene.atelier
    box = layout.box()
    row = box.row()
    row.label(text="History", icon="TIME")
    row.operator("atelier.history_clear", text="", icon="TRASH")
    obj = context.active_object
    if provenance.of_object(obj) is not None:
        box.operator("atelier.regenerate", text=f"Regenerate {obj.name}", icon="RECOVER_LAST")
    box.template_list("ATELIER_UL_history", "", s, "history", s, "history_index", rows=5)


class ATELIER_UL_history(bpy.types.UIList):
    """Generations, newest first, each with a thumbnail (a texture's image; a shape's icon)."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        blocks = bpy.data.images if item.thumbnail_kind == "IMAGE" else bpy.data.objects
        block = blocks.get(item.thumbnail)
        row = layout.row(align=True)
        if item.thumbnail_kind == "IMAGE" and block is not None:
            row.label(text=item.label, icon_value=layout.icon(block))
        else:
            row.label(text=item.label, icon="TEXTURE" if item.op.startswith("texture.") else "MESH_ICOSPHERE")
        row.operator("atelier.history_recall", text="", icon="RECOVER_LAST", emboss=False).index = index

    def filter_items(self, context, data, propname):
        items = getattr(data, propname)
        flags = [self.bitflag_filter_item] * len(items)
        if self.filter_name:
            flags = [self.bitflag_filter_item if self.filter_name.lower() in item.label.lower() else 0
                     for item in items]
        return flags, [len(items) - 1 - i for i in range(len(items))]  # newest first


class _Sidebar:
    bl_region_type = "UI"
    bl_category = "Atelier"
    bl_label = "Atelier"
    sections = (draw_engine, draw_jobs, draw_texture, draw_train, draw_history)

    def draw(self, context):
        for section in self.sections:
            section(self.layout, context)
        if worker.get().busy():
            jobs.ensure_timer()  # keep the panel live while work runs


class ATELIER_PT_view3d(_Sidebar, bpy.types.Panel):
    bl_idname = "ATELIER_PT_view3d"
    bl_space_type = "VIEW_3D"
    sections = (draw_engine, draw_jobs, draw_texture, draw_shape, draw_train, draw_history)


class ATELIER_PT_image(_Sidebar, bpy.types.Panel):
    bl_idname = "ATELIER_PT_image"
    bl_space_type = "IMAGE_EDITOR"


class ATELIER_PT_shader(_Sidebar, bpy.types.Panel):
    bl_idname = "ATELIER_PT_shader"
    bl_space_type = "NODE_EDITOR"

    @classmethod
    def poll(cls, context):
        return getattr(context.space_data, "tree_type", "") == "ShaderNodeTree"


CLASSES = (ATELIER_UL_history, ATELIER_PT_view3d, ATELIER_PT_image, ATELIER_PT_shader)
