"""Atelier for Blender: generated textures and meshes from a local Atelier engine.

The engine runs in its own process; this add-on only talks to it over the local socket
protocol (the stdlib client is vendored in `_vendor`) and turns results into datablocks.
Modules: preferences (where the engine is), props (panel settings), worker (the one thread
doing socket and process work), jobs (applying results on the main thread), apply (results
-> datablocks), provenance (ID properties), operators, panels, previews (progress images as
icons), png (encoder).
"""
from __future__ import annotations

import bpy

from . import jobs, operators, panels, preferences, previews, props, worker

CLASSES = (preferences.AtelierPreferences, *props.CLASSES, *operators.CLASSES, *panels.CLASSES)


def _autostart() -> None:
    prefs = preferences.get()
    if prefs is not None and prefs.autostart:
        worker.get().connect(preferences.settings(), start=True)
        jobs.ensure_timer()


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    props.register()
    previews.register()
    # Preferences are readable only after registering; timers never fire in background mode.
    bpy.app.timers.register(_autostart, first_interval=1.0)


def unregister() -> None:
    for timer in (jobs._timer, _autostart):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    worker.shutdown()
    previews.unregister()
    props.unregister()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
