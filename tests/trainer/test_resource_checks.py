"""spec.resources on a trainer alone on its database: bad values are INVALID_ARGUMENT
naming the field; a job this trainer cannot run is refused (NO_TRAINER_CAN_RUN)."""

import grpc
import pytest
from grpc_status import rpc_status

from tunewire.errors import reason_of
from tunewire.reasons import Reason
from tunewire.trainer import resources
from tunewire.v1 import training_service_pb2 as training_service_pb

from .jobs_helpers import tiny_spec


async def _refusal(jobs, spec) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    return refused.value


@pytest.mark.parametrize(
    ("device", "memory", "field", "words"),
    [
        (9, 0.0, "spec.resources.device", "unknown device 9"),
        (1, -1.0, "spec.resources.min_memory_gib", "between 0 and 1048576 GiB, got -1"),
        (1, 2e6, "spec.resources.min_memory_gib", "got 2e+06"),
        (1, float("nan"), "spec.resources.min_memory_gib", "must be a finite number"),
    ],
)
async def test_bad_resources_name_the_field(
    jobs, tiny_model_dir, data_dir, device, memory, field, words
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    spec.resources.device = device
    spec.resources.min_memory_gib = memory
    refused = await _refusal(jobs, spec)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.details() and words in refused.details()


async def test_a_job_a_lone_trainer_cannot_run_is_refused_saying_why(
    jobs, tiny_model_dir, data_dir
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    other = "gpu" if resources.default_device() == "cpu" else "cpu"
    spec.resources.device = resources.DEVICES[other]
    refused = await _refusal(jobs, spec)
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"it needs {other}, at least 0 GiB" in refused.details()
    assert "this trainer offers" in refused.details()
    assert reason_of(rpc_status.from_call(refused)) == Reason.NO_TRAINER_CAN_RUN


def test_the_hosts_memory_comes_from_proc_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:  1 kB\n")
    assert resources.host_memory_gib(meminfo) == 24.0
    assert resources.host_memory_gib(tmp_path / "none") > 0  # the page count instead
