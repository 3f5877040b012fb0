"""Operators: each builds a request from the panel's settings and hands it to the worker.

Every generating operator has a `blocking` option (off in the UI) for scripts and headless
use: it waits for the engine and places the result before returning, as one undo step.
"""
from __future__ import annotations

import json
import random

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import apply, jobs, preferences, provenance, worker
from .props import MAX_SEED
from .worker import Job


class _Blocking:
    blocking: BoolProperty(name="Wait", default=False, options={"SKIP_SAVE"},
                           description="Wait for the engine and place the result before returning (scripts)")

    def submit(self, context, job: Job) -> set[str]:
        job = jobs.run(context, job, blocking=self.blocking)
        if self.blocking and job.state != "done":
            self.report({"ERROR"}, jobs.state.error or job.error or job.state)
            return {"CANCELLED"}
        for warning in job.context.get("warnings", []) if self.blocking else []:
            self.report({"WARNING"}, warning)
        return {"FINISHED"}


def _settings(context):
    return context.scene.atelier


def _fail(op, message: str) -> set[str]:
    """Say why nothing was made: in the panel and in the operator's report."""
    jobs.state.error = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


class _NeedsEngine:
    """Greyed out, with the reason as its tooltip, while the engine is not connected (unless the
    preferences start it when needed)."""

    @classmethod
    def poll(cls, context):
        prefs = preferences.get(context)
        if worker.connected() or (prefs is not None and prefs.autostart):
            return True
        cls.poll_message_set("Not connected to the Atelier engine: press Connect or Start at the top of the "
                             "Atelier panel")
        return False


def texture_target_problem(context) -> str:
    """Why the active object cannot take a texture, or "" when it can."""
    obj = context.active_object
    if obj is None:
        return "Select a mesh to put the texture on: nothing is active"
    if obj.type != "MESH":
        kind = obj.type.replace("_", " ").lower() if obj.type != "EMPTY" else "an empty"
        kind = kind if kind.startswith("an ") else f"a {kind}"
        return f"Select a mesh to put the texture on: {obj.name!r} is {kind}, which cannot wear a material"
    return ""


class _NeedsMeshTarget(_NeedsEngine):
    @classmethod
    def poll(cls, context):
        if not super().poll(context):
            return False
        problem = texture_target_problem(context)
        if problem:
            cls.poll_message_set(problem)
            return False
        return True


# ---- engine -----------------------------------------------------------------------------------
class ATELIER_OT_connect(bpy.types.Operator):
    """Connect to the Atelier engine and read its models"""
    bl_idname = "atelier.connect"
    bl_label = "Connect"
    blocking: BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        return _engine_task(self, context, "connect")


class ATELIER_OT_engine_start(bpy.types.Operator):
    """Start the Atelier engine (with the Python or command from the preferences)"""
    bl_idname = "atelier.engine_start"
    bl_label = "Start Engine"
    blocking: BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        return _engine_task(self, context, "start")


class ATELIER_OT_engine_stop(bpy.types.Operator):
    """Stop the Atelier engine, freeing its (GPU) memory"""
    bl_idname = "atelier.engine_stop"
    bl_label = "Stop Engine"
    blocking: BoolProperty(default=False, options={"SKIP_SAVE"})

    def invoke(self, context, event):
        if worker.get().owns_engine():
            return self.execute(context)
        # Started in a terminal, by another Blender or for the MIDI bridge: ask before stopping it.
        message = ("This Blender did not start the engine: something else (a terminal, another Blender, the MIDI "
                   "bridge) may be using it. Stop it anyway?")
        try:
            return context.window_manager.invoke_confirm(self, event, title="Stop the Atelier engine?",
                                                         message=message, confirm_text="Stop", icon="WARNING")
        except TypeError:  # Blender before 4.1: a plain confirmation
            return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        return _engine_task(self, context, "stop")


class ATELIER_OT_engine_restart(bpy.types.Operator):
    """Restart the Atelier engine: frees all its GPU memory"""
    bl_idname = "atelier.engine_restart"
    bl_label = "Restart Engine"
    blocking: BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        return _engine_task(self, context, "restart")


def _engine_task(op, context, task: str) -> set[str]:
    w = worker.get()
    settings = preferences.settings(context)
    jobs.state.error = ""
    {"connect": lambda: w.connect(settings, start=settings.autostart), "start": lambda: w.start_engine(settings),
     "stop": lambda: w.stop_engine(settings), "restart": lambda: w.restart_engine(settings)}[task]()
    if op.blocking:
        w.wait_idle(settings.start_timeout + 30)
        jobs.pump()
        if w.error and task != "stop":
            jobs.state.error = w.error
            op.report({"ERROR"}, w.error)
            return {"CANCELLED"}
    else:
        jobs.ensure_timer()
    return {"FINISHED"}


class ATELIER_OT_release_memory(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Unload every model from the engine, freeing its (GPU) memory"""
    bl_idname = "atelier.release_memory"
    bl_label = "Release Memory"

    def execute(self, context):
        return self.submit(context, Job("models.unload", {}, "Release memory"))


class ATELIER_OT_randomize_seed(bpy.types.Operator):
    """Pick a random seed"""
    bl_idname = "atelier.randomize_seed"
    bl_label = "Random Seed"
    bl_options = {"REGISTER", "UNDO"}
    prop: StringProperty(default="texture_seed", options={"SKIP_SAVE"})

    def execute(self, context):
        setattr(_settings(context), self.prop, random.randint(0, MAX_SEED))
        return {"FINISHED"}


class ATELIER_OT_cancel(bpy.types.Operator):
    """Cancel running Atelier jobs"""
    bl_idname = "atelier.cancel"
    bl_label = "Cancel"
    index: IntProperty(default=-1, options={"SKIP_SAVE"}, description="Job to cancel; -1: all")

    def execute(self, context):
        w = worker.get()
        active = w.active_jobs()
        for i, job in enumerate(active):
            if self.index in (-1, i):
                w.cancel(job)
        return {"FINISHED"}


# ---- texture ----------------------------------------------------------------------------------
def texture_job(context, op: str, params: dict, label: str, assign: bool = True) -> Job:
    s = _settings(context)
    obj = context.active_object
    others = [o.name for o in _selected_meshes(context) if o != obj] if s.texture_all_selected else []
    return Job(op, {"model": s.texture_model or None, **params}, label, on_result=apply.apply_texture,
               prepare=apply.prepare_texture, model_kind="texture",
               context={"object": obj.name if obj else "", "target": s.texture_target, "assign": assign,
                        "last_model": s.last_texture_model, "scale": s.texture_scale, "also": others})


def _texture_size(s) -> dict:
    return {"width": s.texture_width, "height": s.texture_height, "tileable": s.tileable}


def _exemplars(s, **fields: str) -> dict:
    """The exemplar params the user set (-1 leaves the choice to the seed)."""
    return {param: getattr(s, prop) for param, prop in fields.items() if getattr(s, prop) >= 0}


class ATELIER_OT_texture_generate(_NeedsMeshTarget, bpy.types.Operator, _Blocking):
    """Generate a seamless texture and put it in a material on the active object"""
    bl_idname = "atelier.texture_generate"
    bl_label = "Generate Texture"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = _settings(context)
        if texture_target_problem(context):
            return _fail(self, texture_target_problem(context))
        params = {**_texture_size(s), "seed": s.texture_seed, "pbr": s.pbr, "normal_strength": s.normal_strength,
                  **_exemplars(s, exemplar="texture_exemplar")}
        return self.submit(context, texture_job(context, "texture.generate", params, f"Texture seed {s.texture_seed}"))


class ATELIER_OT_texture_variations(_NeedsMeshTarget, bpy.types.Operator, _Blocking):
    """Generate several textures (consecutive seeds) as extra materials on the active object"""
    bl_idname = "atelier.texture_variations"
    bl_label = "Texture Variations"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = _settings(context)
        if texture_target_problem(context):
            return _fail(self, texture_target_problem(context))
        result = {"FINISHED"}
        group = {"left": s.texture_variations, "label": f"{s.texture_variations} texture variations"}
        for i in range(s.texture_variations):
            seed = (s.texture_seed + i) % (MAX_SEED + 1)
            params = {**_texture_size(s), "seed": seed, "pbr": s.pbr, "normal_strength": s.normal_strength,
                      **_exemplars(s, exemplar="texture_exemplar")}
            job = texture_job(context, "texture.generate", params, f"Texture seed {seed}", assign=False)
            job.context["undo_group"] = group  # all of them: one undo step, when the last lands
            result = self.submit(context, job)
            if result != {"FINISHED"}:
                break
        return result


class ATELIER_OT_texture_morph(_NeedsMeshTarget, bpy.types.Operator, _Blocking):
    """One texture that blends the look of Seed into Morph seed across its width (colour only)"""
    bl_idname = "atelier.texture_morph"
    bl_label = "Morph Texture"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = _settings(context)
        if texture_target_problem(context):
            return _fail(self, texture_target_problem(context))
        params = {**_texture_size(s), "seed_a": s.texture_seed, "seed_b": s.morph_seed,
                  **_exemplars(s, exemplar="texture_exemplar", morph_to="morph_exemplar")}
        return self.submit(context, texture_job(context, "texture.morph", params,
                                                f"Morph {s.texture_seed}→{s.morph_seed}"))


# ---- shape ------------------------------------------------------------------------------------
def _mesh_options(s) -> dict:
    return {"smooth": s.shape_smooth}


def shape_job(context, op: str, params: dict, label: str, **ctx) -> Job:
    s = _settings(context)
    ctx.setdefault("location", tuple(context.scene.cursor.location))
    ctx.setdefault("layout", s.shape_layout)
    ctx.setdefault("last_model", s.last_shape_model)
    active = context.view_layer.active_layer_collection.collection  # new objects land here
    ctx.setdefault("collection", "" if active == context.scene.collection else active.name)
    return Job(op, {"model": s.shape_model or None, **params}, label, on_result=apply.apply_meshes,
               model_kind="shape", context=ctx)


def _selected_meshes(context) -> list:
    return [o for o in context.selected_objects if o.type == "MESH"]


class ATELIER_OT_shape_generate(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Generate watertight meshes at the 3D cursor"""
    bl_idname = "atelier.shape_generate"
    bl_label = "Generate Shape"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = _settings(context)
        params = {"seed": s.shape_seed, "count": s.shape_count, "temperature": s.shape_temperature,
                  **_mesh_options(s)}
        return self.submit(context, shape_job(context, "shape.sample", params, f"Shape seed {s.shape_seed}",
                                              name=f"Atelier shape {s.shape_seed}"))


def _interpolation_endpoints(context) -> tuple[dict, dict] | str:
    """(params, inputs) for shape.interpolate, or an error message."""
    s = _settings(context)
    if s.interp_source == "SEEDS":
        return {"seed_a": s.shape_seed, "seed_b": s.interp_seed_b}, {}
    active = context.active_object
    others = [o for o in _selected_meshes(context) if o != active]
    if active is None or active.type != "MESH" or len(others) != 1:
        return "Select exactly two meshes (the active one is the start)"
    params, inputs = {}, {}
    for suffix, obj in (("_a", active), ("_b", others[0])):
        params[f"vertices{suffix}"], params[f"faces{suffix}"] = apply.mesh_arrays(obj, "SHAPE")
        inputs[suffix] = obj.name
    return params, inputs


def _input_frame(inputs: dict | None) -> dict | None:
    """Size and rotation of the input meshes (in the order sent) for the results to keep."""
    objects = [bpy.data.objects.get(name) for _, name in sorted((inputs or {}).items())]
    return apply.shape_frame(*objects) if objects and all(objects) else None


class ATELIER_OT_shape_interpolate(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Shapes between two seeds or two selected meshes, in a row"""
    bl_idname = "atelier.shape_interpolate"
    bl_label = "Interpolate"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = _settings(context)
        endpoints = _interpolation_endpoints(context)
        if isinstance(endpoints, str):
            self.report({"ERROR"}, endpoints)
            jobs.state.error = endpoints
            return {"CANCELLED"}
        params, inputs = endpoints
        params.update(steps=s.interp_steps, **_mesh_options(s))
        return self.submit(context, shape_job(context, "shape.interpolate", params, "Interpolation",
                                              name="Atelier interpolation", inputs=inputs or None,
                                              frame=_input_frame(inputs)))


PREVIEW_NAME = "Atelier interpolation preview"
_preview = {"job": None, "again": False}


def preview_interpolation(context) -> Job | None:
    """The slider's preview: one shape at t, replacing the preview object's mesh. At most one
    request in flight; a slider moved meanwhile asks again when it lands."""
    job = _preview["job"]
    if job is not None and not job.finished:
        _preview["again"] = True
        return None
    s = _settings(context)
    endpoints = _interpolation_endpoints(context)
    if isinstance(endpoints, str):
        jobs.state.error = endpoints
        return None
    params, inputs = endpoints
    # A preview is for the eye while the slider moves: a coarser surface and no UVs come back fastest.
    params.update(t=s.interp_t, **_mesh_options(s), resolution=64, uvs=False)

    def landed(job: Job) -> list[str]:
        made = apply.apply_meshes(job)
        if _preview["again"]:
            _preview["again"] = False
            bpy.app.timers.register(lambda: preview_interpolation(bpy.context) and None, first_interval=0.01)
        return made

    # The preview never touches the selection: the next move needs the same two meshes selected.
    job = shape_job(context, "shape.interpolate", params, f"Preview t={s.interp_t:.2f}", name=PREVIEW_NAME,
                    replace=PREVIEW_NAME, inputs=inputs or None, frame=_input_frame(inputs), keep_selection=True)
    job.on_result = landed
    _preview["job"] = job
    return jobs.run(context, job)


class ATELIER_OT_shape_variations(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Shapes near the active mesh, laid out in a row or grid beside it"""
    bl_idname = "atelier.shape_variations"
    bl_label = "Variations"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not super().poll(context):
            return False
        if context.active_object is None or context.active_object.type != "MESH":
            cls.poll_message_set("Select the mesh to make variations of")
            return False
        return True

    def execute(self, context):
        s = _settings(context)
        source = context.active_object
        vertices, faces = apply.mesh_arrays(source, "SHAPE")
        step = float(max(source.dimensions)) * 1.3 or 2.0
        location = tuple(np.asarray(source.location) + np.array([step, 0.0, 0.0]))
        params = {"vertices": vertices, "faces": faces, "count": s.shape_variations, "seed": s.shape_seed,
                  "spread": s.spread, **_mesh_options(s)}
        return self.submit(context, shape_job(context, "shape.variations", params, f"Variations of {source.name}",
                                              name=f"{source.name} variation", location=location,
                                              inputs={"": source.name}, frame=apply.shape_frame(source)))


# ---- training ---------------------------------------------------------------------------------
def _train_params(s, kind: str, data: dict) -> dict:
    try:
        model = json.loads(s.train_config) if s.train_config.strip() else {}
    except ValueError as e:
        raise ValueError(f"Config is not valid JSON: {e}") from None
    train = {}
    if s.train_steps:
        train["steps"] = s.train_steps
    if s.train_minutes:
        train["minutes"] = s.train_minutes
    return {"kind": kind, "name": s.train_name.strip(), "data": data, "model": model, "train": train,
            "detach": s.train_detach}


class ATELIER_OT_train_shape(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Train a shape model on the selected meshes (sent to the engine)"""
    bl_idname = "atelier.train_shape"
    bl_label = "Train Shape Model"

    def execute(self, context):
        s = _settings(context)
        selected = _selected_meshes(context)
        if not selected:
            jobs.state.error = "Select the meshes to train on"
            self.report({"ERROR"}, jobs.state.error)
            return {"CANCELLED"}
        meshes = []
        for obj in selected:
            vertices, faces = apply.mesh_arrays(obj)
            meshes.append({"name": obj.name, "vertices": vertices, "faces": faces})
        try:
            params = _train_params(s, "shape", {"mesh_arrays": meshes})
        except ValueError as e:
            jobs.state.error = str(e)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        job = Job("train", params, f"Train {params['name']} on {len(meshes)} meshes",
                  context={"sent": [m["name"] for m in meshes]})
        return self.submit(context, job)


class ATELIER_OT_train_texture(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Train a texture model on an image in this file or on disk"""
    bl_idname = "atelier.train_texture"
    bl_label = "Train Texture Model"

    def execute(self, context):
        s = _settings(context)
        image, loaded = s.train_image, None
        if s.train_image_path.strip():  # an image on disk: Blender reads it, the engine gets its pixels
            try:
                image = loaded = bpy.data.images.load(bpy.path.abspath(s.train_image_path), check_existing=False)
            except RuntimeError:
                return self._fail(f"Could not open the image {s.train_image_path!r}")
        if image is None:
            return self._fail("Choose an exemplar image (in this file or on disk)")
        try:
            width, height = image.size
            if not width or not height:
                return self._fail(f"Image {image.name!r} has no pixels")
            pixels = np.empty(width * height * 4, np.float32)
            image.pixels.foreach_get(pixels)
            name = image.name
        finally:
            if loaded is not None:
                bpy.data.images.remove(loaded)
        rgb = np.round(pixels.reshape(height, width, 4)[::-1, :, :3].clip(0, 1) * 255).astype(np.uint8)
        try:
            params = _train_params(s, "texture", {"image_arrays": [{"name": name, "pixels": rgb}]})
        except ValueError as e:
            return self._fail(str(e))
        return self.submit(context, Job("train", params, f"Train {params['name']} on {name}"))

    def _fail(self, message: str) -> set[str]:
        jobs.state.error = message
        self.report({"ERROR"}, message)
        return {"CANCELLED"}


# ---- provenance -------------------------------------------------------------------------------
def regenerate_job(context, record: dict, in_place=None) -> Job | str:
    """A job that makes the result `record` describes again, or why it cannot. A shape made
    again `in_place` (an object) replaces that object's mesh, keeping its name, transform and
    materials; otherwise it is a new object at the 3D cursor."""
    op, params = record.get("op", ""), dict(record.get("params") or {})
    if not op.startswith(("texture.", "shape.")) or not record.get("model"):
        return "Cannot make this again: it was not made by Atelier (or its record is damaged)"
    params["model"] = record["model"]
    inputs = record.get("inputs") or {}
    for suffix, name in inputs.items():
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "MESH":
            return f"Cannot make this again: it was made from the mesh {name!r}, which is no longer in this file"
        params[f"vertices{suffix}"], params[f"faces{suffix}"] = apply.mesh_arrays(obj, "SHAPE")
    label = f"Regenerate {op} ({record['model']})"
    if op.startswith("texture."):
        if texture_target_problem(context):
            return texture_target_problem(context)
        job = texture_job(context, op, params, label)
        job.context["target"] = "NEW"
    elif in_place is not None:
        job = shape_job(context, op, params, f"Regenerate {in_place.name}", only_index=record.get("index", 0),
                        inputs=inputs or None, frame=_input_frame(inputs), replace=in_place.name,
                        keep_selection=True, keep_transform=True)
    else:
        job = shape_job(context, op, params, label, only_index=record.get("index", 0), inputs=inputs or None,
                        name=f"Atelier {op.split('.')[-1]} (regenerated)", frame=_input_frame(inputs))
    job.context["expect_hash"] = record.get("model_hash")
    return job


class ATELIER_OT_regenerate(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Make the active object's mesh or texture again from its Atelier provenance"""
    bl_idname = "atelier.regenerate"
    bl_label = "Regenerate"
    bl_options = {"REGISTER", "UNDO"}
    what: EnumProperty(items=[("AUTO", "Auto", "The mesh if it is Atelier's, else the material"),
                              ("SHAPE", "Mesh", ""), ("TEXTURE", "Texture", "")], default="AUTO",
                       options={"SKIP_SAVE"})

    def execute(self, context):
        record = provenance.of_object(context.active_object, self.what)
        in_place = context.active_object if record and record.get("op", "").startswith("shape.") else None
        job = regenerate_job(context, record, in_place) if record else \
            "The active object was not made by Atelier: there is nothing to make again"
        if isinstance(job, str):
            jobs.state.error = job
            self.report({"ERROR"}, job)
            return {"CANCELLED"}
        return self.submit(context, job)


class ATELIER_OT_history_recall(_NeedsEngine, bpy.types.Operator, _Blocking):
    """Make this history entry again (a texture goes onto the active object, a shape to the cursor)"""
    bl_idname = "atelier.history_recall"
    bl_label = "Recall"
    bl_options = {"REGISTER", "UNDO"}
    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        history = _settings(context).history
        if not -len(history) <= self.index < len(history):
            return {"CANCELLED"}
        record = json.loads(history[self.index].provenance)
        job = regenerate_job(context, record)
        if isinstance(job, str):
            jobs.state.error = job
            self.report({"ERROR"}, job)
            return {"CANCELLED"}
        return self.submit(context, job)


class ATELIER_OT_history_clear(bpy.types.Operator):
    """Forget the history of generations (the datablocks stay)"""
    bl_idname = "atelier.history_clear"
    bl_label = "Clear History"

    def execute(self, context):
        _settings(context).history.clear()
        return {"FINISHED"}


CLASSES = (ATELIER_OT_connect, ATELIER_OT_engine_start, ATELIER_OT_engine_stop, ATELIER_OT_engine_restart,
           ATELIER_OT_release_memory, ATELIER_OT_randomize_seed, ATELIER_OT_cancel,
           ATELIER_OT_texture_generate, ATELIER_OT_texture_variations, ATELIER_OT_texture_morph,
           ATELIER_OT_shape_generate, ATELIER_OT_shape_interpolate, ATELIER_OT_shape_variations,
           ATELIER_OT_train_shape, ATELIER_OT_train_texture, ATELIER_OT_regenerate, ATELIER_OT_history_recall,
           ATELIER_OT_history_clear)
