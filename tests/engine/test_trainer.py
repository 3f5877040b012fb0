"""The shared trainer on a small real objective: resume, budgets, cancel, DDP, settings."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support.toy import ToyConfig, ToyObjective

from engine.config import build, parse_overrides
from engine.ops import Cancelled
from engine.store.checkpoints import ModelStore, read_metadata
from engine.train.config import TrainConfig
from engine.train import trainer
from engine.train.trainer import RESUME_FILE, TrainRun, learning_rate, train

TESTS = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def log_rows(store: ModelStore, name: str) -> list[dict]:
    return [json.loads(line) for line in (store.run_dir(name) / "log.jsonl").read_text().splitlines()]


def stop_at(step_to_stop: int):
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > step_to_stop:
            raise Cancelled()
    return check


def test_training_writes_model_log_and_loss_curve(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    config = TrainConfig(steps=40, batch_size=16, lr=0.02, log_every=5, eval_every=20)
    metadata = train(ToyObjective(), config, TrainRun(store, "toy", "toy", CPU))
    assert metadata["step"] == 40 and metadata["kind"] == "toy"
    assert metadata["config"] == {"inputs": 8, "hidden": 16} and metadata["train"]["lr"] == 0.02
    assert metadata["data"] == {"source": "toy regression"} and "valid_mse" in metadata["metrics"]
    rows = log_rows(store, "toy")
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (store.run_dir("toy") / "loss.png").stat().st_size > 1000
    assert set(store.load("toy")[1]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}


def test_resume_continues_from_the_saved_step_on_the_same_curve(tmp_path):
    config = TrainConfig(steps=30, batch_size=8, lr=0.01, log_every=1, checkpoint_every=10)
    whole = ModelStore(tmp_path / "whole", builtin=None)
    train(ToyObjective(), config, TrainRun(whole, "toy", "toy", CPU))

    parts = ModelStore(tmp_path / "parts", builtin=None)
    with pytest.raises(Cancelled):
        train(ToyObjective(), config, TrainRun(parts, "toy", "toy", CPU), check=stop_at(17))
    interrupted = parts.metadata("toy")
    assert interrupted["step"] == 17  # a cancelled run saves where it stopped

    resumed_steps = []
    fresh = ToyObjective(ToyConfig())
    torch.nn.init.zeros_(fresh.nets["net"][0].weight)  # resume must overwrite whatever the new objective holds
    train(fresh, config, TrainRun(parts, "toy", "toy", CPU, resume=True),
          progress=lambda f, m, p: resumed_steps.append(int(m.split()[1].split("/")[0])))
    assert resumed_steps[0] == 18
    assert [r["step"] for r in log_rows(parts, "toy")] == list(range(1, 31))
    for a, b in zip(log_rows(whole, "toy"), log_rows(parts, "toy")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), f"curves part at step {a['step']}"
    assert parts.load("toy")[1]["net.0.weight"].allclose(whole.load("toy")[1]["net.0.weight"], atol=1e-6)


def test_resume_without_a_checkpoint_says_so(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    with pytest.raises(FileNotFoundError, match="without --resume"):
        train(ToyObjective(), TrainConfig(steps=2), TrainRun(store, "nothing", "toy", CPU, resume=True))


class HeldOutDiffers(ToyObjective):
    """Held-out data between the start and the training data: on the way to the training function
    the held-out error falls, then rises again (the shape of a run that overfits)."""

    def evaluate(self) -> dict[str, float]:
        x, y = self.batch(torch.arange(64))
        return {"valid_mse": torch.nn.functional.mse_loss(self.nets["net"](x), 0.3 * y).item()}


def test_keep_best_saves_the_model_from_the_best_evaluation_and_survives_resume(tmp_path):
    config = TrainConfig(steps=60, batch_size=16, lr=0.02, schedule="cosine", log_every=5, eval_every=5,
                         keep_best="valid_mse", checkpoint_every=10)
    store = ModelStore(tmp_path / "whole", builtin=None)
    metadata = train(HeldOutDiffers(), config, TrainRun(store, "toy", "toy", CPU))
    evals = {r["step"]: r["eval/valid_mse"] for r in read_metadata(store.run_dir("toy") / RESUME_FILE)["history"]
             if "eval/valid_mse" in r}
    best_step = min(evals, key=evals.get)
    assert 5 <= best_step < 50 and evals[60] > 1.3 * evals[best_step], evals  # the held-out error turned
    assert metadata["step"] == 60 and metadata["kept_step"] == best_step
    assert metadata["metrics"]["valid_mse"] == pytest.approx(evals[best_step], rel=1e-6)
    kept = HeldOutDiffers()
    kept.nets["net"].load_state_dict({k[4:]: v for k, v in store.load("toy")[1].items()})
    assert kept.evaluate()["valid_mse"] == pytest.approx(evals[best_step], rel=1e-6)

    parts = ModelStore(tmp_path / "parts", builtin=None)  # cancelled after the best point, then resumed
    with pytest.raises(Cancelled):
        train(HeldOutDiffers(), config, TrainRun(parts, "toy", "toy", CPU), check=stop_at(best_step + 7))
    resumed = train(HeldOutDiffers(), config, TrainRun(parts, "toy", "toy", CPU, resume=True))
    assert resumed["kept_step"] == best_step
    assert resumed["metrics"]["valid_mse"] == pytest.approx(evals[best_step], rel=1e-5)

    without = train(HeldOutDiffers(), TrainConfig(steps=60, batch_size=16, lr=0.02, schedule="cosine", eval_every=5),
                    TrainRun(ModelStore(tmp_path / "without", builtin=None), "toy", "toy", CPU))
    assert "kept_step" not in without and without["metrics"]["valid_mse"] == pytest.approx(evals[60], rel=1e-5)


def test_patience_ends_the_run_once_the_held_out_score_stops_improving(tmp_path):
    config = TrainConfig(steps=60, batch_size=16, lr=0.02, schedule="cosine", log_every=5, eval_every=5,
                         keep_best="valid_mse", patience=3)
    store = ModelStore(tmp_path, builtin=None)
    metadata = train(HeldOutDiffers(), config, TrainRun(store, "toy", "toy", CPU))
    evals = {r["step"]: r["eval/valid_mse"] for r in read_metadata(store.run_dir("toy") / RESUME_FILE)["history"]
             if "eval/valid_mse" in r}
    best_step = min(evals, key=evals.get)
    assert metadata["stopped_early"] and metadata["kept_step"] == best_step < 45
    assert metadata["step"] == max(evals) == best_step + 3 * 5  # three evaluations without a new best
    assert metadata["metrics"]["valid_mse"] == pytest.approx(evals[best_step], rel=1e-6)


def test_keep_best_needs_evaluations():
    with pytest.raises(ValueError, match="set eval_every"):
        TrainConfig(keep_best="valid_mse")
    with pytest.raises(ValueError, match="set keep_best"):
        TrainConfig(eval_every=5, patience=3)


def test_time_budget_stops_early_and_saves(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    metadata = train(ToyObjective(), TrainConfig(steps=10**7, minutes=0.02, batch_size=4),
                     TrainRun(store, "toy", "toy", CPU))
    assert 0 < metadata["step"] < 10**7 and metadata["train_seconds"] < 30


def test_without_a_step_count_the_budget_ends_the_run_and_the_schedule_spans_it(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    config = TrainConfig(minutes=0.02, batch_size=4, lr=1.0, schedule="linear", log_every=1)
    assert config.steps == 0, "the default is no step cap: a plain run is the recipe for its time budget"
    fractions = []
    metadata = train(ToyObjective(), config, TrainRun(store, "toy", "toy", CPU),
                     progress=lambda f, m, p: fractions.append(f))
    assert metadata["step"] > 5 and 1.0 <= metadata["train_seconds"] < 30
    assert fractions[-2] > 0.9 and fractions == sorted(fractions), "progress follows the clock to the end"
    assert learning_rate(config, 10**6, elapsed=0.6) == pytest.approx(0.5), "steps alone never decay the rate"
    with pytest.raises(ValueError, match="needs an end"):
        TrainConfig(steps=0, minutes=0)


class SlowSteps(ToyObjective):
    """Each step takes `step_seconds`: a fifth of a 1.25 s budget, as on a loaded machine."""

    step_seconds = 0.25

    def loss(self, group: str, batch, step: int):
        time.sleep(self.step_seconds)
        return super().loss(group, batch, step)


def test_progress_reports_where_the_clock_stands_after_each_step(tmp_path):
    """The bar reaches the end of the budget however long a step takes: the last report before the
    end is not the fraction from before its step (4 of 5 steps' time)."""
    config = TrainConfig(minutes=1.25 / 60, batch_size=4, log_every=1)
    fractions = []
    train(SlowSteps(), config, TrainRun(ModelStore(tmp_path, builtin=None), "toy", "toy", CPU),
          progress=lambda f, m, p: fractions.append(f))
    assert fractions[-2] > 0.99 and fractions == sorted(fractions), fractions


class SlowToFinish(SlowSteps):
    """Each step takes 10 ms and the final evaluation as long as `finish_steps` of them."""

    step_seconds = 0.01
    finish_steps = 150.0

    def evaluate(self) -> dict[str, float]:
        time.sleep(self.step_seconds * self.finish_steps)
        return super().evaluate()


def test_the_end_of_the_run_is_paid_from_the_budget(tmp_path, monkeypatch):
    """A kind whose end of training takes time (texture: calibration and evaluation) stops training
    early enough for the whole run to fit its time budget, and its schedule spans the shorter time.
    The progress spans the whole budget, so that the bar's estimate is the run's end: at the end it
    stands where the clock does and says about how long the end will take."""
    store, budget, finish = ModelStore(tmp_path, builtin=None), 4.0, 1.5
    config = TrainConfig(minutes=budget / 60, batch_size=4, lr=1.0, schedule="linear", log_every=1)
    rates, reports = [], []
    monkeypatch.setattr(trainer, "learning_rate", lambda *args: rates.append(learning_rate(*args)) or rates[-1])
    metadata = train(SlowToFinish(), config, TrainRun(store, "toy", "toy", CPU),
                     progress=lambda f, m, p: reports.append((f, m)))
    trained = log_rows(store, "toy")[-1]["seconds"]
    # at its pace (10 ms a step, more on a busy machine) the end's 150 steps take 1.5 s or more
    assert trained < budget - 0.8 * finish, f"trained {trained:.2f} s of {budget} s; its end takes {finish} s"
    assert metadata["step"] > 20 and metadata["train"]["minutes"] == config.minutes
    assert rates[-1] < 0.1, "the schedule spans the time left for training"
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and 0.5 < fractions[-2] < 0.9, fractions[-3:]
    assert reports[-2][1].endswith("evaluating and saving the model (about 2 s)"), reports[-2][1]
    assert reports[-1] == (1.0, f"step {metadata['step']}: saved"), reports[-1]


def test_a_resumed_run_goes_on_with_the_clock_where_it_stopped(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    config = TrainConfig(minutes=0.05, batch_size=4, log_every=1, checkpoint_every=10**6)
    with pytest.raises(Cancelled):
        train(ToyObjective(), config, TrainRun(store, "toy", "toy", CPU), check=stop_at(20))
    stopped_at = log_rows(store, "toy")[-1]["seconds"]
    train(ToyObjective(), config, TrainRun(store, "toy", "toy", CPU, resume=True))
    rows = log_rows(store, "toy")
    resumed = [r["seconds"] for r in rows if r["step"] > 20]
    assert resumed[0] >= stopped_at and resumed[-1] < 3.0 + 1.0, "the budget spans both parts of the run"


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_each_optimizer_learns(tmp_path, optimizer):
    store = ModelStore(tmp_path, builtin=None)
    config = TrainConfig(steps=60, batch_size=16, lr=0.05 if optimizer == "sgd" else 0.01, optimizer=optimizer,
                         log_every=10, schedule="cosine", warmup_steps=5)
    train(ToyObjective(), config, TrainRun(store, "toy", "toy", CPU))
    rows = log_rows(store, "toy")
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]


def test_schedules():
    cosine = TrainConfig(steps=100, lr=1.0, schedule="cosine", warmup_steps=10)
    assert learning_rate(cosine, 0) == pytest.approx(0.1)
    assert learning_rate(cosine, 10) == pytest.approx(1.0)
    assert learning_rate(cosine, 55) == pytest.approx(0.5)
    assert learning_rate(TrainConfig(steps=100, lr=1.0, schedule="linear"), 75) == pytest.approx(0.25)
    budget = TrainConfig(steps=10**6, lr=1.0, schedule="linear", minutes=1.0)
    assert learning_rate(budget, 10, elapsed=45.0) == pytest.approx(0.25), "a time budget drives the schedule too"


def test_distributed_two_processes_follow_the_single_process_curve(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    script = str(TESTS / "support" / "ddp_toy.py")
    subprocess.run([sys.executable, script, str(tmp_path / "one")], check=True, env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script,
                    str(tmp_path / "two")], check=True, env=env, timeout=300)
    one = log_rows(ModelStore(tmp_path / "one", builtin=None), "toy")
    two = log_rows(ModelStore(tmp_path / "two", builtin=None), "toy")
    assert len(one) == len(two) == 30
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6), f"step {a['step']}"
    assert ModelStore(tmp_path / "two", builtin=None).metadata("toy")["processes"] == 2


def test_settings_from_file_and_overrides(tmp_path):
    sections = parse_overrides(["hidden=32", "lr=0.1", "train.steps=5"], ToyConfig, TrainConfig)
    assert sections == {"model": {"hidden": "32"}, "train": {"lr": "0.1", "steps": "5"}}
    assert build(ToyConfig, {"inputs": 4}, sections["model"]) == ToyConfig(inputs=4, hidden=32)
    assert build(TrainConfig, sections["train"]).lr == 0.1
    with pytest.raises(ValueError, match="not a setting"):
        parse_overrides(["hiden=3"], ToyConfig, TrainConfig)
    with pytest.raises(ValueError, match="cannot read 'many' as int"):
        build(ToyConfig, {"hidden": "many"})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lion")
