"""The main thread's side of jobs: send them, and apply them when they finish.

In the UI a `bpy.app.timers` callback (`pump`) collects finished jobs, applies each result
as one undo step and redraws the panels. Timers never fire in background mode, so blocking
operators (and tests) call `run(..., blocking=True)` or `pump()` themselves.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import bpy

from . import preferences, previews, worker
from .worker import Job

HISTORY_LIMIT = 50
POLL_SECONDS = 0.1


@dataclass
class PanelState:
    """What the panel shows besides the jobs: the last error and the last outcome."""

    error: str = ""
    message: str = ""
    last_job: Job | None = None
    apply_seconds: list[float] = field(default_factory=list)  # main-thread time of each apply, for the bench


state = PanelState()


def run(context, job: Job, blocking: bool = False, timeout: float = 600.0) -> Job:
    state.error = ""
    worker.get().submit(job, preferences.settings(context))
    if blocking:
        if not job.done_event.wait(timeout):
            worker.get().cancel(job)
            job.done_event.wait(30)
        pump(undo=False)
    else:
        ensure_timer()
    return job


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=POLL_SECONDS)


def _timer() -> float | None:
    keep = pump(undo=True)
    return POLL_SECONDS if keep else None


def pump(undo: bool = False) -> bool:
    """Apply every finished job; True while jobs are still running."""
    w = worker.get()
    for job in w.take_finished():
        finish(job, undo)
    for job in w.active_jobs():  # load new progress previews here, not while drawing
        previews.icon(job)
    sync_models()
    redraw()
    return w.busy()


def finish(job: Job, undo: bool = False) -> None:
    state.last_job = job
    previews.forget(job)
    if job.state == "done" and job.on_result is not None and not job.applied:
        started = time.perf_counter()
        try:
            created = job.on_result(job) or []
        except Exception as e:  # shown in the panel; apply() already removed what it made
            job.state, job.error = "failed", f"could not place the result in Blender: {e}"
        else:
            job.applied = True
            state.apply_seconds.append(time.perf_counter() - started)
            job.context["created"] = created
            record_history(job, created)
            state.message = f"{job.label}: made {', '.join(created[:3])}{' …' if len(created) > 3 else ''}"
            warn = job.context.get("expect_hash")
            got = ((job.value or {}).get("provenance") or {}).get("model_hash")
            if warn and got and warn != got:
                state.message += f" (the model changed since: hash {warn[:8]} is now {got[:8]}; results differ)"
            for warning in job.context.get("warnings", []):
                state.message += f". Note: {warning}"
    elif job.state == "done":
        state.message = f"{job.label}: done"
        if job.op == "train":  # what training found in the data (an exemplar shrunk, a short run)
            value = job.value if isinstance(job.value, dict) else {}
            for note in value.get("notes", []):
                state.message += f". Note: {note}"
            if value.get("warning"):
                state.message += f". Warning: {value['warning']}"
    group = job.context.get("undo_group")  # several jobs of one click: one undo step, at the last
    if group is not None:
        group["left"] -= 1
        group["applied"] = group.get("applied", False) or job.applied
    if undo and (job.applied if group is None else group["left"] == 0 and group["applied"]):
        try:
            bpy.ops.ed.undo_push(message=f"Atelier: {job.label if group is None else group['label']}")
        except RuntimeError:
            pass
    if job.state == "failed":
        state.error = f"{job.label} failed: {job.error}"
    elif job.state == "cancelled":
        state.message = f"{job.label}: cancelled"


def record_history(job: Job, created: list[str]) -> None:
    value = job.value if isinstance(job.value, dict) else {}
    prov = value.get("provenance")
    if not prov:
        return
    scene = bpy.context.scene
    history = scene.atelier.history
    item = history.add()
    item.label = history_label(prov, job)
    item.op = job.op
    item.provenance = json.dumps({**prov, "inputs": job.context.get("inputs")}, sort_keys=True)
    item.created = "\n".join(created)
    texture = job.op.startswith("texture.")
    # The colour image for a texture (the material comes first in `created`), the first object for shapes.
    item.thumbnail = (created[1] if texture and len(created) > 1 else created[0]) if created else ""
    item.thumbnail_kind = "IMAGE" if texture else "OBJECT"
    while len(history) > HISTORY_LIMIT:
        history.remove(0)
    scene.atelier.history_index = len(history) - 1


OP_WORDS = {"texture.generate": "Texture", "texture.morph": "Morph", "shape.sample": "Shape",
            "shape.interpolate": "Between", "shape.variations": "Variations"}


def history_label(prov: dict, job: Job) -> str:
    """What the history list says of a generation: what, from which model, with which seed."""
    params = prov.get("params") or {}
    what = OP_WORDS.get(job.op, job.label)
    if job.op == "texture.morph":
        what += f" {params.get('seed_a')}→{params.get('seed_b')}"
    elif "seed" in params and params.get("vertices") is None:
        what += f" seed {params['seed']}"
    if job.op.startswith("texture.") and params.get("width"):
        what += f" · {params['width']}×{params.get('height') or params['width']}"
    inputs = [name for name in (job.context.get("inputs") or {}).values() if name]
    if inputs:
        what += f" of {' and '.join(inputs)}"
    return f"{what} · {prov.get('model', '?')}"


def sync_models() -> None:
    """Copy the engine's model list into the window manager for the model pickers."""
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None or not hasattr(wm, "atelier"):
        return
    models = worker.get().models
    runtime = wm.atelier
    if [(m.name, m.partial) for m in runtime.models] == [(m.get("name"), bool(m.get("partial"))) for m in models]:
        return
    for collection in (runtime.models, runtime.texture_models, runtime.shape_models):
        collection.clear()
    for m in models:
        # The pickers offer finished models only; an unfinished training run stays in `models`.
        pickers = [] if m.get("partial") or m.get("error") else [getattr(runtime, f"{m.get('kind')}_models", None)]
        for collection in (runtime.models, *pickers):
            if collection is not None:
                item = collection.add()
                item.name, item.kind = m.get("name", ""), m.get("kind", "")
                item.content_hash = m.get("content_hash") or ""
                item.partial = bool(m.get("partial"))


def redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR", "NODE_EDITOR", "PREFERENCES"):
                area.tag_redraw()
