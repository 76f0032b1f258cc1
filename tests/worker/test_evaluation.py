"""Validation, the best checkpoint, pruning, and early stopping."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def test_evaluation_checkpoints_and_early_stopping(make_config, run_worker, validation_file):
    # min_delta larger than any possible gain: every evaluation after the first
    # counts against patience, so the job stops at the third (step 6 of 20).
    worker = run_worker(
        make_config(
            validation_path=str(validation_file),
            hyperparameters={"max_steps": 20},
            evaluation={
                "interval_steps": 2,
                "max_batches": 0,
                "early_stopping": {"patience": 2, "min_delta": 10.0},
            },
            checkpointing={"interval_steps": 100, "keep_last": 1},
        )
    )
    assert worker.returncode == 0, worker.log()
    done = worker.done()
    assert done.outcome == "early_stopped" and done.step == 6

    evals = worker.of_type("evaluation")
    assert [e.step for e in evals] == [2, 4, 6]
    for e in evals:
        assert math.isclose(e.perplexity, math.exp(e.validation_loss), rel_tol=1e-9)
    best = min(evals, key=lambda e: e.validation_loss)
    assert done.best_checkpoint_step == best.step

    # A checkpoint at an evaluation only for a new low (the interval, 100, is never
    # reached), and one where the job stops; each carries its losses.
    new_lows, lowest = [], math.inf
    for e in evals:
        if e.validation_loss < lowest:
            new_lows.append(e.step)
            lowest = e.validation_loss
    checkpoints = worker.of_type("checkpoint")
    assert [c.step for c in checkpoints] == sorted({*new_lows, 6})
    by_step = {e.step: e for e in evals}
    for c in checkpoints:
        assert c.validation_loss == by_step[c.step].validation_loss and c.train_loss > 0
        assert c.best == (c.step in new_lows)
    # keep_last=1 keeps the newest, and the best is never deleted.
    kept = {int(p.name) for p in (Path(worker.job_dir) / "checkpoints").iterdir()}
    assert kept == {6, best.step}

    logs = [e.message for e in worker.of_type("log")]
    assert any("early stopping at step 6" in m for m in logs)
    assert Path(done.artifacts.adapter_path, "adapters.safetensors").exists()


def test_checkpoints_at_the_interval_the_end_and_new_bests_only(
    make_config, run_worker, validation_file
):
    worker = run_worker(
        make_config(
            validation_path=str(validation_file),
            hyperparameters={"max_steps": 20, "learning_rate": 0.05},
            evaluation={"interval_steps": 2, "max_batches": 0},
            checkpointing={"interval_steps": 10, "keep_last": 0},
        )
    )
    assert worker.returncode == 0, worker.log()
    evals = worker.of_type("evaluation")
    assert [e.step for e in evals] == list(range(2, 21, 2))
    new_lows, lowest = [], math.inf
    for e in evals:
        if e.validation_loss < lowest:
            new_lows.append(e.step)
            lowest = e.validation_loss
    steps = [c.step for c in worker.of_type("checkpoint")]
    assert steps == sorted({*new_lows, 10, 20})
    assert len(steps) < len(evals) or new_lows == [e.step for e in evals]


def test_without_an_interval_validation_runs_once_at_the_end(
    make_config, run_worker, validation_file
):
    worker = run_worker(
        make_config(
            validation_path=str(validation_file),
            hyperparameters={"max_steps": 3},
            evaluation={"interval_steps": 0},
        )
    )
    assert worker.returncode == 0, worker.log()
    assert [e.step for e in worker.of_type("evaluation")] == [3]
    (checkpoint,) = worker.of_type("checkpoint")
    assert checkpoint.step == 3 and checkpoint.best
    (setup,) = worker.of_type("setup")
    assert setup.dataset_details.validation_records == 4
