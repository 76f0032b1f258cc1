"""What a GGUF model file means in Hugging Face terms: architectures, tensor names, config.json.

The facts here follow llama.cpp's own converter (`convert_hf_to_gguf.py`):
- tensor names: `token_embd`, `output_norm`, `output`, and per block
  `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
  ffn_up, ffn_down}` (`gguf.constants.TENSOR_NAMES`);
- for the `llama` architecture the converter permutes the rows of Q and K
  (`LlamaModel.permute`: reshape(n_head, 2, d/2, ...).swapaxes(1, 2)) so that
  llama.cpp's RoPE rotates adjacent pairs; `qwen2` keeps the Hugging Face
  layout (llama.cpp runs it with NeoX-style RoPE);
- a tied output head is written as no `output.weight` at all;
- Llama 3's RoPE scaling is written as a `rope_freqs` tensor of per-dimension
  factors (`LlamaModel.generate_extra_tensors`), not as metadata.

No mlx here: the permutation works on numpy and mlx arrays alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Architecture:
    """One GGUF `general.architecture` this importer understands."""

    gguf_name: str
    model_type: str  # config.json "model_type" (also mlx-lm's module name)
    hf_class: str
    permuted_qk: bool  # llama.cpp's converter permuted Q and K rows
    families: str  # for messages


ARCHITECTURES = {
    "llama": Architecture(
        "llama", "llama", "LlamaForCausalLM", True, "Llama 2/3, TinyLlama, SmolLM, Mistral"
    ),
    "qwen2": Architecture("qwen2", "qwen2", "Qwen2ForCausalLM", False, "Qwen2, Qwen2.5"),
}

TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
IN_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
HF_IN_BLOCK = {hf: name for name, hf in IN_BLOCK.items()}
HF_TOP_LEVEL = {hf: name for name, hf in TOP_LEVEL.items()}
# Tensors the converter adds that are not weights of the Hugging Face model.
DERIVED = {"rope_freqs.weight"}
_BLOCK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)")


class UnsupportedModel(ValueError):
    """A GGUF file this importer cannot turn into a model; the message names what and why."""


def architecture_of(metadata: dict, source: str) -> Architecture:
    kind = metadata.get("general.type", "model")
    if kind != "model":
        raise UnsupportedModel(
            f"{source} is a GGUF {kind!r} (general.type), not a model: import the base model "
            "and apply the adapter to it"
        )
    name = metadata.get("general.architecture")
    if name not in ARCHITECTURES:
        supported = "; ".join(f"{a.gguf_name} ({a.families})" for a in ARCHITECTURES.values())
        raise UnsupportedModel(
            f"{source}: architecture {name!r} is not supported; tunewire imports {supported}"
        )
    return ARCHITECTURES[name]


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor; None for tensors the HF model does not have."""
    if gguf_name in DERIVED:
        return None
    base, _, suffix = gguf_name.rpartition(".")
    if base in TOP_LEVEL and suffix == "weight":
        return f"{TOP_LEVEL[base]}.weight"
    match = _BLOCK.fullmatch(gguf_name)
    if match and match.group(2) in IN_BLOCK:
        block, part, suffix = match.groups()
        return f"model.layers.{block}.{IN_BLOCK[part]}.{suffix}"
    raise UnsupportedModel(f"tensor {gguf_name!r} has no counterpart in a Hugging Face model")


def gguf_name(hf: str) -> str:
    """The GGUF name of a Hugging Face tensor (the inverse of `hf_name`)."""
    base, _, suffix = hf.rpartition(".")
    if base in HF_TOP_LEVEL:
        return f"{HF_TOP_LEVEL[base]}.{suffix}"
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", base)
    if match and match.group(2) in HF_IN_BLOCK:
        return f"blk.{match.group(1)}.{HF_IN_BLOCK[match.group(2)]}.{suffix}"
    raise UnsupportedModel(f"tensor {hf!r} has no GGUF counterpart")


def qk_heads(gguf_tensor: str, config: dict) -> int | None:
    """Heads to (un)permute a llama tensor's rows by: Q by all heads, K by the KV heads."""
    if gguf_tensor.endswith((".attn_q.weight", ".attn_q.bias")):
        return config["num_attention_heads"]
    if gguf_tensor.endswith((".attn_k.weight", ".attn_k.bias")):
        return config["num_key_value_heads"]
    return None


def permute_rows(x, heads: int):
    """llama.cpp's `LlamaModel.permute`: Hugging Face rows → GGUF rows (packed rows too)."""
    rows = x.shape[0]
    return x.reshape(heads, 2, rows // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def unpermute_rows(x, heads: int):
    """The inverse of `permute_rows`: GGUF rows → Hugging Face rows."""
    rows = x.shape[0]
    return x.reshape(heads, rows // heads // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def _get(metadata: dict, arch: str, key: str, default=None):
    value = metadata.get(f"{arch}.{key}", default)
    return value


def hf_config(
    arch: Architecture,
    metadata: dict,
    tensor_names: set[str],
    vocab_size: int,
    rope_freqs: np.ndarray | None,
) -> dict:
    """config.json of the model, from the `<arch>.*` metadata (as transformers writes it)."""
    a = arch.gguf_name
    required = (
        "embedding_length",
        "block_count",
        "feed_forward_length",
        "attention.head_count",
    )
    missing = [f"{a}.{key}" for key in required if _get(metadata, a, key) is None]
    if missing:
        raise UnsupportedModel(f"the GGUF metadata lacks {', '.join(missing)}")
    hidden = int(_get(metadata, a, "embedding_length"))
    heads = int(_get(metadata, a, "attention.head_count"))
    kv_heads = int(_get(metadata, a, "attention.head_count_kv", heads))
    head_dim = int(_get(metadata, a, "attention.key_length", hidden // heads))
    theta = float(_get(metadata, a, "rope.freq_base", 10000.0))
    config = {
        "architectures": [arch.hf_class],
        "model_type": arch.model_type,
        "hidden_size": hidden,
        "num_hidden_layers": int(_get(metadata, a, "block_count")),
        "intermediate_size": int(_get(metadata, a, "feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(_get(metadata, a, "context_length", 2048)),
        "rms_norm_eps": float(_get(metadata, a, "attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": theta,
        "rope_scaling": rope_scaling(metadata, a, rope_freqs, theta, head_dim),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "vocab_size": vocab_size,
        "attention_dropout": 0.0,
        "use_cache": True,
    }
    if arch.model_type == "llama":
        config.update(attention_bias="blk.0.attn_q.bias" in tensor_names, mlp_bias=False)
    else:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=0)
    return config


def rope_scaling(
    metadata: dict, arch: str, rope_freqs: np.ndarray | None, theta: float, head_dim: int
) -> dict | None:
    kind = _get(metadata, arch, "rope.scaling.type")
    factor = _get(metadata, arch, "rope.scaling.factor")
    if rope_freqs is not None:
        return llama3_scaling(np.asarray(rope_freqs, np.float64), theta, head_dim)
    if kind in (None, "none") or factor is None:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        original = _get(metadata, arch, "rope.scaling.original_context_length")
        return {
            "rope_type": "yarn",
            "factor": float(factor),
            "original_max_position_embeddings": int(original),
        }
    raise UnsupportedModel(f"RoPE scaling {kind!r} ({arch}.rope.scaling.type) is not supported")


# The Llama 3.1/3.2 release values; `llama3_scaling` checks the file against them.
LLAMA3_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original": 8192}


def llama3_factors(theta, head_dim, factor, low, high, original) -> np.ndarray:
    """The per-dimension factors llama.cpp's converter writes as `rope_freqs` (Llama 3)."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    middle = 1 / ((1 - smooth) / factor + smooth)
    return np.where(
        wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, middle)
    )


def llama3_scaling(rope_freqs: np.ndarray, theta: float, head_dim: int) -> dict:
    factor = float(rope_freqs.max())
    d = LLAMA3_DEFAULTS
    expected = llama3_factors(
        theta, head_dim, factor, d["low_freq_factor"], d["high_freq_factor"], d["original"]
    )
    if expected.shape != rope_freqs.shape or not np.allclose(expected, rope_freqs, rtol=1e-4):
        raise UnsupportedModel(
            "the rope_freqs tensor is not Llama 3's RoPE scaling with low/high frequency "
            f"factors {d['low_freq_factor']}/{d['high_freq_factor']} over {d['original']} "
            "positions; this importer cannot express it in config.json"
        )
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": d["low_freq_factor"],
        "high_freq_factor": d["high_freq_factor"],
        "original_max_position_embeddings": d["original"],
    }
