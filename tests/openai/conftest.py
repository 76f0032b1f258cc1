"""A real trainer and gateway for the OpenAI SDK tests, run on their own event loop
in a background thread, so that the tests use the SDK's ordinary blocking client
exactly as a user's script does. Keys: alice and bob (members)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tunewire.gateway.config import GatewayConfig
from tunewire.gateway.keys import add_key
from tunewire.gateway.server import start_gateway
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import start_trainer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class OpenAIStack:
    base_url: str
    http_url: str
    grpc_address: str
    keys: dict[str, str]
    model_dir: Path
    home: Path
    loop: asyncio.AbstractEventLoop

    def client(self, who: str = "alice", **options):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.keys[who], **options)


class LoopThread:
    """An event loop running in a daemon thread; `run(coro)` waits for its result."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def openai_stack(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("openai")
    model_dir = tmp / "models" / "tiny"
    shutil.copytree(tiny_model_dir, model_dir)
    keys_file = tmp / "keys.yaml"
    keys = {name: add_key(keys_file, name, "member") for name in ("alice", "bob")}
    thread = LoopThread()
    trainer_config = TrainerConfig(
        home=tmp / "home",
        listen="127.0.0.1:0",
        data_roots=(tmp,),
        model_roots=(tmp / "models",),
        max_running_jobs=1,
        cancel_grace_seconds=5,
        shutdown_grace_seconds=5,
    )

    async def start():
        trainer = await start_trainer(trainer_config)
        gateway = await start_gateway(
            GatewayConfig(
                trainer=trainer.address,
                internal_token=trainer.credential,
                grpc_listen="127.0.0.1:0",
                http_listen="127.0.0.1:0",
                keys_file=keys_file,
            )
        )
        for _ in range(300):
            if gateway.trainer_health.serving:
                break
            await asyncio.sleep(0.05)
        return trainer, gateway

    trainer, gateway = thread.run(start())
    url = f"http://127.0.0.1:{gateway.http_port}"
    yield OpenAIStack(
        base_url=f"{url}/openai/v1",
        http_url=url,
        grpc_address=f"127.0.0.1:{gateway.grpc_port}",
        keys=keys,
        model_dir=model_dir,
        home=tmp / "home",
        loop=thread.loop,
    )

    async def stop():
        await gateway.stop(grace=0.5)
        await trainer.stop(grace=2)

    thread.run(stop())
    thread.close()


def wait_done(client, job_id: str, timeout: float = 180.0):
    """Polls `retrieve` until the job ends, as OpenAI's own examples do."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def trained_job(openai_stack):
    """A succeeded job of alice's on the tiny model, with checkpoints at steps 4 and 8."""
    client = openai_stack.client()
    with open(EXAMPLES / "alpaca_example.json", "rb") as f:
        training = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=str(openai_stack.model_dir),
        training_file=training.id,
        hyperparameters={"n_epochs": 2, "batch_size": 1},
        extra_body={"tunewire": {"checkpointing": {"interval_steps": 4}}},
    )
    done = wait_done(client, job.id)
    assert done.status == "succeeded", done.error
    return done
