"""`python -m tunewire.trainer.worker.generate`: one JSON request in, one JSON line out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlx_lm.utils import load_tokenizer

from tunewire.trainer.processes.blas import worker_env

pytestmark = pytest.mark.timeout(90)


def generate(request: dict) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "tunewire.trainer.worker.generate"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=worker_env({**os.environ, "HF_HUB_OFFLINE": "1"}),
    )
    return proc.returncode, proc.stdout.splitlines()


def test_base_model_and_a_plain_prompt(tiny_model_dir):
    prompt = "What color is the sky?"
    code, lines = generate(
        {
            "model": str(tiny_model_dir),
            "prompt": prompt,
            "max_tokens": 6,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 0,
        }
    )
    assert code == 0 and len(lines) == 1, lines
    result = json.loads(lines[0])
    tokenizer = load_tokenizer(Path(tiny_model_dir))
    assert result["prompt_tokens"] == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert 1 <= result["generated_tokens"] <= 6
    assert isinstance(result["text"], str) and result["tokens_per_second"] > 0


def test_adapter_and_chat_messages_sample_reproducibly(make_config, run_worker, tiny_model_dir):
    trained = run_worker(make_config())
    adapter = trained.done().artifacts.adapter_path
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What color is the sky?"},
    ]
    request = {
        "model": str(tiny_model_dir),
        "adapter_path": adapter,
        "messages": messages,
        "max_tokens": 8,
        "temperature": 1.0,
        "top_p": 0.95,
        "seed": 7,
    }
    first_code, first = generate(request)
    second_code, second = generate(request)
    assert first_code == second_code == 0, first
    result, again = json.loads(first[0]), json.loads(second[0])
    # Same seed, same sample (only the speed differs).
    assert (result["text"], result["generated_tokens"]) == (
        again["text"],
        again["generated_tokens"],
    )
    tokenizer = load_tokenizer(Path(tiny_model_dir))
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert result["prompt_tokens"] == len(tokenizer.encode(rendered, add_special_tokens=False))


def test_a_missing_adapter_is_a_json_error(tiny_model_dir, tmp_path):
    code, lines = generate(
        {
            "model": str(tiny_model_dir),
            "adapter_path": str(tmp_path / "none"),
            "prompt": "hi",
            "max_tokens": 4,
        }
    )
    assert code == 1 and len(lines) == 1
    assert "none" in json.loads(lines[0])["error"]


@pytest.mark.parametrize(
    ("request_text", "message"),
    [
        (
            '{"model": "m", "prompt": "a", "messages": [{"role": "user", "content": "b"}]}',
            "exactly one of prompt or messages",
        ),
        ('{"model": "m", "prompt": "a", "max_tokens": 0}', "max_tokens must be an integer >= 1"),
        ('{"prompt": "a"}', "model is required"),
        ('{"model": "m", "prompt": "a", "beam": 4}', "unknown request field 'beam'"),
        ("not json", "not JSON"),
    ],
)
def test_bad_requests_are_refused_before_loading_anything(request_text, message):
    proc = subprocess.run(
        [sys.executable, "-m", "tunewire.trainer.worker.generate"],
        input=request_text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert message in json.loads(proc.stdout)["error"]
