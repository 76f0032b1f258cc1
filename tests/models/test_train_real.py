"""A short LoRA run on the real SmolLM2 (float32) through the real services: its loss falls,
and Generate with its adapter differs from the base on a held-out question."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tunewire.cli import demo, signoff
from tunewire.client import Client
from tunewire.v1 import training_job_pb2 as training_job_pb

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(900)]

_spec = importlib.util.spec_from_file_location(
    "cli_services_train", Path(__file__).resolve().parents[1] / "cli" / "services.py"
)
services_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = services_module  # dataclasses look their module up there
_spec.loader.exec_module(services_module)


def test_a_short_lora_run_learns_and_its_adapter_generates(tmp_path, smollm2_float_dir):
    stack = services_module.Services(tmp_path, model_root=smollm2_float_dir.parent)
    try:
        stack.start_trainer()
        stack.start_gateway()
        with Client(stack.address, services_module.API_KEY) as client:
            train = client.upload_dataset(signoff.TRAIN_FILE)
            held_out = client.upload_dataset(signoff.HELD_OUT_FILE)
            settings = demo.DemoSettings(steps=12)
            spec = demo.demo_spec(str(smollm2_float_dir), train.id, held_out.id, settings)
            spec.report_interval_steps = 1
            job = client.create_job(spec)
            events = list(client.watch(job.id))
            losses = [e.training_metrics.loss for e in events if e.HasField("training_metrics")]
            validation = [
                e.evaluation_metrics.validation_loss
                for e in events
                if e.HasField("evaluation_metrics")
            ]
            job = client.get_job(job.id)
            assert job.state == training_job_pb.JOB_STATE_SUCCEEDED, job.error.message
            assert len(losses) == 12 and max(losses[-3:]) < 0.8 * min(losses[:3]), losses
            assert validation and validation[-1] < 0.8 * losses[0], validation  # held-out chats
            messages = [{"role": "user", "content": signoff.held_out_prompts()[1]}]
            base = client.generate(model=str(smollm2_float_dir), messages=messages, max_tokens=32)
            tuned = client.generate(job.id, messages=messages, max_tokens=32)
            assert tuned.adapter_path == job.artifacts.adapter_path and not base.adapter_path
            assert tuned.text.strip() and tuned.text != base.text
    finally:
        stack.close()
