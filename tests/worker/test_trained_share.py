"""The share of computed positions whose token trains is reported with every metrics event
and lands in the job's status metrics: lower when only assistant turns train."""

from __future__ import annotations

import pytest

from tunewire.trainer.jobs.worker_events import training_metrics

pytestmark = pytest.mark.timeout(120)


def shares(worker) -> list[float]:
    assert worker.returncode == 0, worker.log()
    return [m.trained_token_share for m in worker.of_type("metrics")]


def test_trained_share_is_reported_and_follows_the_masking(make_config, run_worker):
    steps = {"hyperparameters": {"max_steps": 3}}
    masked = shares(run_worker(make_config("masked", loss_masking="all_assistant_turns", **steps)))
    everything = shares(run_worker(make_config("all", loss_masking="all_tokens", **steps)))
    assert len(masked) == len(everything) == 3
    # Prompts (system and user turns) do not train; with every token trained only the
    # padding and the first token of each record are left out.
    assert all(0 < s < 0.9 for s in masked), masked
    assert all(m < e <= 1.0 for m, e in zip(masked, everything)), (masked, everything)


def test_the_share_reaches_the_jobs_metrics(make_config, run_worker):
    worker = run_worker(make_config("status", hyperparameters={"max_steps": 1}))
    (metrics,) = worker.of_type("metrics")
    proto = training_metrics(metrics)
    assert proto.trained_token_share == pytest.approx(metrics.trained_token_share)
    assert 0 < proto.trained_token_share < 1


def test_packing_trains_through_the_worker_with_a_higher_share(make_config, run_worker):
    """The 8 short records pack into rows of 128 tokens: less padding per step on average."""
    hp = {"max_steps": 4, "batch_size": 2, "max_seq_length": 128}
    unpacked = run_worker(make_config("unpacked", hyperparameters=hp))
    packed = run_worker(make_config("packed", hyperparameters={**hp, "packing": True}))
    plain, tight = shares(unpacked), shares(packed)
    assert len(plain) == len(tight) == 4
    assert sum(tight) / 4 > sum(plain) / 4, (tight, plain)
    assert all(m.loss > 0 for m in packed.of_type("metrics"))
