"""The daemon as users start it: no mlx in its process, unix sockets, health and reflection."""

import stat
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import ConfigError, start_trainer
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc


def test_the_daemon_never_imports_mlx():
    probe = (
        "import sys, tunewire.trainer.main, tunewire.trainer.server, tunewire.trainer.processes.launch;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_unix_socket_with_health_reflection_and_server_info(tmp_path):
    trainer = await start_trainer(TrainerConfig(home=tmp_path / "home", listen="unix"))
    try:
        assert trainer.address == f"unix:{tmp_path / 'home' / 'trainer.sock'}"
        async with grpc.aio.insecure_channel(trainer.address) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="tunewire.v1.TrainingService")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
            replies = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = {s.name async for r in replies for s in r.list_services_response.service}
            assert {
                "tunewire.v1.TrainingService",
                "tunewire.v1.DatasetService",
                "tunewire.v1.WebhookService",
                "grpc.health.v1.Health",
            } <= names
            # Health and reflection are open; everything else needs the credential,
            # on a unix socket too, and only this user may connect to the socket at all.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await training_service_grpc.TrainingServiceStub(ch).GetServerInfo(
                    training_service_pb.GetServerInfoRequest()
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stat.S_IMODE((tmp_path / "home" / "trainer.sock").stat().st_mode) == 0o600
        async with trainer_channel(trainer.address, trainer.credential) as ch:
            info = await training_service_grpc.TrainingServiceStub(ch).GetServerInfo(
                training_service_pb.GetServerInfoRequest()
            )
            assert info.service == "tunewire-trainer" and "qlora" in info.features
            assert (
                info.mlx_version
                and info.device in ("cpu", "gpu")
                and "ring" in info.distributed_backends
            )
    finally:
        await trainer.stop(grace=5)


async def test_a_public_bind_needs_the_internal_token(tmp_path):
    try:
        await start_trainer(TrainerConfig(home=tmp_path / "home", listen="0.0.0.0:0"))
    except ConfigError as exc:
        assert "TUNEWIRE_INTERNAL_TOKEN" in str(exc)
    else:
        raise AssertionError("the trainer listened on all interfaces without a token")
    trainer = await start_trainer(
        TrainerConfig(home=tmp_path / "home", listen="0.0.0.0:0", internal_token="s3cret")
    )
    try:
        address = f"127.0.0.1:{trainer.port}"
        async with grpc.aio.insecure_channel(address) as ch:
            stub = training_service_grpc.TrainingServiceStub(ch)
            try:
                await stub.ListTrainingJobs(training_service_pb.ListTrainingJobsRequest())
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                raise AssertionError("a call without the internal token was accepted")
            reply = await stub.ListTrainingJobs(
                training_service_pb.ListTrainingJobsRequest(),
                metadata=(("x-tunewire-internal-token", "s3cret"),),
            )
            assert reply.total_size == 0
    finally:
        await trainer.stop(grace=5)


async def test_a_second_daemon_on_a_busy_port_refuses_to_start(tmp_path):
    first = await start_trainer(TrainerConfig(home=tmp_path / "a", listen="127.0.0.1:0"))
    try:
        try:
            second = await start_trainer(TrainerConfig(home=tmp_path / "b", listen=first.address))
        except ConfigError as exc:
            assert first.address in str(exc)
        else:
            await second.stop(grace=1)
            raise AssertionError("two trainers share one port")
    finally:
        await first.stop(grace=5)
