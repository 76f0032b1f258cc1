"""Forwarding that keeps its promises: reflection and health, deadlines and
cancellation reaching the trainer, streams relayed live, the trainer going away
and coming back under a live gateway, and the per-key limits."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .conftest import restart_trainer, start_stack, wait_for

pytestmark = pytest.mark.timeout(120)


def detail(err: grpc.aio.AioRpcError, kind):
    message = kind()
    for d in rpc_status.from_call(err).details:
        if d.Unpack(message):
            return message
    return None


async def test_reflection_lists_every_public_service(stack):
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.channel())

    async def ask(**request):
        async for reply in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**request)])
        ):
            return reply

    reply = await ask(list_services="")
    names = {s.name for s in reply.list_services_response.service}
    assert names == {
        "tunewire.v1.TrainingService",
        "tunewire.v1.DatasetService",
        "tunewire.v1.WebhookService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    reply = await ask(file_containing_symbol="tunewire.v1.TrainingService")
    assert reply.file_descriptor_response.file_descriptor_proto  # a client can build its stubs


async def test_health_follows_the_trainer_down_and_back(stack, http):
    health = health_pb2_grpc.HealthStub(stack.channel())
    check = health_pb2.HealthCheckRequest
    for service in ("", "tunewire.v1.TrainingService", "tunewire.v1.DatasetService"):
        assert (
            await health.Check(check(service=service))
        ).status == health_pb2.HealthCheckResponse.SERVING
    job = await stack.create_job("alice")

    await stack.trainer.stop(grace=1)

    async def not_serving():
        return (
            await health.Check(check(service=""))
        ).status == health_pb2.HealthCheckResponse.NOT_SERVING

    await wait_for(not_serving, "health to say NOT_SERVING")
    training = stack.training()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await training.GetTrainingJob(
            training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert detail(info.value, error_details_pb2.RetryInfo) is not None
    assert detail(info.value, error_details_pb2.ErrorInfo).reason == "TRAINER_UNAVAILABLE"
    async with http.get(f"{stack.url}/v1/jobs/{job.id}", headers=stack.headers("alice")) as r:
        assert r.status == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["code"] == grpc.StatusCode.UNAVAILABLE.value[0]

    await restart_trainer(stack)

    async def serving():
        return (
            await health.Check(check(service=""))
        ).status == health_pb2.HealthCheckResponse.SERVING

    await wait_for(serving, "health to recover", timeout=20)
    got = await training.GetTrainingJob(
        training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
    )
    assert got.job.id == job.id  # same home: the job survived the restart


async def test_a_short_deadline_ends_the_watch_and_its_trainer_subscription(stack):
    job = await stack.create_job("alice")  # stays QUEUED: its watch never ends by itself
    training = stack.training()
    call = training.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job.id),
        metadata=stack.md("alice"),
        timeout=1.0,
    )
    first = await call.read()
    assert first.event.state_change.state == training_job_pb.JOB_STATE_QUEUED
    assert stack.trainer.bus.subscriber_count(job.id) == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for(
        lambda: stack.trainer.bus.subscriber_count(job.id) == 0,
        "the trainer to drop the subscription",
    )
    assert stack.gateway.streams.count("alice") == 0


async def test_a_client_that_leaves_cancels_the_trainer_call(stack):
    job = await stack.create_job("alice")
    call = stack.training().WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
    )
    await call.read()
    assert stack.trainer.bus.subscriber_count(job.id) == 1
    call.cancel()
    await wait_for(
        lambda: stack.trainer.bus.subscriber_count(job.id) == 0,
        "the trainer to drop the subscription",
    )
    await wait_for(
        lambda: stack.gateway.streams.count("alice") == 0, "the gateway to free the stream slot"
    )


async def test_watch_relays_events_live_and_ends_after_the_terminal_one(stack):
    job = await stack.create_job("alice")
    training = stack.training()
    call = training.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
    )
    first = await call.read()
    assert first.event.sequence == 1
    await training.CancelTrainingJob(
        training_service_pb.CancelTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
    )
    rest = []
    while (reply := await call.read()) is not grpc.aio.EOF:
        rest.append(reply)
    assert rest[-1].event.state_change.state == training_job_pb.JOB_STATE_CANCELLED
    assert [r.event.sequence for r in rest] == list(range(2, 2 + len(rest)))
    # Resuming after the first event replays the rest, then ends.
    replay = [
        r
        async for r in training.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job.id, after_sequence=1),
            metadata=stack.md("alice"),
        )
    ]
    assert [r.event.sequence for r in replay] == [r.event.sequence for r in rest]


async def test_rate_limit_answers_resource_exhausted_with_retry_info(
    tmp_path, tiny_model_dir, http
):
    stack = await start_stack(tmp_path, tiny_model_dir, rate_per_second=0.5, rate_burst=3)
    try:
        training = stack.training()
        request = training_service_pb.ListTrainingJobsRequest()
        for _ in range(3):
            await training.ListTrainingJobs(request, metadata=stack.md("alice"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await training.ListTrainingJobs(request, metadata=stack.md("alice"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        delay = detail(info.value, error_details_pb2.RetryInfo).retry_delay
        assert 0 < delay.seconds + delay.nanos / 1e9 <= 2
        # Bob has his own bucket, and over HTTP the same limit is a 429.
        await training.ListTrainingJobs(request, metadata=stack.md("bob"))
        async with http.get(f"{stack.url}/v1/jobs", headers=stack.headers("alice")) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] in ("1", "2")
            body = await r.json()
            assert any(d["@type"].endswith("RetryInfo") for d in body["details"])
    finally:
        await stack.close()


async def test_too_many_streams_per_key_are_refused(tmp_path, tiny_model_dir):
    stack = await start_stack(tmp_path, tiny_model_dir, max_streams_per_key=2)
    try:
        job = await stack.create_job("alice")
        training = stack.training()
        request = training_service_pb.WatchTrainingJobRequest(job_id=job.id)
        open_calls = [
            training.WatchTrainingJob(request, metadata=stack.md("alice")) for _ in range(2)
        ]
        for call in open_calls:
            await call.read()
        third = training.WatchTrainingJob(request, metadata=stack.md("alice"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await third.read()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert detail(info.value, error_details_pb2.ErrorInfo).reason == "TOO_MANY_STREAMS"
        assert detail(info.value, error_details_pb2.RetryInfo) is not None
        # The limit is per key, not per transport: an HTTP stream is refused too.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{stack.url}/v1/jobs/{job.id}/events", headers=stack.headers("alice")) as r,
        ):
            assert r.status == 429 and r.headers["Retry-After"] == "1"
            assert (await r.json())["details"][0]["reason"] == "TOO_MANY_STREAMS"
        # Another key is not affected; a closed stream frees its slot.
        root_call = training.WatchTrainingJob(request, metadata=stack.md("root"))
        await root_call.read()
        open_calls[0].cancel()
        await wait_for(lambda: stack.gateway.streams.count("alice") == 1, "a slot to free up")
        again = training.WatchTrainingJob(request, metadata=stack.md("alice"))
        assert (await again.read()).event.sequence == 1
        for call in (open_calls[1], root_call, again):
            call.cancel()
    finally:
        await stack.close()


async def upload_chunks(data: bytes, size: int, name: str = "upload.json"):
    yield dataset_service_pb.UploadDatasetRequest(
        metadata=dataset_service_pb.UploadMetadata(display_name=name)
    )
    for i in range(0, len(data), size):
        yield dataset_service_pb.UploadDatasetRequest(chunk=data[i : i + size])


async def test_client_streaming_upload_is_forwarded_chunk_by_chunk(stack):
    data = (stack.data_dir / "alpaca.json").read_bytes()
    reply = await stack.datasets().UploadDataset(
        upload_chunks(data, 100), metadata=stack.md("alice")
    )
    assert reply.dataset.sha256 == hashlib.sha256(data).hexdigest()
    assert reply.dataset.owner == "alice"
    assert reply.dataset.report.valid


async def test_uploads_and_messages_over_the_limits_are_refused(tmp_path, tiny_model_dir):
    stack = await start_stack(
        tmp_path,
        tiny_model_dir,
        max_upload_bytes=500,
        max_message_bytes=4096,
        upload_chunk_bytes=1024,
    )
    try:
        data = (stack.data_dir / "alpaca.json").read_bytes()
        assert len(data) > 500
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.datasets().UploadDataset(
                upload_chunks(data, 200), metadata=stack.md("alice")
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert detail(info.value, error_details_pb2.ErrorInfo).reason == "UPLOAD_TOO_LARGE"
        assert "500 bytes" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.datasets().ValidateDataset(
                dataset_service_pb.ValidateDatasetRequest(content=b"x" * 8192),
                metadata=stack.md("alice"),
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await stack.close()


async def test_restarting_the_gateway_leaves_jobs_alone(stack):
    job = await stack.create_job("alice")
    watch = stack.training().WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
    )
    await watch.read()
    await stack.gateway.stop(grace=0.5)
    # An open stream is told why it ends, and that it may come back.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch.read()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert detail(info.value, error_details_pb2.ErrorInfo).reason == "GATEWAY_STOPPING"
    assert detail(info.value, error_details_pb2.RetryInfo) is not None
    await wait_for(
        lambda: stack.trainer.bus.subscriber_count(job.id) == 0, "the trainer side to end"
    )
    from tunewire.gateway.server import start_gateway

    stack.gateway = await start_gateway(stack.gateway.config)
    await wait_for(
        lambda: stack.gateway.trainer_health.serving, "the new gateway to see the trainer"
    )
    got = await stack.training().GetTrainingJob(
        training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
    )
    assert got.job.state == training_job_pb.JOB_STATE_QUEUED
    assert got.job.last_event_sequence == job.last_event_sequence


async def test_concurrent_calls_from_many_clients_all_arrive(stack):
    training = stack.training()
    replies = await asyncio.gather(
        *(
            training.ListTrainingJobs(
                training_service_pb.ListTrainingJobsRequest(), metadata=stack.md(who)
            )
            for who in ("alice", "bob", "root") * 10
        )
    )
    assert len(replies) == 30
