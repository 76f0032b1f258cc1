"""Export a job's adapter: `gguf-adapter`, `gguf` (merged) or `mlx` (a fused folder).

    python -m tunewire.models.export --model DIR --adapter DIR --format F [--type T] -o PATH

- `gguf-adapter`: a GGUF LoRA adapter laid out as llama.cpp's own
  `convert_lora_to_gguf.py` writes it (`general.type` adapter, `adapter.type`
  lora, `adapter.lora.alpha`; per adapted tensor `<name>.lora_a` of shape
  (rank, in) and `<name>.lora_b` of shape (out, rank), the Q/K rows of
  `lora_b` permuted again as llama.cpp's converter permutes Q and K), which
  llama.cpp (`--lora`) and Ollama (`ADAPTER`) apply over the untouched base GGUF.
  llama.cpp scales by alpha / rank, so alpha is mlx-lm's scale times the rank.
- `gguf`: the base GGUF (the `source.gguf` an import keeps) with each adapted
  tensor replaced by its fused weight (`--type` f16, q8_0, bf16 or f32) and
  every other tensor's blocks copied byte for byte.
- `mlx`: a Hugging Face-layout folder mlx-lm loads: adapted layers fused to
  float, every other layer as the base has it (still quantized if it was).
The fused weight is mlx-lm's own `fuse(dequantize=True)` of each adapted layer,
so every format holds the same numbers the fused model in mlx-lm computes with.
Run by the trainer in a child process (the daemon never imports mlx).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm import load

from tunewire.models import gguf_arch
from tunewire.models.export_formats import FORMATS, ExportError, check_request
from tunewire.models.gguf_file import open_gguf, usual_mode
from tunewire.models.gguf_import import SOURCE_NAME, _write_json, _write_weights
from tunewire.models.gguf_rewrite import Replacement, rewrite_gguf

MLX_DTYPES = {"f16": mx.float16, "bf16": mx.bfloat16, "f32": mx.float32}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


@dataclass
class Adapted:
    """One adapted layer: its Hugging Face module path, the LoRA factors and the fused weight."""

    module: str
    lora_a: np.ndarray  # (rank, in), PEFT's lora_A
    lora_b: np.ndarray  # (out, rank), PEFT's lora_B
    fused: mx.array  # (out, in), mlx-lm's fuse(dequantize=True)


@dataclass
class Loaded:
    model: object
    config: dict
    fine_tune_type: str
    scale: float
    rank: int
    layers: list[Adapted]


def load_adapted(model_dir: Path, adapter_dir: Path) -> Loaded:
    settings = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    fine_tune_type = settings.get("fine_tune_type", "lora")
    if fine_tune_type not in ("lora", "dora"):
        raise ExportError(f"the adapter is a {fine_tune_type!r} fine-tune, not LoRA or DoRA")
    lora = settings["lora_parameters"]
    model, _ = load(str(model_dir), adapter_path=str(adapter_dir))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    layers = []
    for name, module in model.named_modules():
        if hasattr(module, "fuse") and hasattr(module, "lora_a"):
            a = np.array(module.lora_a.astype(mx.float32)).T
            b = np.array(module.lora_b.astype(mx.float32)).T
            fused = module.fuse(dequantize=True).weight
            layers.append(Adapted(name, a, b, fused))
    if not layers:
        raise ExportError(f"{adapter_dir} adapts no layer of {model_dir}")
    mx.eval([layer.fused for layer in layers])
    return Loaded(model, config, fine_tune_type, float(lora["scale"]), int(lora["rank"]), layers)


def _source_gguf(model_dir: Path) -> Path:
    source = model_dir / SOURCE_NAME
    if not source.is_file():
        raise ExportError(
            f"the base model {model_dir} was not imported from a GGUF file (it has no "
            f"{SOURCE_NAME}); a GGUF export starts from the GGUF the base came from: "
            "import it with `tunewire model import`, train on that, or export --format mlx"
        )
    return source


def _gguf_rows(loaded: Loaded, module: str, values: np.ndarray, arch) -> np.ndarray:
    """Rows in the GGUF's order: llama.cpp's converter permutes Q and K of llama models."""
    if not arch.permuted_qk:
        return values
    heads = gguf_arch.qk_heads(gguf_arch.gguf_name(f"{module}.weight"), loaded.config)
    return values if heads is None else gguf_arch.permute_rows(values, heads)


def export_gguf_adapter(loaded: Loaded, model_dir: Path, out: Path, kind: str) -> Path:
    if loaded.fine_tune_type == "dora":
        raise ExportError(
            "llama.cpp's GGUF LoRA adapters have no DoRA magnitudes; export a DoRA job "
            "as --format gguf (merged) or mlx"
        )
    source = open_gguf(_source_gguf(model_dir))
    arch = gguf_arch.architecture_of(source.metadata, str(source.path))
    qtype = gguf.GGMLQuantizationType.F32 if kind == "f32" else gguf.GGMLQuantizationType.F16
    dtype = np.float32 if kind == "f32" else np.float16

    def write(scratch: str) -> None:
        writer = gguf.GGUFWriter(scratch, arch.gguf_name)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        # llama.cpp scales by alpha / rank; mlx-lm's scale is that ratio.
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, loaded.scale * loaded.rank)
        name = source.metadata.get("general.name")
        if name:
            writer.add_name(f"{name} (tunewire LoRA adapter)")
        writer.add_file_type(
            gguf.LlamaFileType.ALL_F32 if kind == "f32" else gguf.LlamaFileType.MOSTLY_F16
        )
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for layer in loaded.layers:
            base = gguf_arch.gguf_name(f"{layer.module}.weight")
            b = _gguf_rows(loaded, layer.module, layer.lora_b, arch)
            for suffix, values in (("lora_a", layer.lora_a), ("lora_b", b)):
                array = np.ascontiguousarray(values, dtype=dtype)
                writer.add_tensor(f"{base}.{suffix}", array, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return _atomic_file(out, write)


def export_gguf_merged(loaded: Loaded, model_dir: Path, out: Path, kind: str) -> Path:
    source = open_gguf(_source_gguf(model_dir))
    arch = gguf_arch.architecture_of(source.metadata, str(source.path))
    replacements = {}
    for layer in loaded.layers:
        values = np.array(layer.fused.astype(mx.float32))
        replacements[gguf_arch.gguf_name(f"{layer.module}.weight")] = Replacement(
            _gguf_rows(loaded, layer.module, values, arch), kind
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return rewrite_gguf(source, out, replacements)


def export_mlx(loaded: Loaded, model_dir: Path, out: Path, kind: str) -> Path:
    dtype = MLX_DTYPES.get(kind)
    fused = []
    for name, module in loaded.model.named_modules():
        if hasattr(module, "fuse") and hasattr(module, "lora_a"):
            linear = module.fuse(dequantize=True)
            if dtype is not None:
                linear.weight = linear.weight.astype(dtype)
            fused.append((name, linear))
    loaded.model.update_modules(tree_unflatten(fused))
    weights = dict(tree_flatten(loaded.model.parameters()))
    config = dict(loaded.config)
    if "quantization" in config:
        # A fused layer is float now; mlx-lm's per-layer entry says so.
        quantization = dict(config["quantization"])
        quantization.update({name: False for name, _ in fused})
        config["quantization"] = config["quantization_config"] = quantization
    config.setdefault("tunewire", {})["fused"] = {
        "fine_tune_type": loaded.fine_tune_type,
        "layers": len(fused),
        "dtype": kind or "as fused",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    usual_mode(staging)
    try:
        _write_weights(staging, weights)
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, staging / name)
        _write_json(staging / "config.json", config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _atomic_file(out: Path, write) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        write(scratch)
        usual_mode(Path(scratch))
        os.replace(scratch, out)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return out


EXPORTERS = {"gguf-adapter": export_gguf_adapter, "gguf": export_gguf_merged, "mlx": export_mlx}


def export(model_dir: Path, adapter_dir: Path, fmt: str, out: Path, kind: str = "") -> Path:
    """Write `adapter_dir` (over the base `model_dir`) as `fmt` to `out`."""
    kind = check_request(fmt, kind)
    if fmt != "mlx":
        _source_gguf(model_dir)  # fail before loading anything
    loaded = load_adapted(model_dir, adapter_dir)
    return EXPORTERS[fmt](loaded, model_dir, out, kind)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunewire.models.export", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="the base model folder")
    parser.add_argument("--adapter", type=Path, required=True, help="the adapter folder")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--type", default="", help="tensor type of the adapted tensors")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        path = export(args.model, args.adapter, args.format, args.output, args.type)
    except (ExportError, gguf_arch.UnsupportedModel, FileNotFoundError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
