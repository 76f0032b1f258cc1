"""Build small random causal LMs in the Hugging Face layout, with no network.

`build_tiny_model(out_dir)` writes a model that `mlx_lm.load` and
`mlx_lm.generate` use like any other: `config.json`, `model.safetensors`
(Hugging Face tensor names), `generation_config.json` and the tokenizer files
of `tiny_tokenizer`. Weights are drawn from `numpy.random.default_rng(seed)`:
the same seed gives byte-identical files, another seed other weights.

Presets:
- `tiny` (default): a 2-layer Llama with grouped-query attention whose
  vocabulary is exactly the trained tokenizer's; small enough that tests train
  it in seconds on a CPU.
- `qwen2.5-0.5b`, `llama-3.2-1b`: random weights of the real architectures'
  shapes, for memory and speed benchmarks. They keep the real vocabulary size
  (151,936 and 128,256) for the embedding and output head, because those two
  matrices are a large share of a small model's memory; the small tokenizer
  only ever produces the first ~1,800 ids. They are for training benchmarks:
  text sampled from them can hold ids the tokenizer cannot decode. Like the
  originals, they tie the embedding and the output head.

The builder uses numpy only (no mlx), so the CLI starts fast, and it writes
the safetensors file one chunk at a time, so a 1B-parameter preset needs
little more memory than one chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tunewire import tiny_tokenizer

INIT_STD = 0.02
# Elements drawn per call to the generator: bounds memory for large tensors.
CHUNK_ELEMENTS = 1 << 23
DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
MODEL_FILES = (
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",  # written last: its presence means the model is complete
)


@dataclass(frozen=True)
class Preset:
    """The shape of a decoder-only transformer (Llama or Qwen2 architecture)."""

    model_type: str
    architecture: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    # None: the trained tokenizer's own size.
    vocab_size: int | None = None
    # Qwen2 has biases on the query, key and value projections.
    qkv_bias: bool = False
    rope_scaling: dict | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        model_type="llama",
        architecture="LlamaForCausalLM",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "qwen2.5-0.5b": Preset(
        model_type="qwen2",
        architecture="Qwen2ForCausalLM",
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        vocab_size=151936,
        qkv_bias=True,
    ),
    "llama-3.2-1b": Preset(
        model_type="llama",
        architecture="LlamaForCausalLM",
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        vocab_size=128256,
        rope_scaling={
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    ),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    init: str  # "normal" (std INIT_STD), "head" (std 1/sqrt(fan-in)), "ones" (norms) or "zeros" (biases)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def tensor_specs(preset: Preset, vocab_size: int) -> list[TensorSpec]:
    """Every tensor of the model, with Hugging Face names, sorted by name."""
    hidden, head_dim = preset.hidden_size, preset.head_dim
    q_dim = preset.num_attention_heads * head_dim
    kv_dim = preset.num_key_value_heads * head_dim
    specs = [
        TensorSpec("model.embed_tokens.weight", (vocab_size, hidden), "normal"),
        TensorSpec("model.norm.weight", (hidden,), "ones"),
    ]
    if not preset.tie_word_embeddings:
        # An untied head is frozen under LoRA; at std 0.02 its logits could never
        # move far from uniform and the loss could not fall much. Fan-in scale
        # (nn.Linear's default) leaves room for a visibly falling loss.
        specs.append(TensorSpec("lm_head.weight", (vocab_size, hidden), "head"))
    for layer in range(preset.num_hidden_layers):
        p = f"model.layers.{layer}"
        specs += [
            TensorSpec(f"{p}.input_layernorm.weight", (hidden,), "ones"),
            TensorSpec(f"{p}.post_attention_layernorm.weight", (hidden,), "ones"),
            TensorSpec(f"{p}.self_attn.q_proj.weight", (q_dim, hidden), "normal"),
            TensorSpec(f"{p}.self_attn.k_proj.weight", (kv_dim, hidden), "normal"),
            TensorSpec(f"{p}.self_attn.v_proj.weight", (kv_dim, hidden), "normal"),
            TensorSpec(f"{p}.self_attn.o_proj.weight", (hidden, q_dim), "normal"),
            TensorSpec(f"{p}.mlp.gate_proj.weight", (preset.intermediate_size, hidden), "normal"),
            TensorSpec(f"{p}.mlp.up_proj.weight", (preset.intermediate_size, hidden), "normal"),
            TensorSpec(f"{p}.mlp.down_proj.weight", (hidden, preset.intermediate_size), "normal"),
        ]
        if preset.qkv_bias:
            specs += [
                TensorSpec(f"{p}.self_attn.q_proj.bias", (q_dim,), "zeros"),
                TensorSpec(f"{p}.self_attn.k_proj.bias", (kv_dim,), "zeros"),
                TensorSpec(f"{p}.self_attn.v_proj.bias", (kv_dim,), "zeros"),
            ]
    return sorted(specs, key=lambda spec: spec.name)


def parameter_count(preset: Preset, vocab_size: int) -> int:
    return sum(spec.size for spec in tensor_specs(preset, preset.vocab_size or vocab_size))


def _chunks(spec: TensorSpec, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The tensor's values as float32 chunks, in row-major order."""
    for start in range(0, spec.size, CHUNK_ELEMENTS):
        n = min(CHUNK_ELEMENTS, spec.size - start)
        if spec.init in ("normal", "head"):
            chunk = rng.standard_normal(n, dtype=np.float32)
            chunk *= INIT_STD if spec.init == "normal" else np.float32(spec.shape[-1] ** -0.5)
        else:
            chunk = np.full(n, 1.0 if spec.init == "ones" else 0.0, dtype=np.float32)
        yield chunk


def _encode(chunk: np.ndarray, dtype: str) -> bytes:
    """Little-endian bytes of a float32 chunk converted to `dtype`."""
    if dtype == "float32":
        return chunk.astype("<f4", copy=False).tobytes()
    if dtype == "float16":
        return chunk.astype("<f2").tobytes()
    # bfloat16 is the top half of a float32; round to nearest even. No NaNs
    # here, so the sum cannot overflow 32 bits.
    bits = chunk.view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def write_safetensors(path: Path, specs: list[TensorSpec], seed: int, dtype: str) -> None:
    """Write the tensors in `specs` order, drawing "normal" ones from one seeded stream."""
    itemsize = np.dtype(np.float32 if dtype == "float32" else np.float16).itemsize
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        end = offset + spec.size * itemsize
        header[spec.name] = {
            "data_offsets": [offset, end],
            "dtype": DTYPES[dtype],
            "shape": list(spec.shape),
        }
        offset = end
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for spec in specs:
            _write_tensor(f, spec, rng, dtype)


def _write_tensor(f: BinaryIO, spec: TensorSpec, rng: np.random.Generator, dtype: str) -> None:
    f.writelines(_encode(chunk, dtype) for chunk in _chunks(spec, rng))


def model_config(
    preset: Preset, vocab_size: int, ids: dict[str, int], dtype: str, preset_name: str, seed: int
) -> dict:
    """The `config.json` of a Llama or Qwen2 model, as transformers writes it."""
    config = {
        "architectures": [preset.architecture],
        "attention_dropout": 0.0,
        "bos_token_id": ids[tiny_tokenizer.END_OF_TEXT],
        "eos_token_id": ids[tiny_tokenizer.EOS_TOKEN],
        "pad_token_id": ids[tiny_tokenizer.PAD_TOKEN],
        "head_dim": preset.head_dim,
        "hidden_act": "silu",
        "hidden_size": preset.hidden_size,
        "initializer_range": INIT_STD,
        "intermediate_size": preset.intermediate_size,
        "max_position_embeddings": preset.max_position_embeddings,
        "model_type": preset.model_type,
        "num_attention_heads": preset.num_attention_heads,
        "num_hidden_layers": preset.num_hidden_layers,
        "num_key_value_heads": preset.num_key_value_heads,
        "rms_norm_eps": preset.rms_norm_eps,
        "rope_scaling": preset.rope_scaling,
        "rope_theta": preset.rope_theta,
        "tie_word_embeddings": preset.tie_word_embeddings,
        "torch_dtype": dtype,
        "use_cache": True,
        "vocab_size": vocab_size,
        # Where the model came from; ignored by transformers and mlx-lm.
        "tunewire": {"preset": preset_name, "seed": seed},
    }
    if preset.model_type == "llama":
        config.update(attention_bias=False, mlp_bias=False)
    else:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=0)
    return config


def generation_config(ids: dict[str, int]) -> dict:
    # Stop at the end of a chat turn or at the end of a document, like Qwen.
    return {
        "bos_token_id": ids[tiny_tokenizer.END_OF_TEXT],
        "eos_token_id": [ids[tiny_tokenizer.IM_END], ids[tiny_tokenizer.END_OF_TEXT]],
        "pad_token_id": ids[tiny_tokenizer.PAD_TOKEN],
    }


def check_arguments(seed: int, preset: str, dtype: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")


def build_tiny_model(
    out_dir: str | os.PathLike,
    seed: int = 0,
    preset: str = "tiny",
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write a random model of `preset`'s shape into `out_dir`; returns its path.

    Raises ValueError for an unknown preset or dtype or a bad seed, and
    FileExistsError when `out_dir` is a non-empty directory (or a file) and
    `overwrite` is false. The files are built in a temporary sibling folder
    and moved in with `config.json` last, so a failed build leaves no
    half-written model behind.
    """
    check_arguments(seed, preset, dtype)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty; use --force to replace the model in it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_model(staging, seed, PRESETS[preset], preset, dtype)
        out.mkdir(exist_ok=True)
        # mlx-lm loads every model*.safetensors: drop shards of an older model.
        for stale in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
            stale.unlink(missing_ok=True)
        for name in MODEL_FILES:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_model(out: Path, seed: int, preset: Preset, preset_name: str, dtype: str) -> None:
    tokenizer = tiny_tokenizer.train_tokenizer()
    ids = tiny_tokenizer.special_token_ids(tokenizer)
    vocab_size = preset.vocab_size or tokenizer.get_vocab_size()
    write_safetensors(out / "model.safetensors", tensor_specs(preset, vocab_size), seed, dtype)
    tiny_tokenizer.write_tokenizer_files(out, tokenizer, preset.max_position_embeddings)
    tiny_tokenizer.write_json(out / "generation_config.json", generation_config(ids))
    config = model_config(preset, vocab_size, ids, dtype, preset_name, seed)
    tiny_tokenizer.write_json(out / "config.json", config)
