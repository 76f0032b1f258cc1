"""Every training method trains the tiny model for real and leaves artifacts mlx-lm loads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load

pytestmark = pytest.mark.timeout(120)


def assert_learned(worker, drop: float = 0.1) -> None:
    """Twelve steps reported, and the loss of the last three clearly below the first three.

    The tiny model's frozen output head has small random weights, which caps how far
    adapters alone can move its logits: a fall of a few tenths is what LoRA can do there.
    """
    assert worker.returncode == 0, worker.log()
    losses = worker.losses()
    assert sorted(losses) == list(range(1, 13))
    first = sum(losses[s] for s in (1, 2, 3)) / 3
    last = sum(losses[s] for s in (10, 11, 12)) / 3
    assert last < first - drop, f"loss did not fall by {drop}: {losses}"
    done = worker.done()
    assert done.outcome == "succeeded" and done.step == 12


def setup_event(worker) -> dict:
    (setup,) = worker.of_type("setup")
    return setup


def test_lora_trains_and_mlx_lm_loads_and_generates_with_the_adapter(
    make_config, run_worker, tiny_model_dir
):
    worker = run_worker(make_config())
    assert_learned(worker)
    assert [e.state for e in worker.of_type("state")] == ["STARTING", "RUNNING"]

    setup = setup_event(worker)
    details = setup.lora_details
    assert details.rank == 4 and details.alpha == 8.0 and details.scale == 2.0
    assert (
        "self_attn.q_proj" in details.target_modules and "mlp.down_proj" in details.target_modules
    )
    assert 0 < details.trainable_parameters < details.total_parameters
    assert setup.dataset_details.train_records == 8
    assert setup.total_steps == 12 and setup.total_epochs == 6.0

    metrics = worker.of_type("metrics")
    tokens = [m.trained_tokens for m in metrics]
    assert tokens == sorted(set(tokens)) and tokens[0] > 0
    for m in metrics:
        assert m.epoch == m.step / 2  # two batches of 4 per epoch of 8 records
        assert math.isclose(m.learning_rate, 0.01, rel_tol=1e-6)
        assert m.tokens_per_second > 0 and m.iterations_per_second > 0
        assert m.peak_memory_bytes > 0 and m.rss_bytes > 10 << 20
        assert m.all_reduce_seconds_per_step == 0.0

    adapter_dir = Path(worker.done().artifacts.adapter_path)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 2
    assert config["lora_parameters"]["rank"] == 4 and config["lora_parameters"]["scale"] == 2.0

    # mlx-lm's own loader applies the adapter: the weights are the trained ones.
    model, _ = load(str(tiny_model_dir), adapter_path=str(adapter_dir))
    loaded = dict(tree_flatten(model.parameters()))
    saved = mx.load(str(adapter_dir / "adapters.safetensors"))
    assert saved and all(mx.array_equal(loaded[name], w).item() for name, w in saved.items())
    assert any(mx.abs(w).max().item() > 0 for name, w in saved.items() if name.endswith("lora_b"))

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_lm",
            "generate",
            "--model",
            str(tiny_model_dir),
            "--adapter-path",
            str(adapter_dir),
            "--prompt",
            "What color is the sky?",
            "--max-tokens",
            "8",
            "--temp",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The CLI loaded the adapter and sampled (the few-step model may stop at once).
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.count("==========") == 2, cli.stdout


def test_dora_trains_magnitudes_and_adapters(make_config, run_worker, tiny_model_dir):
    # Gradient checkpointing recomputes activations; training must go on just the same.
    worker = run_worker(
        make_config(method="dora", hyperparameters={"gradient_checkpointing": True})
    )
    assert_learned(worker)
    adapter_dir = Path(worker.done().artifacts.adapter_path)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "dora"
    saved = mx.load(str(adapter_dir / "adapters.safetensors"))
    assert any(name.endswith(".m") for name in saved)  # DoRA's magnitude vectors
    model, _ = load(str(tiny_model_dir), adapter_path=str(adapter_dir))
    assert type(model.layers[0].self_attn.q_proj).__name__ == "DoRALinear"


def test_qlora_quantizes_a_float_base_at_load(make_config, run_worker, tiny_model_dir):
    worker = run_worker(make_config(method="qlora", quantization={"bits": 4, "group_size": 32}))
    assert_learned(worker)
    adapter_dir = Path(worker.done().artifacts.adapter_path)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["tunewire"]["quantization"] == {"bits": 4, "group_size": 32}
    # Only the adapters are saved, not the quantized base.
    saved = mx.load(str(adapter_dir / "adapters.safetensors"))
    assert saved and all(name.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for name in saved)
    details = setup_event(worker).lora_details
    # Quantized weights count as their unpacked size, so the total matches LoRA's.
    lora_total = sum(v.size for _, v in tree_flatten(load(str(tiny_model_dir))[0].parameters()))
    assert details.total_parameters == lora_total + details.trainable_parameters


def test_a_quantized_base_is_used_as_is_by_qlora_and_refused_by_full(
    make_config, run_worker, tiny_model_dir, tmp_path
):
    from mlx_lm import convert

    quantized = tmp_path / "tiny-8bit"
    convert(str(tiny_model_dir), str(quantized), quantize=True, q_bits=8, q_group_size=32)
    worker = run_worker(
        make_config(
            "qlora",
            method="qlora",
            model=str(quantized),
            quantization={"bits": 4, "group_size": 64},
        )
    )
    assert_learned(worker)
    config = json.loads(
        Path(worker.done().artifacts.adapter_path, "adapter_config.json").read_text()
    )
    assert config["tunewire"]["quantization"] is None  # nothing was quantized at load
    model, _ = load(str(quantized), adapter_path=worker.done().artifacts.adapter_path)
    assert type(model.layers[0].self_attn.q_proj.linear).__name__ == "QuantizedLinear"

    full = run_worker(make_config("full", method="full", model=str(quantized)))
    assert full.returncode == 1 and full.events[-1].kind == "error"
    assert full.events[-1].reason == "UNSUPPORTED" and "quantized" in full.events[-1].message


def test_full_fine_tune_saves_a_model_mlx_lm_loads(make_config, run_worker, tiny_model_dir):
    worker = run_worker(make_config(method="full", hyperparameters={"learning_rate": 0.002}))
    assert_learned(worker, drop=2.0)  # the output head trains too: the loss falls fast
    details = setup_event(worker).lora_details
    assert details.rank == 0 and details.target_modules == []
    assert details.trainable_parameters == details.total_parameters
    done = worker.done()
    assert done.artifacts.adapter_path is None
    model_dir = Path(done.artifacts.model_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    trained, _ = load(str(model_dir))
    base, _ = load(str(tiny_model_dir))
    trained_w = dict(tree_flatten(trained.parameters()))
    base_w = dict(tree_flatten(base.parameters()))
    assert trained_w.keys() == base_w.keys()
    changed = [k for k in base_w if not mx.allclose(trained_w[k], base_w[k]).item()]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
