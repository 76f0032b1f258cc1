"""DPO and ORPO jobs through the trainer's API: the preference section checked, pairs required,
and the rewards in the events and the job's status."""

import json
import math

import grpc
import pytest

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .jobs_helpers import TERMINAL, tiny_spec, watch_all
from .test_create_checks import create, violations

pytestmark = pytest.mark.timeout(240)


def write_pairs(path, topics):
    records = [
        {
            "input": {"messages": [{"role": "user", "content": f"Tell me about {t}."}]},
            "preferred_output": [{"role": "assistant", "content": f"I think {t} are fine."}],
            "non_preferred_output": [{"role": "assistant", "content": f"I think {t} are awful."}],
        }
        for t in topics
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def pairs(data_dir):
    train = write_pairs(
        data_dir / "pairs.jsonl", ["apples", "rivers", "music", "trains", "cats", "books"]
    )
    held = write_pairs(data_dir / "held.jsonl", ["dogs", "tea", "maps", "rain"])
    return train, held


def dpo_spec(model_dir, train, **preference):
    spec = tiny_spec(model_dir, train, max_steps=8, batch_size=2, checkpoint_every=4)
    spec.hyperparameters.learning_rate = 0.01
    spec.preference.CopyFrom(training_job_pb.PreferenceConfig(**preference))
    return spec


async def test_preference_settings_and_data_are_checked_at_create(
    jobs, tiny_model_dir, data_dir, pairs
):
    spec = dpo_spec(
        tiny_model_dir,
        data_dir / "alpaca.json",
        method=training_job_pb.PREFERENCE_METHOD_DPO,
        beta=0,
        loss=training_job_pb.DPO_LOSS_IPO,
        label_smoothing=0.1,
        sft_weight=-1,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err.value)
    assert "in (0, 10], got 0" in found["spec.preference.beta"]
    assert "SIGMOID loss only" in found["spec.preference.label_smoothing"]
    assert "in [0, 100], got -1" in found["spec.preference.sft_weight"]

    spec = dpo_spec(
        tiny_model_dir, data_dir / "alpaca.json", method=training_job_pb.PREFERENCE_METHOD_ORPO
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    found = violations(err.value)
    assert "ORPO trains on preference pairs" in found["spec.dataset.path"], found

    spec = dpo_spec(tiny_model_dir, pairs[0], beta=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert "is required" in violations(err.value)["spec.preference.method"]


async def test_a_dpo_job_reports_rewards_in_its_events_and_status(jobs, tiny_model_dir, pairs):
    train, held = pairs
    spec = dpo_spec(tiny_model_dir, train, method=training_job_pb.PREFERENCE_METHOD_DPO)
    spec.validation_dataset.path = str(held)
    spec.evaluation.interval_steps = 4
    job = (await create(jobs, spec)).job
    # The defaults the job runs with are in its spec.
    assert job.spec.preference.beta == pytest.approx(0.1)
    assert job.spec.preference.loss == training_job_pb.DPO_LOSS_SIGMOID
    events = await watch_all(jobs, job.id)
    metrics = [e.training_metrics for e in events if e.HasField("training_metrics")]
    evaluations = {
        e.evaluation_metrics.step: e.evaluation_metrics
        for e in events
        if e.HasField("evaluation_metrics")
    }
    assert math.isclose(metrics[0].loss, math.log(2), abs_tol=2e-4)
    assert all(m.preference.pairs == 2 for m in metrics)
    assert sorted(evaluations) == [0, 4, 8]
    assert evaluations[0].preference.reward_accuracy == 0.5
    assert evaluations[8].preference.reward_margin > 0
    final = (
        await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
    ).job
    assert final.state in TERMINAL and final.state == training_job_pb.JOB_STATE_SUCCEEDED, (
        final.error
    )
    assert final.latest_metrics.step == 8 and final.latest_metrics.HasField("preference")
    assert final.latest_evaluation.preference.reward_accuracy > 0.5
    assert final.dataset_details.format == 4  # DATASET_FORMAT_OPENAI_PREFERENCE
