"""`python -m tunewire.trainer.worker.inference` spoken to directly, line by line:
ready first, tokens as they are made, a finished record whose counts match the
tokenizer's, a failed record (not an exit) for a request that cannot run, and
lines that are not requests ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlx_lm.utils import load_tokenizer

from tunewire.trainer.processes.blas import worker_env
from tunewire.trainer.protocol import inference as proto
from tunewire.trainer.worker.inference import Stopper

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def worker():
    argv = ["-m", "tunewire.trainer.worker.inference", "--memory-budget-bytes", str(1 << 30)]
    proc = subprocess.Popen(
        [sys.executable, *argv, "--nice", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=worker_env({**os.environ, "HF_HUB_OFFLINE": "1"}),
    )
    yield proc
    proc.stdin.close()
    assert proc.wait(30) == 0


def send(proc, record) -> None:
    proc.stdin.write(proto.encode(record))
    proc.stdin.flush()


def until_end(proc, call_id: int):
    tokens = []
    while True:
        reply = proto.decode_reply(proc.stdout.readline())
        if isinstance(reply, proto.Token):
            assert reply.id == call_id
            tokens.append(reply.text)
        else:
            assert reply.id == call_id
            return tokens, reply


def call(call_id: int, model, **fields) -> proto.Generate:
    values = dict(
        adapter_path=None,
        quantization=None,
        prompt=None,
        messages=None,
        max_tokens=6,
        temperature=0.0,
        top_p=1.0,
        seed=0,
    )
    values.update(fields)
    return proto.Generate(id=call_id, model=str(model), **values)


def test_chat_tokens_stream_and_a_bad_request_fails_alone(worker, tiny_model_dir, tmp_path):
    ready = proto.decode_reply(worker.stdout.readline())
    assert isinstance(ready, proto.Ready) and ready.report.model_loads == 0

    worker.stdin.write(b"not a request\n")  # logged and skipped
    messages = [
        proto.Message(role="system", content="You answer briefly."),
        proto.Message(role="user", content="What color is the sky?"),
    ]
    send(worker, call(1, tiny_model_dir, messages=messages))
    tokens, done = until_end(worker, 1)
    assert isinstance(done, proto.Finished) and done.model_loaded
    assert "".join(tokens) == done.text and done.generated_tokens == 6
    tokenizer = load_tokenizer(Path(tiny_model_dir))
    chat = [{"role": m.role, "content": m.content} for m in messages]
    rendered = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert done.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))

    send(worker, call(2, tiny_model_dir, prompt="hi", adapter_path=str(tmp_path / "none")))
    _, failed = until_end(worker, 2)
    assert isinstance(failed, proto.Failed) and "cannot read the adapter in none" in failed.message
    assert not failed.over_budget and failed.report.model_loads == 1

    # Same seed, same sample; the model stayed loaded through the failure.
    send(worker, call(3, tiny_model_dir, messages=messages, temperature=1.0, seed=7))
    send(worker, call(4, tiny_model_dir, messages=messages, temperature=1.0, seed=7))
    _, third = until_end(worker, 3)
    _, fourth = until_end(worker, 4)
    assert third.text == fourth.text and not third.model_loaded
    assert fourth.report.model_loads == 1 and fourth.report.requests == 3


def test_a_stop_string_is_held_back_until_it_is_known_not_to_start():
    stopper = Stopper(["END"])
    assert [stopper.add(p) for p in ["Hel", "lo E", "N", "D more"]] == ["Hel", "lo ", "", ""]
    assert stopper.text == "Hello " and stopper.stopped
    stopper = Stopper(["xy"])
    assert [stopper.add(p) for p in ["ax", "z"]] == ["a", "xz"] and stopper.flush() == ""
