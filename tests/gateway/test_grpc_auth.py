"""Authentication and ownership over gRPC: every forwarded RPC with no key, a
wrong key, the right key, and another member's key."""

from __future__ import annotations

import contextlib
import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tunewire.gateway.methods import forwarded_methods
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

pytestmark = pytest.mark.timeout(90)

METHODS = forwarded_methods()


async def call_raw(
    channel: grpc.aio.Channel, method, metadata
) -> tuple[grpc.StatusCode, grpc.aio.AioRpcError | None]:
    """Calls any method with an empty request, whatever its shape; returns the code."""
    request = method.request_class().SerializeToString()
    try:
        if method.client_streaming:

            async def one():
                yield request

            await channel.stream_unary(method.path)(one(), metadata=metadata, timeout=10)
        elif method.server_streaming:
            call = channel.unary_stream(method.path)(request, metadata=metadata, timeout=10)
            async for _ in call:
                break
            call.cancel()
        else:
            await channel.unary_unary(method.path)(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as err:
        return err.code(), err
    return grpc.StatusCode.OK, None


async def test_every_rpc_refuses_calls_without_a_valid_key(stack):
    channel = stack.channel()
    for method in METHODS.values():
        for metadata, reason in (
            ((), "API_KEY_REQUIRED"),
            ((("x-api-key", "tw_wrong"),), "INVALID_API_KEY"),
            ((("authorization", "Bearer tw_wrong"),), "INVALID_API_KEY"),
        ):
            code, err = await call_raw(channel, method, metadata)
            if method.public and not metadata:
                assert code == grpc.StatusCode.OK, method.path
                continue
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method.path, metadata)
            status = rpc_status.from_call(err)
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info) and info.reason == reason
            assert "tw_wrong" not in err.details()


async def test_every_rpc_with_a_right_key_reaches_the_trainer(stack):
    """With a key, each method gets the trainer's own answer (an empty request is
    mostly INVALID_ARGUMENT), never UNAUTHENTICATED."""
    channel = stack.channel()
    for method in METHODS.values():
        for header in ("authorization", "x-api-key"):
            value = (
                f"Bearer {stack.keys['alice']}"
                if header == "authorization"
                else stack.keys["alice"]
            )
            code, err = await call_raw(channel, method, ((header, value),))
            assert code not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.UNIMPLEMENTED,
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.INTERNAL,
            ), (method.path, code, err)


async def test_jobs_belong_to_their_key_and_are_not_found_by_others(stack):
    training = stack.training()
    job = await stack.create_job("alice")
    assert job.owner == "alice" and job.state == training_job_pb.JOB_STATE_QUEUED

    async def expect_not_found(coro):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await coro
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        status = rpc_status.from_call(info.value)
        resource = error_details_pb2.ResourceInfo()
        assert any(d.Unpack(resource) for d in status.details)
        assert resource.resource_name == job.id

    bob = stack.md("bob")
    await expect_not_found(
        training.GetTrainingJob(
            training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=bob
        )
    )
    await expect_not_found(
        training.CancelTrainingJob(
            training_service_pb.CancelTrainingJobRequest(job_id=job.id), metadata=bob
        )
    )
    await expect_not_found(
        training.ListCheckpoints(
            training_service_pb.ListCheckpointsRequest(job_id=job.id), metadata=bob
        )
    )
    await expect_not_found(
        training.Generate(
            training_service_pb.GenerateRequest(job_id=job.id, prompt="hi"), metadata=bob
        )
    )

    async def watch_first():
        async for reply in training.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job.id), metadata=bob
        ):
            return reply

    await expect_not_found(watch_first())
    listed = await training.ListTrainingJobs(
        training_service_pb.ListTrainingJobsRequest(), metadata=bob
    )
    assert [j.id for j in listed.jobs] == [] and listed.total_size == 0

    # The owner and an admin see it.
    for who in ("alice", "root"):
        got = await training.GetTrainingJob(
            training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=stack.md(who)
        )
        assert got.job.id == job.id
        listed = await training.ListTrainingJobs(
            training_service_pb.ListTrainingJobsRequest(), metadata=stack.md(who)
        )
        assert [j.id for j in listed.jobs] == [job.id]


async def test_client_supplied_identity_metadata_is_ignored(stack):
    job = await stack.create_job("alice")
    forged = (*stack.md("bob"), ("x-tunewire-principal", "alice"), ("x-tunewire-role", "admin"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.training().GetTrainingJob(
            training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=forged
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # Without a key, claiming to be an admin is still no key at all.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.training().ListTrainingJobs(
            training_service_pb.ListTrainingJobsRequest(),
            metadata=(("x-tunewire-principal", "root"), ("x-tunewire-role", "admin")),
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_server_info_needs_no_key_but_refuses_a_wrong_one(stack):
    training = stack.training()
    info = await training.GetServerInfo(training_service_pb.GetServerInfoRequest())
    assert info.version and "lora" in info.features
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await training.GetServerInfo(
            training_service_pb.GetServerInfoRequest(), metadata=(("x-api-key", "nope"),)
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_trainer_errors_are_relayed_with_their_details(stack):
    spec = stack.spec()
    spec.lora.rank = 0
    spec.hyperparameters.max_seq_length = 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.training().CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=stack.md("alice")
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    fields = {v.field for v in bad.field_violations}
    assert {"spec.lora.rank", "spec.hyperparameters.max_seq_length"} <= fields


async def test_keys_never_reach_the_logs(stack, http, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "tw_this-key-is-wrong-but-still-secret"
    training = stack.training()
    for key in (stack.keys["alice"], wrong):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await training.ListTrainingJobs(
                training_service_pb.ListTrainingJobsRequest(), metadata=(("x-api-key", key),)
            )
        async with http.get(
            f"{stack.url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}
        ) as r:
            await r.read()
        async with http.get(f"{stack.url}/train", headers={"X-API-Key": key}) as r:
            await r.read()
    assert caplog.records  # the gateway did log (access lines), just not the keys
    assert stack.keys["alice"] not in caplog.text and wrong not in caplog.text
