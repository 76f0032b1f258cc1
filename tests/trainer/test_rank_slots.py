"""Rank slots through the daemon: a distributed job starts only when all its ranks fit."""

import grpc
import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import start_trainer
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .jobs_helpers import states, tiny_spec, watch_all

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def three_slot_jobs(tmp_path, data_dir, tiny_model_dir):
    config = TrainerConfig(
        home=tmp_path / "home",
        listen="127.0.0.1:0",
        data_roots=(data_dir,),
        model_roots=(tiny_model_dir.parent,),
        max_running_jobs=3,
        rank_slots=3,
    )
    server = await start_trainer(config)
    async with trainer_channel(server.address, server.credential) as channel:
        yield training_service_grpc.TrainingServiceStub(channel)
    await server.stop(grace=10)


def _ranks(spec: training_job_pb.TrainingJobSpec, n: int) -> training_job_pb.TrainingJobSpec:
    spec.distributed.world_size = n
    return spec


async def test_two_2_rank_jobs_on_3_slots_run_one_after_the_other(
    three_slot_jobs, tiny_model_dir, data_dir
):
    jobs = three_slot_jobs
    spec = _ranks(tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=4, batch_size=4), 2)
    first, second = [
        (await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))).job
        for _ in range(2)
    ]
    first_events = await watch_all(jobs, first.id)
    second_events = await watch_all(jobs, second.id)
    assert states(first_events)[-1] == states(second_events)[-1] == "JOB_STATE_SUCCEEDED"

    def when(events, state):
        (event,) = [
            e
            for e in events
            if e.HasField("state_change")
            and training_job_pb.JobState.Name(e.state_change.state) == state
        ]
        return event.time.ToNanoseconds()

    # The second job was never started beside the first (1 slot was free, it needs 2):
    # it stayed QUEUED until the first ended, then ran.
    assert when(second_events, "JOB_STATE_STARTING") >= when(first_events, "JOB_STATE_SUCCEEDED")


async def test_a_job_with_more_ranks_than_a_lone_trainers_slots_is_refused(
    three_slot_jobs, tiny_model_dir, data_dir
):
    spec = _ranks(tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=4, batch_size=4), 4)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await three_slot_jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=spec)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4 ranks, but this trainer runs at most 3 at once" in refused.value.details()
