"""Same seed, same losses; a job stopped and resumed from its checkpoint continues exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import pytest

pytestmark = pytest.mark.timeout(120)

# Dropout draws from the RNG, warmup + cosine depend on the optimizer's step
# counter, accumulation spans micro-batches, and epochs reshuffle: resuming
# must restore all of them to match.
EXACTING = {
    "lora": {"dropout": 0.1},
    "hyperparameters": {
        "max_steps": 16,
        "batch_size": 2,
        "gradient_accumulation_steps": 2,
        "learning_rate": 0.05,
        "learning_rate_schedule": "cosine",
        "warmup_steps": 4,
        "min_learning_rate": 0.001,
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "seed": 3,
    },
}


def assert_close(got: dict[int, float], want: dict[int, float]) -> None:
    assert got.keys() == want.keys()
    for step, loss in got.items():
        assert math.isclose(loss, want[step], rel_tol=1e-5), (step, loss, want[step])


def test_same_seed_gives_the_same_losses_and_another_seed_does_not(make_config, run_worker):
    first = run_worker(make_config("first", **EXACTING))
    second = run_worker(make_config("second", **EXACTING))
    assert first.returncode == 0 and second.returncode == 0, first.log()
    assert len(first.losses()) == 16
    assert first.losses() == second.losses()
    # Warmup from 0 reaches the peak at update 5, then cosine decay towards the floor.
    lr = {m.step: m.learning_rate for m in first.of_type("metrics")}
    assert lr[1] == 0.0 and math.isclose(lr[5], 0.05, rel_tol=1e-6)
    assert all(lr[s + 1] < lr[s] for s in range(6, 16)) and lr[16] > 0.001
    other = make_config("other", **{**EXACTING, "hyperparameters": {"seed": 4}})
    assert run_worker(other).losses() != first.losses()


def test_stop_then_resume_matches_an_uninterrupted_run(
    make_config, run_worker, start_worker, validation_file
):
    settings = dict(
        EXACTING, validation_path=str(validation_file), evaluation={"interval_steps": 5}
    )
    straight = run_worker(make_config("straight", **settings))
    assert straight.done().outcome == "succeeded", straight.log()

    stopped = start_worker(make_config("resumed", **settings))
    stopped.wait_for(lambda e: e.kind == "metrics" and e.step == 2)
    stopped.send("stop")
    assert stopped.finish() == 0, stopped.log()
    done = stopped.done()
    stop_step = done.step
    assert done.outcome == "interrupted" and 2 <= stop_step < 16
    assert done.artifacts.adapter_path is None
    (last_checkpoint,) = [c for c in stopped.of_type("checkpoint") if c.step == stop_step]
    checkpoint_dir = Path(last_checkpoint.path)
    assert checkpoint_dir.name == f"{stop_step:08d}"
    state = json.loads((checkpoint_dir / "state.json").read_text())
    assert state["step"] == stop_step and len(state["mx_rng_key"]) == 2
    optimizer = mx.load(str(checkpoint_dir / "optimizer.safetensors"))
    assert optimizer["step"].item() == stop_step
    assert not [p for p in checkpoint_dir.parent.iterdir() if p.name.startswith(".tmp")]

    resumed = run_worker(make_config("resumed", **settings), resume_from=str(checkpoint_dir))
    assert resumed.done().outcome == "succeeded", resumed.log()
    (setup,) = resumed.of_type("setup")
    assert setup.resumed_from_step == stop_step
    after = {s: v for s, v in straight.losses().items() if s > stop_step}
    assert_close(resumed.losses(), after)

    def evals(w):
        return {e.step: e.validation_loss for e in w.of_type("evaluation")}

    assert_close(evals(resumed), {s: v for s, v in evals(straight).items() if s > stop_step})
