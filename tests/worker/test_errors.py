"""Failures a user can fix end in one "error" event that says what to change, and exit code 1."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(60)


def single_error(worker) -> dict:
    assert worker.returncode == 1, worker.log()
    assert worker.events[-1].kind == "error", worker.events
    assert not worker.of_type("done")
    return worker.events[-1]


def test_unknown_target_module_is_named_with_the_valid_ones(make_config, run_worker):
    # The daemon refuses unknown names; a worker whose model has other blocks than the
    # daemon inspected still names what it found.
    config = make_config()
    config.lora.target_modules = ["q_proj", "qkv_proj"]
    worker = run_worker(config)
    error = single_error(worker)
    assert error.reason == "UNKNOWN_TARGET_MODULE"
    assert "'qkv_proj'" in error.message
    for valid in ("q_proj", "v_proj", "down_proj", "self_attn.q_proj"):
        assert valid in error.message


def test_block_relative_target_modules_adapt_only_those(make_config, run_worker):
    worker = run_worker(
        make_config(
            lora={"target_modules": ["self_attn.v_proj", "down_proj"]},
            hyperparameters={"max_steps": 1},
        )
    )
    assert worker.returncode == 0, worker.log()
    (setup,) = worker.of_type("setup")
    assert setup.lora_details.target_modules == ["self_attn.v_proj", "mlp.down_proj"]


def test_a_model_that_does_not_exist_is_an_error_event(make_config, run_worker, tmp_path):
    worker = run_worker(make_config(model=str(tmp_path / "no-such-model")))
    error = single_error(worker)
    assert error.reason == "MODEL_NOT_FOUND"
    assert "no-such-model" in error.message


def test_a_dataset_smaller_than_the_batch_is_an_error_event(make_config, run_worker, tmp_path):
    small = tmp_path / "two.jsonl"
    record = {
        "messages": [
            {"role": "user", "content": "hi", "trainable": False},
            {"role": "assistant", "content": "hello", "trainable": True},
        ]
    }
    small.write_text((json.dumps(record) + "\n") * 2)
    worker = run_worker(make_config(train_path=str(small)))
    error = single_error(worker)
    assert error.reason == "DATASET_INVALID"
    assert "2 records but batch_size is 4" in error.message


def test_a_config_the_worker_cannot_read_is_an_error_event(make_config, run_worker):
    config = make_config()
    config.hyperparameters.optimizer = "lion"  # a word the proto does not have
    worker = run_worker(config)
    error = single_error(worker)
    assert error.reason == "INVALID_CONFIG"
    assert "hyperparameters.optimizer" in error.message and "'lion'" in error.message
