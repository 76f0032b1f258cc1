"""`import_gguf(source, out_dir)`: a GGUF model → a Hugging Face-layout folder mlx-lm loads.

The folder holds `config.json` (with mlx-lm's `quantization` entry when
layers stay quantized), `model*.safetensors`, the tokenizer rebuilt from the
GGUF metadata (`tokenizer.json`, `tokenizer_config.json` with the chat
template, `special_tokens_map.json`), `generation_config.json`, and
`source.gguf`, the untouched source file (a hard link where it can be): the
GGUF export writes every tensor it did not change from it, byte for byte.
It is built in a sibling folder and renamed into place, so a failed import
leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import make_shards

from tunewire.models import gguf_arch, gguf_tensors
from tunewire.models.gguf_file import open_gguf, sha256_of, usual_mode
from tunewire.models.gguf_tokenizer import rebuild_tokenizer

SOURCE_NAME = "source.gguf"


@dataclass
class ImportResult:
    path: Path
    architecture: str
    parameters: int
    tensor_types: dict[str, int]
    quantized_layers: int
    bits: list[int]
    dequantized: dict[str, int] = field(default_factory=dict)
    dtype: str | None = None

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.tensor_types.items()))
        if self.dtype:
            kept = f"dequantized to {self.dtype}"
        elif self.quantized_layers:
            bits = "/".join(str(b) for b in self.bits)
            kept = f"{self.quantized_layers} layers kept quantized ({bits}-bit, as in the file)"
        else:
            kept = "float tensors kept as they are"
        line = (
            f"imported {self.architecture} model into {self.path}: "
            f"{self.parameters:,} parameters; tensors {kinds}; {kept}"
        )
        if self.dequantized and not self.dtype:
            types = ", ".join(f"{n} {k}" for k, n in sorted(self.dequantized.items()))
            line += (
                f"; {types} tensors dequantized to {gguf_tensors.DEQUANTIZED_DEFAULT} with the "
                "gguf package (mlx keeps only Q4_0, Q4_1 and Q8_0 quantized)"
            )
        return line


def import_gguf(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Convert `source` into `out_dir`. Raises ValueError (bad file, unsupported model or
    dtype), FileNotFoundError, FileExistsError (a non-empty `out_dir` without `overwrite`)."""
    if dtype is not None and dtype not in gguf_tensors.DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(gguf_tensors.DTYPES)}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; use --force to replace it")
    gguf_file = open_gguf(source)
    arch = gguf_arch.architecture_of(gguf_file.metadata, str(source))
    tokenizer = rebuild_tokenizer(gguf_file)
    names = set(gguf_file.tensors)
    embedding = gguf_file.tensors.get("token_embd.weight")
    if embedding is None:
        raise gguf_arch.UnsupportedModel(f"{source} has no token_embd.weight tensor")
    vocab_size = int(embedding.shape[-1])  # GGUF shapes list the row length first
    config = gguf_arch.hf_config(
        arch, gguf_file.metadata, names, vocab_size, gguf_tensors.rope_freqs(gguf_file)
    )
    converted = gguf_tensors.convert_tensors(gguf_file, arch, config, dtype)
    config.update(_token_ids(tokenizer))
    config["torch_dtype"] = dtype or _float_dtype(converted.weights)
    if converted.quantized:
        config["quantization"] = _quantization_entry(converted.quantized)
        config["quantization_config"] = config["quantization"]
    config["tunewire"] = {
        "source": {
            "file": Path(source).name,
            "sha256": sha256_of(source),
            "tensor_types": gguf_file.type_counts(),
            "name": gguf_file.metadata.get("general.name"),
        },
        "dequantized": dict(converted.dequantized),
        "dtype": dtype,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    usual_mode(staging)
    try:
        _write_weights(staging, converted.weights)
        _write_tokenizer(staging, tokenizer)
        _write_json(staging / "generation_config.json", _generation_config(tokenizer))
        _link_or_copy(Path(source), staging / SOURCE_NAME)
        _write_json(staging / "config.json", config)
        _replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    bits = sorted({q["bits"] for q in converted.quantized.values()})
    return ImportResult(
        path=out,
        architecture=arch.gguf_name,
        parameters=_parameters(converted),
        tensor_types=gguf_file.type_counts(),
        quantized_layers=len(converted.quantized),
        bits=bits,
        dequantized=dict(converted.dequantized),
        dtype=dtype,
    )


def _parameters(converted: gguf_tensors.Converted) -> int:
    total = 0
    for name, array in converted.weights.items():
        module = name.rsplit(".", 1)[0]
        if module in converted.quantized:
            if name.endswith(".weight"):
                total += array.size * 32 // converted.quantized[module]["bits"]
        else:
            total += array.size
    return total


def _float_dtype(weights: dict[str, mx.array]) -> str:
    """The dtype most float parameters have (the scales' for a quantized model)."""
    sizes: dict[str, int] = {}
    for array in weights.values():
        if mx.issubdtype(array.dtype, mx.floating):
            key = str(array.dtype).rsplit(".", 1)[-1]
            sizes[key] = sizes.get(key, 0) + array.size
    return max(sizes, key=sizes.get) if sizes else "float32"


def _quantization_entry(quantized: dict[str, dict]) -> dict:
    """mlx-lm's `quantization`: the common bits/group size, and each layer that differs."""
    counts: dict[tuple[int, int], int] = {}
    for q in quantized.values():
        key = (q["bits"], q["group_size"])
        counts[key] = counts.get(key, 0) + 1
    bits, group_size = max(counts, key=counts.get)
    entry: dict = {"group_size": group_size, "bits": bits, "mode": "affine"}
    for module, q in sorted(quantized.items()):
        if (q["bits"], q["group_size"]) != (bits, group_size):
            entry[module] = {**q, "mode": "affine"}
    return entry


def _token_ids(tokenizer) -> dict:
    ids = {
        "eos_token_id": tokenizer.eos_token_ids[0]
        if len(tokenizer.eos_token_ids) == 1
        else tokenizer.eos_token_ids
    }
    if tokenizer.bos_token_id is not None:
        ids["bos_token_id"] = tokenizer.bos_token_id
    if tokenizer.pad_token_id is not None:
        ids["pad_token_id"] = tokenizer.pad_token_id
    return ids


def _generation_config(tokenizer) -> dict:
    config = {"eos_token_id": tokenizer.eos_token_ids}
    if tokenizer.bos_token_id is not None:
        config["bos_token_id"] = tokenizer.bos_token_id
    if tokenizer.pad_token_id is not None:
        config["pad_token_id"] = tokenizer.pad_token_id
    return config


def _write_weights(folder: Path, weights: dict[str, mx.array]) -> None:
    shards = make_shards(weights)
    if len(shards) == 1:
        mx.save_safetensors(
            str(folder / "model.safetensors"), shards[0], metadata={"format": "mlx"}
        )
        return
    index: dict = {
        "metadata": {"total_size": sum(a.nbytes for a in weights.values())},
        "weight_map": {},
    }
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(folder / name), shard, metadata={"format": "mlx"})
        index["weight_map"].update(dict.fromkeys(shard, name))
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    _write_json(folder / "model.safetensors.index.json", index)


def _write_tokenizer(folder: Path, tokenizer) -> None:
    (folder / "tokenizer.json").write_text(tokenizer.tokenizer.to_str(), encoding="utf-8")
    _write_json(folder / "tokenizer_config.json", tokenizer.config)
    _write_json(folder / "special_tokens_map.json", tokenizer.special_tokens_map)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _replace_dir(staging: Path, out: Path) -> None:
    """Move the finished folder into place; an old one is removed only after that worked."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
