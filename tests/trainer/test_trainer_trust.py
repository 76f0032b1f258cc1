"""The trainer trusts only callers with its internal credential (issue 13, item 2):
a local process without it is refused, identity metadata without it is refused,
the credential is the trainer's own file (owner-only) unless the operator sets one."""

from __future__ import annotations

import stat
from dataclasses import replace

import grpc
import pytest
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tunewire.client.trainer_channel import trainer_channel
from tunewire.identity import credential_path, read_credential
from tunewire.trainer.server import start_trainer
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .conftest import as_user

pytestmark = pytest.mark.timeout(120)

SERVICES = (
    training_service_pb.DESCRIPTOR.services_by_name["TrainingService"],
    dataset_service_pb.DESCRIPTOR.services_by_name["DatasetService"],
)


def reason_of(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


async def call_raw(channel: grpc.aio.Channel, method, metadata) -> grpc.aio.AioRpcError | None:
    """Calls `method` with an empty request in its shape; the error, or None."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    empty = empty_pb2.Empty().SerializeToString()
    try:
        if method.client_streaming:
            call = channel.stream_unary(path)(iter([empty]), metadata=metadata, timeout=10)
            await call
        elif method.server_streaming:
            call = channel.unary_stream(path)(empty, metadata=metadata, timeout=10)
            async for _ in call:
                pass
        else:
            await channel.unary_unary(path)(empty, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as err:
        return err
    return None


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        as_user("alice"),
        as_user("root", admin=True),
        (("x-tunewire-internal-token", "guessed"), *as_user("alice")),
        (("x-tunewire-internal-token", ""),),
    ],
    ids=["nothing", "principal-alice", "principal-admin", "wrong-credential", "empty-credential"],
)
async def test_every_rpc_without_the_credential_is_refused(trainer, metadata):
    async with grpc.aio.insecure_channel(trainer.address) as channel:
        for service in SERVICES:
            for method in service.methods:
                err = await call_raw(channel, method, metadata)
                assert err is not None, f"{method.name} answered without the credential"
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
                assert reason_of(err) == "INTERNAL_TOKEN_REQUIRED", method.name
                assert trainer.credential not in (err.details() or "")


async def test_health_answers_anyone_who_can_connect(trainer):
    async with grpc.aio.insecure_channel(trainer.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_with_the_credential_the_principal_is_believed(trainer, channel):
    jobs = training_service_grpc.TrainingServiceStub(channel)
    # The operator (credential, no principal) is the local admin.
    info = await jobs.GetServerInfo(training_service_pb.GetServerInfoRequest())
    assert info.service == "tunewire-trainer"
    listing = await jobs.ListTrainingJobs(
        training_service_pb.ListTrainingJobsRequest(), metadata=as_user("alice")
    )
    assert listing.total_size == 0


async def test_the_credential_is_the_homes_owner_only_file_and_survives_restarts(trainer):
    path = credential_path(trainer.config.home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_credential(trainer.config.home) == trainer.credential
    assert len(trainer.credential) >= 40  # 256 random bits, URL-safe
    await trainer.stop(grace=1)
    again = await start_trainer(replace(trainer.config, internal_token=""))
    try:
        assert again.credential == trainer.credential
    finally:
        await again.stop(grace=1)


async def test_a_credential_others_could_read_is_made_private(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    credential_path(home).write_text("operator-made-token\n")
    credential_path(home).chmod(0o644)
    from tunewire.trainer.config import TrainerConfig

    trainer = await start_trainer(TrainerConfig(home=home, listen="127.0.0.1:0"))
    try:
        assert trainer.credential == "operator-made-token"
        assert stat.S_IMODE(credential_path(home).stat().st_mode) == 0o600
        async with trainer_channel(trainer.address, "operator-made-token") as ch:
            await training_service_grpc.TrainingServiceStub(ch).GetServerInfo(
                training_service_pb.GetServerInfoRequest()
            )
    finally:
        await trainer.stop(grace=1)
