"""A failed job's error is one line; its log (the traceback included) is read, a page
at a time, by its owner and admins through GetTrainingJobLog, and by nobody else."""

from __future__ import annotations

import grpc
import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.errors import reason_of
from tunewire.reasons import Reason
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.jobs import logs
from tunewire.trainer.server import start_trainer
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .conftest import as_user
from .jobs_helpers import tiny_spec, watch_all
from .test_protocol_daemon import scripted_python

pytestmark = pytest.mark.timeout(120)


def log_request(job_id: str, **fields) -> training_service_pb.GetTrainingJobLogRequest:
    return training_service_pb.GetTrainingJobLogRequest(job_id=job_id, **fields)


async def test_a_crashed_job_says_one_line_and_its_log_holds_the_traceback(
    tmp_path, data_dir, tiny_model_dir
):
    config = TrainerConfig(
        home=tmp_path / "home",
        listen="127.0.0.1:0",
        data_roots=(data_dir,),
        model_roots=(tiny_model_dir.parent,),
        python=scripted_python(tmp_path, "crash"),
    )
    server = await start_trainer(config)
    try:
        async with trainer_channel(server.address, server.credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            alice = as_user("alice")
            spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json")
            job = (
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=alice
                )
            ).job
            await watch_all(jobs, job.id, metadata=alice, timeout=60)
            job = (
                await jobs.GetTrainingJob(
                    training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=alice
                )
            ).job
            assert job.state == training_job_pb.JOB_STATE_FAILED
            assert reason_of(job.error) == Reason.WORKER_CRASHED
            message = job.error.message
            assert "\n" not in message and "Traceback" not in message and ".py" not in message
            assert message.startswith("the worker exited with code 1;") and "/log" in message

            # The owner reads the log: the tail first, then pages from the start.
            tail = await jobs.GetTrainingJobLog(
                log_request(job.id, tail=True, page_size=5), metadata=alice
            )
            assert len(tail.lines) == 5 and tail.at_end
            assert tail.lines[-1] == "RuntimeError: something broke deep inside"
            seen, token = [], ""
            while True:
                page = await jobs.GetTrainingJobLog(
                    log_request(job.id, page_size=100, page_token=token), metadata=alice
                )
                seen += page.lines
                token = page.next_page_token
                if page.at_end:
                    break
            assert seen.index("step 0 going fine") + 1 == seen.index("step 1 going fine")
            assert "Traceback (most recent call last):" in seen and seen[-5:] == list(tail.lines)
            assert page.size_bytes == sum(len(line) + 1 for line in seen)
            again = await jobs.GetTrainingJobLog(
                log_request(job.id, page_token=token), metadata=alice
            )
            assert list(again.lines) == [] and again.at_end  # following: nothing new yet

            # An admin reads it too; another tenant cannot tell the job exists.
            admin = await jobs.GetTrainingJobLog(
                log_request(job.id, tail=True, page_size=1), metadata=as_user("root", admin=True)
            )
            assert admin.lines == tail.lines[-1:]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await jobs.GetTrainingJobLog(log_request(job.id), metadata=as_user("bob"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            # A token is bound to its query: not for another rank, or another caller.
            for fields, who in (({"rank": 1}, alice), ({}, as_user("root", admin=True))):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await jobs.GetTrainingJobLog(
                        log_request(job.id, page_token=token, **fields), metadata=who
                    )
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(grace=5)


def test_pages_hold_whole_lines_and_cut_only_what_is_too_long(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"one\ntwo\nthree\npart")
    first = logs.read_page(path, 0, 2)
    assert first.lines == ["one", "two"] and not first.at_end
    rest = logs.read_page(path, first.next_offset, 10)
    assert rest.lines == ["three"] and rest.next_offset == len(b"one\ntwo\nthree\n")
    assert logs.read_page(path, 0, 2, tail=True).lines == ["two", "three"]
    with open(path, "ab") as f:
        f.write(b" written\n" + b"x" * (logs.MAX_LINE_BYTES + 10) + b"\n")
    grown = logs.read_page(path, rest.next_offset, 10)
    assert grown.lines[0] == "part written" and grown.lines[1].endswith("[line cut]")
    assert grown.at_end
    assert logs.read_page(tmp_path / "absent.log", 0, 5).lines == []
    path.write_text("key=s3cret-token-123 done\n")
    assert logs.read_page(path, 0, 5, secrets=("s3cret-token-123", "")).lines == [
        "key=[redacted] done"
    ]
