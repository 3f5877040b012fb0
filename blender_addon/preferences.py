"""Add-on preferences: where the engine is, how to start it, which device to ask for."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ._vendor import paths as engine_paths
from .worker import Settings

DEVICES = [("auto", "Auto", "CUDA, then Apple MPS, then the CPU"), ("cpu", "CPU", ""),
           ("cuda", "CUDA", "An NVIDIA GPU"), ("mps", "MPS", "Apple silicon GPU")]


class AtelierPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    use_engine_json: BoolProperty(
        name="Find running engine", default=True,
        description="Connect to the address a running `atelier serve` recorded (engine.json in its state "
                    "folder); otherwise use the host and port below")
    host: StringProperty(name="Host", default=engine_paths.DEFAULT_HOST,
                         description="Engine address; keep 127.0.0.1 unless you started the engine with --host")
    port: IntProperty(name="Port", default=engine_paths.DEFAULT_PORT, min=1, max=65535)
    token_file: StringProperty(name="Token file", subtype="FILE_PATH", default="",
                               description=f"Empty: the engine's default, {engine_paths.token_path()}")
    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH", default="",
        description="The python of Atelier's virtual environment (e.g. ~/atelier/.venv/bin/python); Start runs "
                    "`python -m engine serve` with it")
    engine_command: StringProperty(
        name="Start command", default="",
        description="Or a whole command line that starts the engine (overrides Engine Python)")
    autostart: BoolProperty(name="Start automatically", default=False,
                            description="Start the engine when Blender needs it and it is not running")
    device: EnumProperty(name="Device", items=DEVICES, default="auto",
                         description="Compute device the engine is started on")

    def draw(self, context):
        layout = self.layout
        col = layout.column(heading="Connection")
        col.prop(self, "use_engine_json")
        row = col.row(align=True)
        row.prop(self, "host")
        row.prop(self, "port")
        col.prop(self, "token_file")
        col = layout.column(heading="Engine process")
        col.prop(self, "engine_python")
        col.prop(self, "engine_command")
        col.prop(self, "device")
        col.prop(self, "autostart")


def get(context=None) -> AtelierPreferences | None:
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def settings(context=None) -> Settings:
    """A snapshot for the worker thread."""
    prefs = get(context)
    if prefs is None:
        return Settings()
    return Settings(host=prefs.host, port=prefs.port, token_file=bpy.path.abspath(prefs.token_file),
                    use_engine_json=prefs.use_engine_json, engine_python=bpy.path.abspath(prefs.engine_python),
                    engine_command=prefs.engine_command, device=prefs.device, autostart=prefs.autostart)
