"""Export on the real model, through the real services: import → QLoRA → ExportArtifact.

One short QLoRA job on SmolLM2 as shipped (4-bit layers from the Q4_1 GGUF,
trained on as they are) feeds every test: the merged GGUF (f16) imported again
answers exactly as mlx-lm's own fused model and as the mlx export; every
tensor the adapter did not touch is the source GGUF's blocks byte for byte;
the GGUF adapter is llama.cpp's layout with the Q/K rows permuted back.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

import gguf
import grpc
import numpy as np
import pytest
from safetensors import safe_open

from tunewire.cli import signoff
from tunewire.client import Client, TunewireError
from tunewire.models.gguf_arch import gguf_name, permute_rows
from tunewire.models.gguf_import import import_gguf
from tunewire.v1 import training_job_pb2 as training_job_pb

from .helpers import probe

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(900)]

_spec = importlib.util.spec_from_file_location(
    "cli_services", Path(__file__).resolve().parents[1] / "cli" / "services.py"
)
services_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = services_module  # dataclasses look their module up there
_spec.loader.exec_module(services_module)

PROMPT = "How many legs does a spider have?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm2_dir):
    """(services, client, finished QLoRA job) on the 4-bit SmolLM2."""
    root = tmp_path_factory.mktemp("export")
    stack = services_module.Services(root, model_root=smollm2_dir.parent)
    try:
        stack.start_trainer()
        stack.start_gateway()
        with Client(stack.address, services_module.API_KEY) as client:
            dataset = client.upload_dataset(signoff.TRAIN_FILE)
            spec = training_job_pb.TrainingJobSpec(
                model=str(smollm2_dir),
                method=training_job_pb.TRAINING_METHOD_QLORA,
                report_interval_steps=1,
            )
            spec.dataset.dataset_id = dataset.id
            hp = spec.hyperparameters
            hp.max_steps, hp.batch_size, hp.learning_rate, hp.max_seq_length = 4, 2, 2e-3, 96
            spec.lora.rank, spec.lora.alpha, spec.lora.num_layers = 4, 8.0, 2
            job = client.create_job(spec)
            losses = [
                e.training_metrics.loss
                for e in client.watch(job.id)
                if e.HasField("training_metrics")
            ]
            job = client.get_job(job.id)
            assert job.state == training_job_pb.JOB_STATE_SUCCEEDED, job.error.message
            assert losses[-1] < losses[0], losses  # QLoRA on the file's 4-bit layers learns
            yield stack, client, job
    finally:
        stack.close()


def _tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _adapted_modules(job) -> list[str]:
    with safe_open(Path(job.artifacts.adapter_path, "adapters.safetensors"), "np") as f:
        return sorted({k.rsplit(".", 1)[0] for k in f.keys()})


def test_merged_gguf_reimported_answers_as_mlx_lms_fused_model_and_the_mlx_export(
    trained, smollm2_dir, tmp_path
):
    _, client, job = trained
    merged = client.export(job.id, "gguf", tmp_path / "merged.gguf", tensor_type="f16").path
    folder = client.export(job.id, "mlx", tmp_path / "fused-mlx").path
    import_gguf(merged, tmp_path / "reimported")
    replies = probe("generate", PROMPT, "24", str(tmp_path / "reimported"), str(folder))
    fused = probe("fused", PROMPT, "24", str(smollm2_dir), job.artifacts.adapter_path)
    assert fused["fused"] == len(_adapted_modules(job)) == 2 * 7
    assert replies[str(tmp_path / "reimported")] == fused["reply"]
    assert replies[str(folder)] == fused["reply"]
    assert fused["reply"].strip()
    # Generate with the job's adapter (unfused, the 4-bit base) answers too.
    reply = client.generate(job.id, messages=[{"role": "user", "content": PROMPT}], max_tokens=24)
    assert reply.text.strip() and reply.adapter_path == job.artifacts.adapter_path


def test_merged_gguf_changes_only_the_adapted_tensors(trained, smollm2_dir, tmp_path):
    _, client, job = trained
    merged = client.export(job.id, "gguf", tmp_path / "m.gguf", tensor_type="q8_0").path
    source, out = _tensors(smollm2_dir / "source.gguf"), _tensors(merged)
    adapted = {gguf_name(f"{m}.weight") for m in _adapted_modules(job)}
    assert set(out) == set(source)
    for name, tensor in source.items():
        if name in adapted:
            assert out[name].tensor_type == gguf.GGMLQuantizationType.Q8_0
            assert tuple(out[name].shape) == tuple(tensor.shape)
        else:
            assert out[name].tensor_type == tensor.tensor_type, name
            assert out[name].data.tobytes() == tensor.data.tobytes(), name
    meta = gguf.GGUFReader(merged).fields
    assert meta["general.architecture"].contents() == "llama"
    assert meta["tokenizer.chat_template"].contents() == (
        gguf.GGUFReader(smollm2_dir / "source.gguf").fields["tokenizer.chat_template"].contents()
    )


def test_gguf_adapter_is_llama_cpps_layout_with_q_and_k_permuted(trained, smollm2_dir, tmp_path):
    _, client, job = trained
    path = client.export(job.id, "gguf-adapter", tmp_path / "adapter.gguf").path
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    settings = json.loads(Path(job.artifacts.adapter_path, "adapter_config.json").read_text())
    lora = settings["lora_parameters"]
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama"
    assert fields["adapter.lora.alpha"] == pytest.approx(lora["scale"] * lora["rank"])
    config = json.loads((smollm2_dir / "config.json").read_text())
    tensors = {t.name: t for t in reader.tensors}
    with safe_open(Path(job.artifacts.adapter_path, "adapters.safetensors"), "np") as f:
        modules = _adapted_modules(job)
        assert set(tensors) == {
            f"{gguf_name(m + '.weight')}.{part}" for m in modules for part in ("lora_a", "lora_b")
        }
        for module in modules:
            base = gguf_name(f"{module}.weight")
            a, b = tensors[f"{base}.lora_a"], tensors[f"{base}.lora_b"]
            assert a.tensor_type == b.tensor_type == gguf.GGMLQuantizationType.F32
            want_a = f.get_tensor(f"{module}.lora_a").T  # (rank, in): PEFT's lora_A
            want_b = f.get_tensor(f"{module}.lora_b").T  # (out, rank)
            heads = {
                "q_proj": config["num_attention_heads"],
                "k_proj": config["num_key_value_heads"],
            }.get(module.rsplit(".", 1)[-1])
            if heads:
                want_b = permute_rows(want_b, heads)
            np.testing.assert_array_equal(np.asarray(a.data), want_a)
            np.testing.assert_array_equal(np.asarray(b.data), want_b)
            # The base tensor's row length and row count, as llama.cpp checks them.
            source = _tensors(smollm2_dir / "source.gguf")[base]
            assert a.shape[0] == source.shape[0] and b.shape[1] == source.shape[1]


def test_the_http_route_streams_the_same_file(trained, tmp_path):
    stack, client, job = trained
    path = client.export(job.id, "gguf-adapter", tmp_path / "a.gguf").path
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.http_port}/v1/jobs/{job.id}/export"
        "?format=EXPORT_FORMAT_GGUF_ADAPTER",
        headers={"Authorization": f"Bearer {services_module.API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        body = response.read()
    assert body == path.read_bytes()
    assert int(response.headers["Content-Length"]) == len(body)


@pytest.mark.parametrize(
    ("fmt", "tensor_type", "code", "words"),
    [
        ("gguf", "q4_k", grpc.StatusCode.INVALID_ARGUMENT, "tensor type 'q4_k'"),
        ("gguf-adapter", "q8_0", grpc.StatusCode.INVALID_ARGUMENT, "f32, f16"),
    ],
)
def test_a_type_the_format_does_not_write_is_named(
    trained, tmp_path, fmt, tensor_type, code, words
):
    _, client, job = trained
    with pytest.raises(TunewireError) as caught:
        client.export(job.id, fmt, tmp_path / "x", tensor_type=tensor_type)
    assert caught.value.code == code and words in caught.value.message
    assert any(v.field == "tensor_type" for v in caught.value.violations)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_tunewire_export_writes_the_file_and_says_what(trained, tmp_path):
    stack, _, job = trained
    out = tmp_path / "cli-adapter.gguf"
    done = stack.cli("export", job.id, "--format", "gguf-adapter", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"gguf-adapter export of {job.id}: {out}" in done.stdout
    assert gguf.GGUFReader(out).fields["adapter.type"].contents() == "lora"
    bad = stack.cli("export", job.id, "--format", "gguf", "--type", "q2_k", "-o", str(out))
    assert bad.returncode != 0 and "q2_k" in bad.stderr and "Traceback" not in bad.stderr
