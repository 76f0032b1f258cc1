"""Two trainer daemons on one PostgreSQL database and one artifact root, and a
gateway balancing over both (the shared-queue tests' stack)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tunewire.gateway.config import GatewayConfig
from tunewire.gateway.keys import add_key
from tunewire.gateway.server import GatewayServer, start_gateway

from ..trainer.conftest import write_alpaca
from .trainers import CREDENTIAL, SharedTrainer


@dataclass
class Stack:
    a: SharedTrainer
    b: SharedTrainer
    data: Path
    gateway: GatewayServer
    key: str

    @property
    def md(self):
        return (("authorization", f"Bearer {self.key}"),)

    def gateway_channel(self):
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.gateway.grpc_port}")


@pytest.fixture
async def two_trainers(tmp_path, postgres_url, tiny_model_dir):
    data = tmp_path / "data"
    data.mkdir()
    write_alpaca(data / "alpaca.json", n=32)
    artifacts = tmp_path / "shared"
    trainers = [
        SharedTrainer(name, tmp_path, postgres_url, artifacts, data, tiny_model_dir.parent)
        for name in "ab"
    ]
    gateway = None
    try:
        await asyncio.gather(*(t.start() for t in trainers))
        keys = tmp_path / "keys.yaml"
        key = add_key(keys, "alice", "member")
        gateway = await start_gateway(
            GatewayConfig(
                trainer=",".join(t.address for t in trainers),
                grpc_listen="127.0.0.1:0",
                http_listen="127.0.0.1:0",
                keys_file=keys,
                internal_token=CREDENTIAL,
            )
        )
        yield Stack(trainers[0], trainers[1], data, gateway, key)
    finally:
        if gateway is not None:
            await gateway.stop(grace=0.5)
        for t in trainers:
            t.stop()
