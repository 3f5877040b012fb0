"""Blender add-on benchmark: operator call -> material in place, main-thread apply time, register time.

    .venv/bin/python bench/blender_bench.py [--sizes 1024 2048] [--repeats 3]

Needs .venv-blender (`bash .ci/setup.sh --test`). Starts an engine, uses the texture model
that ships with Atelier if there is one (else trains a tiny one for two steps and says so),
builds and installs the extension zip into the real `bpy` module, and measures:

- operator call -> material on the object, through the UI's path: the operator returns at
  once, and the timer's `pump()` (called here by hand: background mode has no timers)
  applies the result when it lands;
- main-thread time inside that apply (goal <= 50 ms at 2048²), the rest being the engine's
  work and the worker thread's PNG encoding, which never block Blender;
- add-on register time (enable; goal <= 100 ms);
- click -> first preview at 1024² (goal <= 0.5 s): from the operator call until the job's first
  preview (the engine's first look, sent with its first progress) is loaded in the panel's
  preview collection, as the timer's pump() loads it;
- cancel latency at 4096²: Cancel pressed once the job shows progress, until the job has ended
  (goal <= 1 s).

Peers in the same run, straight through the client: the same texture.generate (engine time plus
transfer), so "overhead" is what the add-on adds on top of the engine on this machine; the time
to its first preview event; and Cancel at 4096² to the engine's "cancelled".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLENDER_PYTHON = REPO / ".venv-blender" / "bin" / "python"
MODULE = "bl_ext.user_default.atelier"
TINY = dict(channels=3, g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)


def inside_blender(config: dict) -> dict:
    """Runs in .venv-blender's bpy."""
    import bpy  # noqa: F401  (first: puts addon_utils on the path)

    import addon_utils

    assert bpy.ops.extensions.package_install_files(filepath=config["zip"], repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    register = []
    for _ in range(7):
        addon_utils.disable(MODULE)
        started = time.perf_counter()
        addon_utils.enable(MODULE)
        register.append(time.perf_counter() - started)
    addon = sys.modules[MODULE]
    module_register = []
    for _ in range(7):
        addon.unregister()
        started = time.perf_counter()
        addon.register()
        module_register.append(time.perf_counter() - started)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.use_engine_json, prefs.host, prefs.port, prefs.token_file = False, config["host"], config["port"], \
        config["token_file"]
    assert bpy.ops.atelier.connect(blocking=True) == {"FINISHED"}
    cube = bpy.data.objects["Cube"]
    bpy.context.view_layer.objects.active = cube
    s = bpy.context.scene.atelier
    s.texture_model = config["model"]
    out = {"register_ms": [1000 * t for t in register], "module_register_ms": [1000 * t for t in module_register],
           "sizes": {}}
    for size in config["sizes"]:
        for pbr in (False, True):
            rows = []
            for seed in range(config["repeats"]):
                s.texture_width = s.texture_height = size
                s.texture_seed, s.pbr = seed, pbr
                before = cube.active_material
                addon.jobs.state.apply_seconds.clear()
                started = time.perf_counter()
                assert bpy.ops.atelier.texture_generate() == {"FINISHED"}
                returned = time.perf_counter() - started
                pumps = []
                while cube.active_material is before:
                    t = time.perf_counter()
                    addon.jobs.pump(undo=True)
                    pumps.append(time.perf_counter() - t)
                    job = addon.jobs.state.last_job
                    if job is not None and job.state == "failed":
                        raise RuntimeError(job.error)
                    time.sleep(0.005)
                total = time.perf_counter() - started
                job = addon.jobs.state.last_job
                rows.append({"total_s": total, "operator_returned_ms": 1000 * returned,
                             "apply_ms": 1000 * addon.jobs.state.apply_seconds[-1],
                             "longest_pump_ms": 1000 * max(pumps),
                             "engine_and_worker_s": job.finished_at - job.started})
            out["sizes"][f"{size}{' pbr' if pbr else ''}"] = rows
    out["first_preview"] = [first_preview(addon, s, cube, config["preview_size"], 100 + seed)
                            for seed in range(config["repeats"])]
    out["cancel_s"] = [cancel_latency(addon, s, 4096, seed) for seed in range(config["repeats"])]
    addon_utils.disable(MODULE)
    return out


def first_preview(addon, settings, obj, size: int, seed: int) -> dict:
    """Seconds from the operator call to the job's first preview in the panel's preview collection
    (loaded by pump(), as the UI's timer does), and on to the material on the object."""
    import bpy

    settings.texture_width = settings.texture_height = size
    settings.texture_seed, settings.pbr = seed, False
    before = obj.active_material
    collection = addon.previews._collection
    started = time.perf_counter()
    assert bpy.ops.atelier.texture_generate() == {"FINISHED"}
    job = addon.worker.get().active_jobs()[-1]
    preview = None
    while obj.active_material is before:
        addon.jobs.pump(undo=True)
        if preview is None and any(k.startswith(f"{id(job)}-") for k in collection.keys()):
            preview = time.perf_counter() - started
        if job.state == "failed":
            raise RuntimeError(job.error)
        time.sleep(0.005)
    if preview is None:
        raise RuntimeError(f"no preview reached the panel before the material landed ({size}²)")
    return {"preview_s": preview, "material_s": time.perf_counter() - started}


def cancel_latency(addon, settings, size: int, seed: int) -> float:
    """Seconds from Cancel to the job's end, for a texture of size² cancelled once it shows progress."""
    import bpy

    settings.texture_width = settings.texture_height = size
    settings.texture_seed, settings.pbr = seed, False
    assert bpy.ops.atelier.texture_generate() == {"FINISHED"}
    job = addon.worker.get().active_jobs()[-1]  # (jobs.state.last_job is the last one that finished)
    while job.progress <= 0.05 and not job.finished:
        addon.jobs.pump(undo=True)
        time.sleep(0.005)
    started = time.perf_counter()
    assert bpy.ops.atelier.cancel() == {"FINISHED"}
    while not job.finished:
        addon.jobs.pump(undo=True)
        time.sleep(0.005)
    assert job.state == "cancelled", job.state
    return time.perf_counter() - started


def direct_first_preview(client, model: str, size: int, seed: int) -> dict:
    """Peer of first_preview: request -> the first progress event with a preview, and -> result."""
    seen: list[float] = []
    started = time.perf_counter()
    client.call("texture.generate", {"model": model, "width": size, "height": size, "seed": seed},
                on_progress=lambda f, msg, preview: preview is not None and not seen and
                seen.append(time.perf_counter() - started), timeout=600)
    if not seen:
        raise RuntimeError(f"texture.generate at {size}² sent no preview")
    return {"preview_s": seen[0], "result_s": time.perf_counter() - started}


def direct_cancel_latency(client, model: str, size: int, seed: int) -> float:
    """Peer of cancel_latency: cancel once progress passes 5 %, until the engine answers "cancelled"."""
    import threading

    from engine.client import EngineError

    going = threading.Event()
    request = client.submit("texture.generate", {"model": model, "width": size, "height": size, "seed": seed},
                            on_progress=lambda f, msg, preview: f > 0.05 and going.set())
    if not going.wait(600):
        raise RuntimeError("no progress past 5 %")
    started = time.perf_counter()
    request.cancel()
    try:
        request.result(timeout=60)
    except EngineError as e:
        if e.code != "cancelled":
            raise
    else:
        raise RuntimeError(f"a {size}² texture finished before its cancel")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preview-size", type=int, default=1024, help="texture side for click -> first preview")
    parser.add_argument("--model", default="", help="texture model (default: a shipped one, texture-default "
                        "first)")
    args = parser.parse_args()
    if not BLENDER_PYTHON.exists():
        print("bench/blender_bench.py needs .venv-blender: run `bash .ci/setup.sh --test`", file=sys.stderr)
        return 1
    sys.path.insert(0, str(REPO))
    from engine.cli.demo import start_engine
    from engine.client import Client

    with tempfile.TemporaryDirectory(prefix="atelier-blender-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "state").mkdir()
        # Its own models folder: the bench never writes into the user's; shipped models still load.
        process, ready = start_engine("cpu", tmp / "state", {"ATELIER_MODELS_DIR": str(tmp / "models")})
        try:
            client = Client(ready["host"], ready["port"], token_file=ready["token_file"], name="blender-bench")
            shipped = [m["name"] for m in client.call("models.list")["models"]
                       if m.get("kind") == "texture" and m.get("builtin")]
            if args.model:
                model, which = args.model, f"{args.model}{' (ships with Atelier)' if args.model in shipped else ''}"
            elif shipped:
                model = "texture-default" if "texture-default" in shipped else shipped[0]
                which = f"{model} (ships with Atelier)"
            else:
                model = "bench-tiny-texture"
                client.call("train", {"kind": "texture", "name": model, "data": {"images": "gravel"},
                                      "model": TINY, "train": {"steps": 2, "batch_size": 2}}, timeout=600)
                which = f"{model} (no texture model ships yet: a tiny one, trained 2 steps)"
            direct = {}
            for size in args.sizes:
                for pbr in (False, True):
                    times = []
                    for seed in range(args.repeats):
                        started = time.perf_counter()
                        client.call("texture.generate", {"model": model, "width": size, "height": size,
                                                         "seed": seed, "pbr": pbr}, timeout=600)
                        times.append(time.perf_counter() - started)
                    direct[f"{size}{' pbr' if pbr else ''}"] = statistics.median(times)
            direct_preview = [direct_first_preview(client, model, args.preview_size, 100 + seed)
                              for seed in range(args.repeats)]
            direct_cancel = [direct_cancel_latency(client, model, 4096, seed) for seed in range(args.repeats)]
            client.close()
            dist = tmp / "dist"
            zip_path = subprocess.run([sys.executable, str(REPO / "blender_addon" / "build.py"), "--out", str(dist)],
                                      capture_output=True, text=True, check=True).stdout.strip()
            config = {"zip": zip_path, "host": ready["host"], "port": ready["port"],
                      "token_file": ready["token_file"], "model": model, "sizes": args.sizes,
                      "repeats": args.repeats, "preview_size": args.preview_size}
            (tmp / "config.json").write_text(json.dumps(config))
            env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp / "blender-user")}
            done = subprocess.run([str(BLENDER_PYTHON), __file__, "--inside", str(tmp / "config.json")],
                                  capture_output=True, text=True, env=env, timeout=1800)
            line = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")]
            if done.returncode != 0 or not line:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                return 1
            inside = json.loads(line[-1][6:])
        finally:
            process.terminate()
            process.wait(timeout=30)
    cpu = platform.processor() or platform.machine()
    print(f"machine: {platform.node()} {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"Blender (bpy) in .venv-blender; engine on CPU; model {which}")
    med = statistics.median
    print(f"add-on register (enable): median {med(inside['register_ms']):.1f} ms "
          f"(register() alone {med(inside['module_register_ms']):.2f} ms); goal <= 100 ms")
    print(f"{'texture':>10} | {'call->material s':>16} | {'engine direct s':>15} | {'overhead s':>10} | "
          f"{'apply (main) ms':>15} | {'longest pump ms':>15} | {'op returns ms':>13}")
    for key, rows in inside["sizes"].items():
        total = med(r["total_s"] for r in rows)
        print(f"{key:>10} | {total:16.3f} | {direct[key]:15.3f} | {total - direct[key]:10.3f} | "
              f"{med(r['apply_ms'] for r in rows):15.1f} | {max(r['longest_pump_ms'] for r in rows):15.1f} | "
              f"{med(r['operator_returned_ms'] for r in rows):13.2f}")
    print("goal: main-thread apply <= 50 ms at 2048²")
    looks = inside["first_preview"]
    print(f"click -> first preview in the panel at {args.preview_size}²: median "
          f"{med(r['preview_s'] for r in looks):.3f} s, max {max(r['preview_s'] for r in looks):.3f} s "
          f"(material {med(r['material_s'] for r in looks):.3f} s); engine direct, request -> preview event: "
          f"median {med(r['preview_s'] for r in direct_preview):.3f} s (result "
          f"{med(r['result_s'] for r in direct_preview):.3f} s); goal <= 0.5 s")
    cancels = inside["cancel_s"]
    print(f"cancel at 4096² (after the first progress): median {med(cancels):.3f} s, max {max(cancels):.3f} s; "
          f"engine direct median {med(direct_cancel):.3f} s, max {max(direct_cancel):.3f} s; goal <= 1 s")
    print("raw: " + json.dumps({"inside": inside, "direct": direct, "direct_preview": direct_preview,
                                "direct_cancel": direct_cancel}))
    return 0


if __name__ == "__main__":
    if "--inside" in sys.argv:
        result = inside_blender(json.loads(Path(sys.argv[-1]).read_text()))
        print("BENCH " + json.dumps(result), flush=True)
        sys.exit(0)
    sys.exit(main())
