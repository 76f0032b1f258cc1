"""The bundled tiny model: Hugging Face layout, loadable by mlx-lm, reproducible.

mlx runs in subprocesses (probe_tiny_model.py), so this process stays light.
"""

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from tokenizers import Tokenizer

from tunewire.cli.model import run_model
from tunewire.tiny_model import (
    MODEL_FILES,
    PRESETS,
    build_tiny_model,
    parameter_count,
    tensor_specs,
)

pytestmark = pytest.mark.timeout(120)

PROBE = Path(__file__).with_name("probe_tiny_model.py")
# No test may reach the Hugging Face hub.
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def file_hashes(model_dir: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(model_dir.iterdir())
    }


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunewire.cli.main", "model", *args],
        capture_output=True,
        text=True,
        env=env or OFFLINE_ENV,
        timeout=120,
        check=False,
    )


def probe(*model_dirs: Path) -> dict:
    result = subprocess.run(
        [sys.executable, str(PROBE), *map(str, model_dirs)],
        capture_output=True,
        text=True,
        env=OFFLINE_ENV,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_writes_the_hugging_face_layout(tiny_model_dir):
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == sorted(MODEL_FILES)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["vocab_size"] == tokenizer.get_vocab_size()
    assert 1000 <= config["vocab_size"] <= 4000
    assert config["eos_token_id"] == tokenizer.token_to_id("<|im_end|>")
    assert config["pad_token_id"] == tokenizer.token_to_id("<|endoftext|>")
    tokenizer_config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert tokenizer_config["pad_token"] == "<|endoftext|>"
    assert "<|im_start|>" in tokenizer_config["chat_template"]


def test_weights_have_hugging_face_names_and_initial_values(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    with safe_open(str(tiny_model_dir / "model.safetensors"), "numpy") as f:
        names = f.keys()
        weights = {name: f.get_tensor(name) for name in names}
    expected = {
        spec.name: spec.shape for spec in tensor_specs(PRESETS["tiny"], config["vocab_size"])
    }
    assert {name: w.shape for name, w in weights.items()} == expected
    assert "model.layers.1.self_attn.k_proj.weight" in weights
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)  # 2 kv heads of 16
    assert all(w.dtype == np.float32 for w in weights.values())
    assert np.all(weights["model.norm.weight"] == 1.0)
    std = weights["model.layers.0.mlp.up_proj.weight"].std()
    assert std == pytest.approx(0.02, rel=0.05)


def test_mlx_lm_loads_it_applies_the_chat_template_and_generates(tiny_model_dir, tmp_path):
    bf16_dir = build_tiny_model(tmp_path / "bf16", seed=0, dtype="bfloat16")
    report = probe(tiny_model_dir, bf16_dir)
    assert report["prompt"] == (
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat does LoRA train?<|im_end|>\n<|im_start|>assistant\n"
    )
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    assert report["prompt_ids"][0] == tokenizer.token_to_id("<|im_start|>")
    assert len(report["generated_ids"]) == 12
    assert all(0 <= i < report["vocab_size"] for i in report["generated_ids"])
    assert report["generated_text_type"] == "str"
    assert report["eos_token"] == "<|im_end|>"
    assert report["eos_token_ids"] == sorted(
        [tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")]
    )
    assert report["logits_dtype"] == "mlx.core.float32"
    # Random weights predict nearly uniformly: logits of standard deviation ~1
    # (fan-in scaled head) put the loss at about ln(vocab) + 1/2.
    assert abs(report["initial_loss"] - (report["log_vocab"] + 0.5)) < 0.3
    assert report["roundtrip"] == "naïve 日本語 🙂 x**2 <|im_end|>"
    assert report["bfloat16_dtypes"] == ["mlx.core.bfloat16"]
    assert report["bfloat16_mismatches"] == []


def test_same_seed_gives_byte_identical_files_across_processes(tiny_model_dir, tmp_path):
    # Another process, one tokenizer thread and another hash seed: still the same bytes.
    env = {**OFFLINE_ENV, "RAYON_RS_NUM_CPUS": "1", "PYTHONHASHSEED": "12345"}
    result = run_cli("tiny", str(tmp_path / "again"), "--seed", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert "351,808 parameters" in result.stdout
    assert file_hashes(tmp_path / "again") == file_hashes(tiny_model_dir)


def test_another_seed_changes_the_weights_only(tiny_model_dir, tmp_path):
    other = build_tiny_model(tmp_path / "seed1", seed=1)
    ours, theirs = file_hashes(tiny_model_dir), file_hashes(other)
    assert ours["model.safetensors"] != theirs["model.safetensors"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert ours[name] == theirs[name]
    config = json.loads((other / "config.json").read_text())
    assert config["tunewire"] == {"preset": "tiny", "seed": 1}


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_tokenizer_round_trips_any_text(tiny_model_dir, text):
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    assert tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False) == text


def test_refuses_a_non_empty_directory_without_force(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = run_cli("tiny", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            f"tunewire model: error: {tmp_path} exists and is not empty; "
            "use --force to replace the model in it"
        )
    ]
    assert not (tmp_path / "config.json").exists()


def test_bad_arguments_are_one_clear_line(tmp_path, capsys):
    assert run_model(["tiny", str(tmp_path / "m"), "--preset", "gpt-5"]) == 2
    assert "invalid choice: 'gpt-5'" in capsys.readouterr().err
    assert run_model(["tiny", str(tmp_path / "m"), "--seed", "-3"]) == 1
    err = capsys.readouterr().err
    assert err == "tunewire model: error: seed must be an integer in [0, 2**63), got -3\n"
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        build_tiny_model(tmp_path / "m", dtype="int8")


def test_force_replaces_the_model_and_drops_stale_shards(tmp_path):
    model = build_tiny_model(tmp_path / "model", seed=0)
    (model / "model-00002-of-00002.safetensors").write_bytes(b"old shard")
    (model / "notes.txt").write_text("keep me")
    assert run_model(["tiny", str(model), "--seed", "5", "--force"]) == 0
    assert not (model / "model-00002-of-00002.safetensors").exists()
    assert (model / "notes.txt").read_text() == "keep me"
    assert json.loads((model / "config.json").read_text())["tunewire"]["seed"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


def test_presets_have_the_published_parameter_counts():
    # Qwen2.5-0.5B and Llama-3.2-1B as their model cards count them.
    assert parameter_count(PRESETS["qwen2.5-0.5b"], 0) == 494_032_768
    assert parameter_count(PRESETS["llama-3.2-1b"], 0) == 1_235_814_400
    names = {spec.name for spec in tensor_specs(PRESETS["qwen2.5-0.5b"], 151936)}
    assert "model.layers.23.self_attn.q_proj.bias" in names
    assert "lm_head.weight" not in names  # tied to the embedding, like the original


@pytest.mark.timeout(240)
def test_qwen_preset_builds_and_runs_a_forward_pass(tmp_path):
    result = run_cli(
        "tiny", str(tmp_path / "qwen"), "--preset", "qwen2.5-0.5b", "--dtype", "bfloat16"
    )
    assert result.returncode == 0, result.stderr
    with safe_open(str(tmp_path / "qwen" / "model.safetensors"), "numpy") as f:
        embed = f.get_slice("model.embed_tokens.weight")
        assert embed.get_shape() == [151936, 896]
        assert embed.get_dtype() == "BF16"
        assert len(list(f.keys())) == 24 * 12 + 2
    forward = (
        "import json, sys, mlx.core as mx, mlx_lm\n"
        "model, tok = mlx_lm.load(sys.argv[1])\n"
        "logits = model(mx.array([tok.encode('Fine-tuning a model')]))\n"
        "print(json.dumps({'shape': logits.shape, 'finite': mx.isfinite(logits).all().item(),"
        " 'layers': len(model.layers)}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", forward, str(tmp_path / "qwen")],
        capture_output=True,
        text=True,
        env=OFFLINE_ENV,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["shape"][-1] == 151936
    assert report["finite"] is True
    assert report["layers"] == 24
    assert math.isclose(
        (tmp_path / "qwen" / "model.safetensors").stat().st_size, 494_032_768 * 2, rel_tol=1e-3
    )
