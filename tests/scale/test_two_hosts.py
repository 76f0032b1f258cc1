"""A 2-rank job across two hosts: the trainer daemon on host A starts rank 1 on
host B over ssh (as `mlx.launch` does), the ranks all-reduce over the ring
backend on the veth pair, and the losses are the 1-rank job's.

The hosts are network namespaces (tests/scale/hosts.py); this needs root and
is skipped, saying so, elsewhere.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunewire.client.trainer_channel import trainer_channel
from tunewire.identity import read_credential
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from ..trainer.conftest import write_alpaca
from ..trainer.jobs_helpers import losses, states, tiny_spec, watch_all
from .hosts import ADDRESS_A, ADDRESS_B, HostsUnavailable, TwoHosts

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def two_hosts(tmp_path):
    hosts = TwoHosts(tmp_path)
    try:
        hosts.build()
    except HostsUnavailable as exc:
        hosts.close()
        pytest.skip(f"two-host ring test skipped: {exc}")
    try:
        hosts.start_sshd()
        yield hosts
    finally:
        hosts.close()


@pytest.fixture
def trainer_on_host_a(two_hosts, tmp_path, tiny_model_dir):
    """`tunewire-trainer` inside host A, on a unix socket the test reaches from outside."""
    home = tmp_path / "home"
    home.mkdir()
    socket_path = home / "trainer.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEWIRE_", "MLX_"))}
    env.update(TUNEWIRE_SSH_CONFIG=str(two_hosts.ssh_config), PYTHONUNBUFFERED="1")
    log = tmp_path / "trainer.log"
    process = subprocess.Popen(
        two_hosts.in_a(
            sys.executable,
            "-m",
            "tunewire.trainer.main",
            "--home",
            str(home),
            "--listen",
            f"unix:{socket_path}",
            "--data-root",
            str(tmp_path),
            "--model-root",
            str(tiny_model_dir.parent),
        ),
        env=env,
        cwd=tmp_path,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"unix:{socket_path}", home
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _serving(channel, timeout: float = 60) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        assert asyncio.get_running_loop().time() < deadline, "trainer in host A never served"
        await asyncio.sleep(0.2)


async def test_two_ranks_on_two_hosts_give_the_one_rank_losses(
    two_hosts, trainer_on_host_a, tiny_model_dir, tmp_path
):
    address, home = trainer_on_host_a
    data = write_alpaca(tmp_path / "alpaca.json", n=16)
    before = two_hosts.link_bytes()
    async with grpc.aio.insecure_channel(address) as channel:
        await _serving(channel)
    async with trainer_channel(address, read_credential(home)) as channel:
        jobs = training_service_grpc.TrainingServiceStub(channel)
        one = tiny_spec(tiny_model_dir, data, max_steps=6, batch_size=4, seed=3)
        two = tiny_spec(tiny_model_dir, data, max_steps=6, batch_size=4, seed=3)
        two.distributed.world_size = 2
        two.distributed.hosts.extend([f"{ADDRESS_A}:41000", f"{ADDRESS_B}:41001"])
        single = (
            await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=one))
        ).job
        pair = (
            await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=two))
        ).job
        single_events = await watch_all(jobs, single.id)
        pair_events = await watch_all(jobs, pair.id)

    rank1_log = home / "jobs" / pair.id / "train.rank1.log"
    assert states(pair_events)[-1] == "JOB_STATE_SUCCEEDED", (
        [e.state_change for e in pair_events if e.HasField("state_change")][-1],
        rank1_log.read_text() if rank1_log.exists() else "no rank 1 log",
    )
    assert states(single_events)[-1] == "JOB_STATE_SUCCEEDED"
    reasons = [e.state_change.reason for e in pair_events if e.HasField("state_change")]
    assert f"2 ranks started on {ADDRESS_A}:41000, {ADDRESS_B}:41001" in reasons

    one_loss, two_loss = dict(losses(single_events)), dict(losses(pair_events))
    assert one_loss.keys() == two_loss.keys() == set(range(1, 7))
    # Each rank sums its half of the batch; only float summation order differs.
    assert all(math.isclose(one_loss[s], two_loss[s], rel_tol=1e-4) for s in one_loss), (
        one_loss,
        two_loss,
    )

    # The gradients crossed the veth pair (rank 1 really ran in host B) ...
    after = two_hosts.link_bytes()
    assert after["rx"] - before["rx"] > 100_000 and after["tx"] - before["tx"] > 100_000, after
    # ... and nothing could leave the two hosts: no route but their own link.
    for ns in (two_hosts.ns_a, two_hosts.ns_b):
        assert sorted(two_hosts.links(ns)) == sorted(
            ["lo", two_hosts.veth_a if ns == two_hosts.ns_a else two_hosts.veth_b]
        )
        assert two_hosts.routes(ns) == [
            f"10.251.16.0/30 dev {two_hosts.veth_a if ns == two_hosts.ns_a else two_hosts.veth_b} "
            f"proto kernel scope link src {ADDRESS_A if ns == two_hosts.ns_a else ADDRESS_B}"
        ]
