"""The engine's own ops: health, models, jobs, device check and training.

Each op's `run(engine, context, **params)` (engine: the `engine.server.core.Engine`) returns a JSON-able value (numpy arrays allowed).
Ops marked inline are answered on the I/O loop at once (they must be quick); the server
implements `jobs.watch` itself because it streams another job's events.
"""
from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from typing import Iterator

import torch

from engine import protocol
from engine.kinds import KIND_MODULES, default_model
from engine.ops import Context, JobFailed, Op, Param, Priority
from engine.store.checkpoints import ModelCorrupt, ModelNotFound, check_name


def _models_list(engine, context: Context | None) -> dict:
    models = engine.store.list()
    for model in models:  # what clients use when no model is named (the add-on's empty Model field)
        if model.get("kind") in KIND_MODULES and model.get("name") == default_model(model["kind"]):
            model["default"] = True
    return {"models": models, "loaded": engine.loaded_models()}


def _models_info(engine, context: Context | None, name: str) -> dict:
    try:
        return {"metadata": engine.store.metadata(_name(name)), "builtin": engine.store.is_builtin(name)}
    except ModelNotFound as e:
        raise JobFailed(protocol.NOT_FOUND, str(e)) from None
    except ModelCorrupt as e:
        raise JobFailed(protocol.MODEL_CORRUPT, str(e)) from None


def _models_load(engine, context: Context, name: str) -> dict:
    metadata, _ = engine.model(_name(name))
    return {"model": name, "kind": metadata["kind"], "content_hash": metadata["content_hash"]}


def _models_unload(engine, context: Context, name: str | None) -> dict:
    return {"unloaded": engine.unload(_name(name) if name else None)}


def _models_delete(engine, context: Context, name: str) -> dict:
    engine.unload(_name(name))
    try:
        engine.store.delete(name)
    except ModelNotFound as e:
        raise JobFailed(protocol.NOT_FOUND, str(e)) from None
    except PermissionError as e:
        raise JobFailed(protocol.BAD_PARAMS, str(e)) from None
    return {"deleted": name}


def _jobs_list(engine, context: Context | None) -> dict:
    return {"jobs": [job.summary() for job in engine.scheduler.jobs.values()]}


def _device_benchmark(engine, context: Context, seconds: float, size: int) -> dict:
    """Matrix products on the engine's device for a while: is the GPU in use, and how fast is it?"""
    a = torch.randn(size, size, device=engine.device)
    b = torch.randn(size, size, device=engine.device)
    start, products = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        a = torch.tanh(a @ b)
        products += 1
        if products % 4 == 0:
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            context.progress(elapsed / seconds, f"{products} products of {size}x{size}")
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"device": str(engine.device), "seconds": elapsed, "gflops": 2 * size**3 * products / elapsed / 1e9}


def _train(engine, context: Context, kind: str, name: str, data: dict, model: dict, train: dict,
           resume: bool) -> dict:
    from engine.config import ConfigOutOfBounds, build
    from engine.kinds import kind_module
    from engine.train import distributed
    from engine.train.config import TrainConfig
    from engine.train.trainer import TrainRun, resume_settings
    from engine.train.trainer import train as run_training

    name = _name(name)
    try:
        module = kind_module(kind)
    except KeyError as e:
        raise JobFailed(protocol.BAD_PARAMS, str(e.args[0])) from None
    data = Op(f"train {kind} data", run=None, params=module.DATA_PARAMS).check(data)
    device = distributed.local_device(engine.device)  # under torchrun: this process's GPU
    with _resource_errors(f"train {name}"):  # reading data writes caches too
        try:
            saved_model, saved_train = resume_settings(engine.store, name) if resume else ({}, {})
            model = {**saved_model, **model}
            train = {**getattr(module, "TRAIN_DEFAULTS", {}), **saved_train, **train}
            model_config = build(module.config_class(), model)
            train_config = build(TrainConfig, train)
            # Initial weights from the run's seed: the same request trains the same model whatever
            # this process drew before (a tiny model's 40 steps could collapse or not on that alone).
            torch.manual_seed(train_config.seed)
            objective = module.objective(model_config, data, device)
        except ConfigOutOfBounds as e:
            raise JobFailed(protocol.TOO_LARGE if e.too_large else protocol.BAD_PARAMS, str(e)) from None
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise JobFailed(protocol.BAD_PARAMS, str(e)) from None
    world = distributed.init_from_environment(device)
    run = TrainRun(engine.store, name, kind, device, resume=resume, world=world)
    with _resource_errors(f"train {name}"):
        metadata = run_training(objective, train_config, run, progress=context.progress, check=context.check)
    distributed.leave(world)
    engine.unload(name)  # the next use loads the new weights
    return {"model": name, "step": metadata["step"], "metrics": metadata["metrics"],
            "run_dir": str(engine.store.run_dir(name)), "notes": (metadata.get("data") or {}).get("notes", []),
            **{key: metadata[key] for key in ("kept_step", "stopped_early", "warning") if key in metadata}}


@contextmanager
def _resource_errors(what: str) -> Iterator[None]:
    """A full disk or exhausted memory is the user's to fix, with a code that says which."""
    try:
        yield
    except OSError as e:
        if e.errno not in _DISK_FULL_ERRNOS:
            raise
        raise JobFailed(protocol.DISK_FULL, f"{what}: no space left on the disk to write "
                        f"{e.filename or 'the model'}; free some space and train again (resume=true continues from "
                        "the last checkpoint saved, if any)") from None
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise JobFailed(protocol.TOO_LARGE, f"{what}: out of memory; use a smaller model or batch_size") from None


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _name(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as e:
        raise JobFailed(protocol.BAD_PARAMS, str(e)) from None


_NAME = Param("str", required=True, doc="model name")
_JOB = Param("str", required=True, doc="job id, from jobs.list or a request's progress events")

OPS: list[Op] = [
    Op("ping", lambda engine, context: {"time": time.time()}, inline=True, doc="answer at once: liveness and latency"),
    Op("engine.info", lambda engine, context: {k: v for k, v in engine.hello().items() if k != "type"},
       inline=True, doc="version, device and capabilities"),
    Op("models.list", _models_list, inline=True, doc="every stored model with its kind, metrics and hash"),
    Op("models.info", _models_info, {"name": _NAME}, inline=True, doc="one model's full metadata"),
    Op("jobs.list", _jobs_list, inline=True, doc="queued, running and recently finished jobs of every client"),
    Op("jobs.cancel", None, {"job": _JOB}, inline=True, doc="cancel a detached job, or one of this client's"),
    Op("jobs.watch", None, {"job": _JOB}, inline=True, doc="stream a job's progress, then its result or error"),
    Op("models.load", _models_load, {"name": _NAME}, doc="load a model into memory ahead of use"),
    Op("models.unload", _models_unload, {"name": Param("str", doc="model name; all models when omitted")},
       doc="unload one model or all, freeing (GPU) memory"),
    Op("models.delete", _models_delete, {"name": _NAME}, doc="delete a stored model and its training run"),
    Op("device.benchmark", _device_benchmark,
       {"seconds": Param("float", 2.0, min=0.01, max=600, doc="how long to run"),
        "size": Param("int", 512, min=16, max=8192, doc="matrix side")},
       doc="matrix products on the engine's device, for a while: GFLOP/s"),
    Op("train", _train, {
        "kind": Param("str", required=True, doc="model kind, see engine.info kinds"),
        "name": _NAME,
        "data": Param("dict", {}, doc="training data options of the kind (e.g. images, meshes, midi)"),
        "model": Param("dict", {}, doc="model config values"),
        "train": Param("dict", {}, doc="trainer settings: steps, minutes, batch_size, optimizer, lr, ..."),
        "resume": Param("bool", False, doc="continue from the model's last checkpoint"),
        "detach": Param("bool", False, doc="keep training when this client disconnects"),
    }, priority=Priority.TRAINING, doc="train a model; progress events carry loss and previews"),
]
