"""`tunewire model import` and `tunewire model smollm2` on the real SmolLM2 GGUF.

The known answer of the correctly converted model (greedy) is the check that
the tensors, the Q/K un-permutation, the config and the tokenizer are right.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from tunewire.cli.model import run_model
from tunewire.models import smollm2
from tunewire.models.gguf_arch import unpermute_rows
from tunewire.models.gguf_rewrite import dequantized, requantize_all

from .helpers import probe

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(600)]


def test_smollm2_as_shipped_and_as_float32_answer_the_known_reply(smollm2_dir, smollm2_float_dir):
    got = probe(
        "generate", smollm2.CAPITAL_QUESTION, "20", str(smollm2_dir), str(smollm2_float_dir)
    )
    assert got == {
        str(smollm2_dir): smollm2.CAPITAL_REPLY,
        str(smollm2_float_dir): smollm2.CAPITAL_REPLY,
    }


def test_config_keeps_each_tensor_type_and_the_tokenizer(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    # The file mixes 8-bit (embedding) and 4-bit (linear layers) blocks of 32.
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8
    assert config["tunewire"]["source"]["sha256"] == smollm2.GGUF_SHA256
    tokenizer = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tokenizer["chat_template"].startswith("{% for message in messages %}")
    assert (tokenizer["eos_token"], tokenizer["bos_token"]) == ("<|im_end|>", "<|im_start|>")
    assert json.loads((smollm2_dir / "generation_config.json").read_text())["eos_token_id"] == [2]


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """mlx's affine packing: element i of a uint32 word sits at bits [i*bits, (i+1)*bits)."""
    per_word = 32 // bits
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    values = (packed[..., None] >> shifts) & ((1 << bits) - 1)
    return values.reshape(*packed.shape[:-1], -1).astype(np.float32)


@pytest.mark.parametrize(
    ("gguf_name", "module", "heads"),
    [
        ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj", 9),
        ("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj", 3),
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj", None),
        ("token_embd.weight", "model.embed_tokens", None),
    ],
)
def test_quantized_tensors_are_the_files_blocks_unpermuted(
    smollm2_source, smollm2_dir, gguf_name, module, heads
):
    """scale * q + bias of the imported triple is exactly what the gguf package dequantizes."""
    rows = 1536  # of the embedding's 49,152: enough to see, quick to unpack
    expected = dequantized(smollm2_source.tensors[gguf_name])
    if heads:
        expected = unpermute_rows(expected, heads)
    expected = expected[:rows]
    with safe_open(smollm2_dir / "model.safetensors", framework="numpy") as f:
        packed, scales, biases = (
            f.get_slice(f"{module}.{p}")[: len(expected)] for p in ("weight", "scales", "biases")
        )
    bits = packed.shape[-1] * 32 // (scales.shape[-1] * 32)
    q = _unpack(packed, bits).reshape(packed.shape[0], scales.shape[-1], 32)
    values = q * scales[..., None].astype(np.float32) + biases[..., None].astype(np.float32)
    np.testing.assert_allclose(values.reshape(expected.shape), expected, rtol=0, atol=1e-6)


@pytest.mark.timeout(900)
def test_q8_0_and_f16_variants_made_with_the_gguf_package_import_and_answer(
    smollm2_source, tmp_path, capsys
):
    models = []
    for kind in ("q8_0", "f16"):
        variant = requantize_all(smollm2_source, tmp_path / f"smollm2.{kind}.gguf", kind)
        out = tmp_path / kind
        assert run_model(["import", str(variant), str(out)]) == 0
        summary = capsys.readouterr().out
        assert f"211 {kind.upper()}" in summary and "61 F32" in summary
        models.append(str(out))
    # Two models (one in float16, slow on a CPU) in one process: under a loaded
    # CI machine this took longer than the helper's usual four minutes.
    got = probe("generate", smollm2.CAPITAL_QUESTION, "20", *models, timeout=540)
    assert list(got.values()) == [smollm2.CAPITAL_REPLY] * 2
    config = json.loads((tmp_path / "f16" / "config.json").read_text())
    assert "quantization" not in config and config["torch_dtype"] == "float16"
