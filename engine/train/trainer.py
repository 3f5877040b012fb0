"""The shared trainer: one loop for every model kind.

It owns optimisers and the learning-rate schedule, checkpoints (every N steps, at the end,
when cancelled), exact resume, the time budget, progress, previews, evaluation hooks, the
loss curve, and data-parallel training under torchrun. What is specific to a model kind
comes from its `Objective` (engine/train/objective.py).

Sample keys for step s are drawn from a generator seeded with (seed, s), and process r of
N takes keys[r::N]: N processes see exactly the global batch one process would, and a
resumed run sees exactly the batches the interrupted one would have.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from engine.store.checkpoints import ModelStore, load_file, read_metadata, save_file
from engine.train import distributed, plots
from engine.train.config import TrainConfig
from engine.train.objective import Objective

Progress = Callable[[float, str, "np.ndarray | None"], None]
RESUME_FILE = "resume.safetensors"


@dataclass
class TrainRun:
    """Everything that names a run besides the objective."""

    store: ModelStore
    name: str
    kind: str
    device: torch.device
    resume: bool = False
    world: distributed.World = distributed.World()


def train(objective: Objective, cfg: TrainConfig, run: TrainRun, *, progress: Progress | None = None,
          check: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train until the time budget or `cfg.steps`, whichever ends first; return the saved model's metadata.

    `check` is called every step and may raise (e.g. jobs.Cancelled) to stop: the trainer then
    saves a checkpoint and lets the exception through, so the run can be resumed.
    """
    world = run.world
    groups = objective.param_groups()
    optimizers = {name: _make_optimizer(params, cfg, objective.lr_scale.get(name, 1.0))
                  for name, params in groups.items()}
    start_step, history, best, stopped_early = 0, [], None, False
    if run.resume:
        start_step, history, best = _load_resume(objective, optimizers, run)
    _wrap_for_ddp(objective, run)

    run_dir = run.store.run_dir(run.name)
    # A resumed run goes on with the clock where it stopped: the budget and schedule span the whole run.
    resumed_seconds = next((row["seconds"] for row in reversed(history) if "seconds" in row), 0.0)
    started = time.monotonic() - resumed_seconds
    of_steps = f"/{cfg.steps}" if cfg.steps else ""
    step = start_step
    local_size = cfg.batch_size // world.size
    if local_size * world.size != cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} does not split evenly across {world.size} processes")

    def save(final: bool) -> dict[str, Any]:
        if final and progress and world.is_main:
            end = cfg.minutes * 60 - budget  # the time the budget keeps for the end (0: a kind whose end is quick)
            fraction = run_fraction(cfg, step, time.monotonic() - started) if end > 0 else 1.0
            about = f" (about {_duration(end)})" if end > 0 else ""
            progress(min(fraction, 1.0), f"step {step}{of_steps}: evaluating and saving the model{about}", None)
        metrics = _evaluate(objective) if final and world.is_main else {}
        if world.is_main:
            _save_resume(objective, optimizers, cfg, run, step, history, best)
            plots.loss_curve(history, run_dir / "loss.png", f"{run.name} ({run.kind})")
            kept = None
            if final and best and best.value < metrics.get(cfg.keep_best, math.inf):
                _load_nets(objective, best.tensors)
                kept, metrics = best, _evaluate(objective)
            saved = _save_model(objective, cfg, run, step, history, metrics, time.monotonic() - started, final,
                                kept, stopped_early)
            if final and progress:
                progress(1.0, f"step {step}{of_steps}: saved", None)
            return saved
        return {"step": step, "metrics": metrics}

    # The end of the run (the objective's final measurements and the save) is paid from the budget
    # too: training stops that much earlier, by the objective's estimate in steps, at this run's pace.
    budget, looped = cfg.minutes * 60, time.monotonic()
    try:
        for net in objective.nets.values():
            net.train()
        while not cfg.steps or step < cfg.steps:
            # Every process goes by the slowest one's clock, so they agree on the schedule and the stop.
            elapsed = distributed.max_across(world, time.monotonic() - started, run.device)
            if cfg.minutes > 0 and step > start_step and objective.finish_steps:
                pace = (time.monotonic() - looped) / (step - start_step)
                budget = cfg.minutes * 60 - min(objective.finish_steps * pace, cfg.minutes * 30)
                budget = -distributed.max_across(world, -budget, run.device)  # the earliest stop of any process
            if cfg.minutes > 0 and elapsed >= budget:
                break
            if check:
                check()
            logs = _step(objective, optimizers, cfg, run, step, local_size, elapsed, budget)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                logs = distributed.mean_across(world, logs, run.device)
                history.append({"step": step, "seconds": round(elapsed, 3), **logs})
                if world.is_main:
                    _append_log(run_dir, history[-1])
            preview = None
            if world.is_main and cfg.eval_every and step % cfg.eval_every == 0:
                metrics = _evaluate(objective)
                history.append({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
                if cfg.keep_best:
                    best = _better(best, metrics, cfg.keep_best, step, objective)
            if cfg.patience and step % cfg.eval_every == 0:  # every process decides with the main one
                stalled = world.is_main and best is not None and step - best.step >= cfg.patience * cfg.eval_every
                if distributed.max_across(world, float(stalled), run.device):
                    stopped_early = True
                    break
            if world.is_main and cfg.preview_every and step % cfg.preview_every == 0:
                preview = _preview(objective, run_dir, step)
            if step % cfg.checkpoint_every == 0 and step != cfg.steps:
                save(final=False)
            if progress and world.is_main:  # by the clock now: `elapsed` was read before the step
                loss_text = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
                # of the whole budget, the end included: the bar's estimate is when the run ends
                fraction = run_fraction(cfg, step, time.monotonic() - started)
                progress(min(fraction, 1.0), f"step {step}{of_steps} {loss_text}", preview)
    except BaseException:
        if step > start_step:
            save(final=False)
        raise
    return save(final=True)


def learning_rate(cfg: TrainConfig, step: int, elapsed: float = 0.0, budget: float | None = None) -> float:
    """Warm-up by steps, then the schedule follows whichever runs out first: steps or the time
    budget (`budget` seconds of training, by default all of cfg.minutes)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = run_fraction(cfg, step - cfg.warmup_steps, elapsed, cfg.steps - cfg.warmup_steps, budget)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.schedule == "linear":
        return cfg.lr * max(0.0, 1 - progress)
    return cfg.lr


def run_fraction(cfg: TrainConfig, step: int, elapsed: float, steps: int | None = None, budget: float | None = None
                 ) -> float:
    """How far the run is: the larger of its share of the steps (if capped) and of the time budget."""
    steps = cfg.steps if steps is None else steps
    budget = cfg.minutes * 60 if budget is None else budget
    by_steps = step / max(1, steps) if cfg.steps else 0.0
    by_time = elapsed / budget if cfg.minutes else 0.0
    return max(by_steps, by_time)


def _duration(seconds: float) -> str:
    seconds = max(round(seconds), 1)
    return f"{seconds} s" if seconds < 100 else f"{round(seconds / 60)} min"


def sample_keys(seed: int, step: int, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, 2**62, (count,), generator=generator, dtype=torch.int64)


def _step(objective: Objective, optimizers: dict[str, torch.optim.Optimizer], cfg: TrainConfig,
          run: TrainRun, step: int, local_size: int, elapsed: float, budget: float) -> dict[str, float]:
    keys = sample_keys(cfg.seed, step, cfg.batch_size)[run.world.rank::run.world.size]
    assert len(keys) == local_size
    batch = _to_device(objective.batch(keys), run.device)
    # Loss-time randomness (noise, dropout) is seeded per step and process, so resume is exact.
    torch.manual_seed(cfg.seed * 1_000_003 + step * 1009 + run.world.rank)
    lr = learning_rate(cfg, step, elapsed, budget)
    logs: dict[str, float] = {}
    for group, optimizer in optimizers.items():
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr * param_group["lr_scale"]
        optimizer.zero_grad(set_to_none=True)
        loss, group_logs = objective.loss(group, batch, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the {group} loss became {loss.item()} at step {step}; "
                                     "lower the learning rate (--set lr=...) or resume from the last checkpoint")
        loss.backward()
        if cfg.grad_clip > 0:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        logs.update(group_logs)
    objective.after_step(step)
    return logs


def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr_scale: float) -> torch.optim.Optimizer:
    group = [{"params": list(params), "lr_scale": lr_scale}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(group, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer(group, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _wrap_for_ddp(objective: Objective, run: TrainRun) -> None:
    if run.world.size == 1:
        return
    for name, net in objective.nets.items():
        if any(p.requires_grad for p in net.parameters()):
            device_ids = [run.device.index] if run.device.type == "cuda" else None
            objective.nets[name] = DistributedDataParallel(net, device_ids=device_ids)


def _unwrapped(objective: Objective) -> dict[str, nn.Module]:
    return {name: getattr(net, "module", net) for name, net in objective.nets.items()}


def _net_tensors(objective: Objective, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    nets = _unwrapped(objective)
    return {f"{name}.{key}": value for name in (names or nets) for key, value in nets[name].state_dict().items()}


def _evaluate(objective: Objective) -> dict[str, float]:
    nets = list(objective.nets.values())
    for net in nets:
        net.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in objective.evaluate().items()}
    finally:
        for net in nets:
            net.train()


def _preview(objective: Objective, run_dir, step: int) -> np.ndarray | None:
    with torch.no_grad():
        image = objective.preview()
    if image is not None:
        plots.save_png(image, run_dir / "samples" / f"step-{step:07d}.png")
    return image


def _append_log(run_dir, row: dict[str, float]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


@dataclass
class Best:
    """The nets' state at the evaluation that scored lowest on cfg.keep_best."""

    value: float
    step: int
    tensors: dict[str, torch.Tensor]


def _better(best: Best | None, metrics: dict[str, float], key: str, step: int, objective: Objective) -> Best | None:
    if not metrics:  # nothing held out to score on (e.g. a folder too small to hold files out)
        return best
    if key not in metrics:
        raise KeyError(f"keep_best={key!r}, but this model kind's evaluation reports {sorted(metrics) or 'nothing'}")
    if best is not None and best.value <= metrics[key]:
        return best
    return Best(metrics[key], step, {k: v.detach().clone() for k, v in _net_tensors(objective).items()})


def _load_nets(objective: Objective, tensors: dict[str, torch.Tensor]) -> None:
    for name, net in _unwrapped(objective).items():
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})


def _save_model(objective: Objective, cfg: TrainConfig, run: TrainRun, step: int, history: list[dict],
                metrics: dict[str, float], seconds: float, final: bool, kept: Best | None = None,
                stopped_early: bool = False) -> dict[str, Any]:
    until = kept.step if kept else step
    last = next((row for row in reversed(history)
                 if row["step"] <= until and not any(k.startswith("eval/") for k in row)), {})
    metadata = {
        "kind": run.kind,
        "config": _as_dict(objective.export_config(final)),
        "train": dataclasses.asdict(cfg),
        "data": objective.data_summary(),
        "metrics": {**{k: v for k, v in last.items() if k not in ("step", "seconds")}, **metrics},
        "step": step,
        "processes": run.world.size,
        "train_seconds": round(seconds, 1),
        "nets": list(objective.export_nets or _unwrapped(objective)),
        # A checkpoint of a run that has not finished (yet, or ever: cancelled or failed): kept
        # for --resume, listed as partial, never chosen as anyone's default model.
        "partial": not final,
    }
    if kept:  # the run went on past its best evaluation; this is the model from then
        metadata["kept_step"] = kept.step
    if stopped_early:  # cfg.patience evaluations in a row found no new best
        metadata["stopped_early"] = True
    # A kind may say plainly that a finished run stopped far short of what its recipe reaches
    # (an optional `run_warning(step, train_config)` on the objective); shown by train and models info.
    warning = getattr(objective, "run_warning", None)
    warning = warning(step, cfg) if final and warning else None
    if warning:
        metadata["warning"] = warning
    return run.store.save(run.name, _net_tensors(objective, objective.export_nets or None), metadata)


def _save_resume(objective: Objective, optimizers: dict[str, torch.optim.Optimizer], cfg: TrainConfig,
                 run: TrainRun, step: int, history: list[dict], best: Best | None = None) -> None:
    tensors = {f"net.{k}": v for k, v in _net_tensors(objective).items()}
    if best:
        tensors.update({f"best.{k}": v for k, v in best.tensors.items()})
    optimizer_json = {}
    for group, optimizer in optimizers.items():
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt.{group}.{index}.{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        optimizer_json[group] = {"param_groups": state["param_groups"], "scalars": scalars}
    metadata = {"kind": run.kind, "step": step, "history": history, "optimizers": optimizer_json,
                "config": _as_dict(objective.config), "train": dataclasses.asdict(cfg),
                "best": {"value": best.value, "step": best.step} if best else None}
    save_file(run.store.run_dir(run.name) / RESUME_FILE, tensors, metadata)


def _load_resume(objective: Objective, optimizers: dict[str, torch.optim.Optimizer],
                 run: TrainRun) -> tuple[int, list[dict], Best | None]:
    path = run.store.run_dir(run.name) / RESUME_FILE
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume for {run.name!r}: {path} does not exist; "
                                "start without --resume")
    metadata, tensors = load_file(path)
    if metadata.get("kind") != run.kind:
        raise ValueError(f"{run.name!r} was trained as {metadata.get('kind')!r}, not {run.kind!r}")
    try:
        _load_nets(objective, {k[4:]: v.to(run.device) for k, v in tensors.items() if k.startswith("net.")})
    except RuntimeError as error:  # torch's message lists tensor names and shapes, not what to do
        raise ValueError(f"{run.name!r} was checkpointed with other model settings than these (or by an earlier "
                         "version whose defaults differ), so it cannot resume: pass the settings it was trained "
                         "with (--set KEY=VALUE) or start again without --resume") from error
    best = None
    if metadata.get("best"):
        best = Best(metadata["best"]["value"], metadata["best"]["step"],
                    {k[5:]: v.to(run.device) for k, v in tensors.items() if k.startswith("best.")})
    for group, optimizer in optimizers.items():
        saved = metadata["optimizers"][group]
        state: dict[int, dict[str, Any]] = {}
        prefix = f"opt.{group}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, name = key[len(prefix):].split(".", 1)
                state.setdefault(int(index), {})[name] = value  # load_state_dict moves it to the params
        for index, values in saved["scalars"].items():
            state.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    history = metadata["history"]
    if run.world.is_main:  # the log restarts from what the checkpoint knew
        log_path = run.store.run_dir(run.name) / "log.jsonl"
        rows = [r for r in history if not any(k.startswith("eval/") for k in r)]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return int(metadata["step"]), history, best


def resume_settings(store: ModelStore, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model config and trainer settings a run was checkpointed with."""
    path = store.run_dir(name) / RESUME_FILE
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume for {name!r}: it has no checkpoint at {path}; "
                                "start without --resume")
    metadata = read_metadata(path)
    return metadata["config"], metadata["train"]


def _as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
