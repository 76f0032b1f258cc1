"""`tunewire-gateway`'s flags and environment, its one-line start-up errors, and
the single-user key and internal token in a running stack."""

from __future__ import annotations

import socket
import subprocess
import sys

import grpc
import pytest

from tunewire.addresses import DEFAULT_GATEWAY_GRPC, DEFAULT_GATEWAY_HTTP, DEFAULT_TRAINER
from tunewire.gateway.config import GatewayConfig, parse_args
from tunewire.gateway.keys import add_key
from tunewire.gateway.server import start_gateway
from tunewire.identity import credential_path
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import start_trainer
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .conftest import start_stack, wait_for

pytestmark = pytest.mark.timeout(90)


def test_defaults_are_loopback_and_keys_live_in_tunewire_home(tmp_path):
    config = parse_args([], environ={"TUNEWIRE_HOME": str(tmp_path)})
    assert (config.trainer, config.grpc_listen, config.http_listen) == (
        DEFAULT_TRAINER,
        DEFAULT_GATEWAY_GRPC,
        DEFAULT_GATEWAY_HTTP,
    )
    assert DEFAULT_GATEWAY_GRPC == "127.0.0.1:50051" and DEFAULT_GATEWAY_HTTP == "127.0.0.1:8200"
    assert config.api_keys == () and config.internal_token == ""
    assert config.keys_file == tmp_path.resolve() / "keys.yaml"
    assert config.credential_file == tmp_path.resolve() / "internal-token"


def test_flags_and_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_args(
        [
            "--trainer",
            "unix:/tmp/t.sock",
            "--grpc-listen",
            "0.0.0.0:6000",
            "--http-listen",
            "0.0.0.0:6001",
            "--keys",
            "k.yaml",
            "--rate",
            "5",
            "--burst",
            "7",
            "--max-streams",
            "3",
            "--max-upload-mb",
            "10",
        ],
        environ={
            "MLX_TRAINING_API_KEY": "old-client-key",
            "TUNEWIRE_API_KEY": "new-key",
            "TUNEWIRE_INTERNAL_TOKEN": "s3cret-tok",
        },
    )
    assert config.trainer == "unix:/tmp/t.sock" and config.keys_file == tmp_path / "k.yaml"
    assert (config.rate_per_second, config.rate_burst, config.max_streams_per_key) == (5, 7, 3)
    assert config.max_upload_bytes == 10 << 20
    assert (
        set(config.api_keys) == {"old-client-key", "new-key"}
        and config.internal_token == "s3cret-tok"
    )
    assert "new-key" not in repr(config) and "s3cret-tok" not in repr(config)


def test_bad_flags_name_the_value():
    with pytest.raises(SystemExit):
        parse_args(["--max-streams", "0"], environ={})


def run_gateway(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunewire.gateway.main", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_broken_keys_file_is_one_line_and_exit_2(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {name: a, role: owner, sha256: '" + "0" * 64 + "'}\n")
    result = run_gateway(
        "--keys", str(keys), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"tunewire-gateway: error: {keys}:2: field 'role' must be 'admin' or 'member', got 'owner'"
    )
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_gateway(
            "--keys",
            str(tmp_path / "k.yaml"),
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} for HTTP" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


async def test_the_single_user_key_is_an_admin(tmp_path, tiny_model_dir):
    stack = await start_stack(tmp_path, tiny_model_dir, api_keys=("dev-key-123",))
    try:
        job = await stack.create_job("alice")
        listed = await stack.training().ListTrainingJobs(
            training_service_pb.ListTrainingJobsRequest(), metadata=(("x-api-key", "dev-key-123"),)
        )
        assert [j.id for j in listed.jobs] == [job.id]
    finally:
        await stack.close()


async def test_a_gateway_started_before_its_trainer_reads_the_credential_once_made(
    tmp_path, tiny_model_dir
):
    """A standalone gateway on the trainer's home: the credential file does not exist
    yet when it starts; it is read as soon as the trainer has made it."""
    home = tmp_path / "home"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        trainer_address = f"127.0.0.1:{s.getsockname()[1]}"
    keys_file = tmp_path / "keys.yaml"
    key = add_key(keys_file, "alice", "member")
    gateway = await start_gateway(
        GatewayConfig(
            trainer=trainer_address,
            grpc_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            keys_file=keys_file,
            credential_file=credential_path(home),
        )
    )
    trainer = await start_trainer(TrainerConfig(home=home, listen=trainer_address))
    try:
        await wait_for(lambda: gateway.trainer_health.serving, "the gateway to see the trainer")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = training_service_grpc.TrainingServiceStub(channel)
            listed = await wait_for(
                lambda: _listed(stub, key), "the gateway to present the new credential"
            )
        assert listed.total_size == 0
    finally:
        await gateway.stop(grace=0.5)
        await trainer.stop(grace=2)


async def _listed(stub, key: str):
    try:
        return await stub.ListTrainingJobs(
            training_service_pb.ListTrainingJobsRequest(), metadata=(("x-api-key", key),)
        )
    except grpc.aio.AioRpcError as err:
        # Until the gateway has read the new credential the trainer refuses it: the
        # client is told to retry, not to bring another key.
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        return None


async def test_the_internal_token_lets_the_gateway_and_nobody_else_in(tmp_path, tiny_model_dir):
    stack = await start_stack(
        tmp_path, tiny_model_dir, trainer_token="internal-secret", internal_token="internal-secret"
    )
    try:
        job = await stack.create_job("alice")
        assert job.owner == "alice"
        async with grpc.aio.insecure_channel(stack.trainer.address) as direct:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await training_service_grpc.TrainingServiceStub(direct).ListTrainingJobs(
                    training_service_pb.ListTrainingJobsRequest(),
                    metadata=(("x-tunewire-principal", "root"), ("x-tunewire-role", "admin")),
                )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await stack.close()
