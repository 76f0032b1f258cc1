"""Loads the base model and makes the right parameters trainable for the method.

LoRA, DoRA and QLoRA freeze the base and add adapters with mlx-lm's own
`linear_to_lora_layers`, so the adapters we save load back with
`mlx_lm.load(..., adapter_path=...)`. QLoRA uses an already-quantized base as
is, or quantizes a float one at load; on the CPU its layers then multiply by
their dequantized weights (`cpu_quantized`), mlx's CPU quantized kernel being slow. On the
CPU the frozen matrices of the adapter methods stay in half precision and are widened per
layer (`light_weights`). FULL trains every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx import nn
from mlx.utils import tree_flatten
from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import (
    DEFAULT_ALLOW_PATTERNS,
    get_total_parameters,
    load_tokenizer,
)
from mlx_lm.utils import load_model as mlx_load_model

from tunewire.reasons import Reason
from tunewire.trainer.protocol.config import WorkerConfig
from tunewire.trainer.worker.cpu_quantized import use_dequantized_matmul
from tunewire.trainer.worker.errors import WorkerError
from tunewire.trainer.worker.light_weights import (
    cast_for_cpu,
    plan_half_dtype,
    use_widening_layers,
)

LINEAR_TYPES = (nn.Linear, nn.QuantizedLinear, SwitchLinear, QuantizedSwitchLinear)


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    config: dict  # the model's config.json, as mlx-lm read it
    path: Path  # local directory of the model (hub ids resolved through the cache)
    quantized_at_load: bool = False
    dequantized_layers: int = 0  # quantized layers that multiply in float (CPU QLoRA)
    widened_layers: int = 0  # frozen half-precision layers widened per step (CPU)
    frozen_dtype: str = ""  # their dtype ("bfloat16", "float16"), "" when none


def resolve_model_path(model: str) -> Path:
    """A local directory as is; a hub id through the Hugging Face cache (or download)."""
    path = Path(model)
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except Exception as exc:
        raise WorkerError(
            Reason.MODEL_NOT_FOUND,
            f"model not found: {model!r} is neither a local directory nor a cached or "
            f"reachable hub model ({type(exc).__name__}: {exc})",
        ) from None


def load_model(model: str) -> LoadedModel:
    """mlx-lm's loader, with its failures turned into errors a user can act on."""
    path = resolve_model_path(model)
    if not (path / "config.json").is_file():
        raise WorkerError(Reason.MODEL_NOT_FOUND, f"model not found: {path} has no config.json")
    try:
        module, config = mlx_load_model(path)
        tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise WorkerError(Reason.MODEL_LOAD_FAILED, f"cannot load model {model!r}: {exc}") from None
    return LoadedModel(module, tokenizer, config, path)


def is_quantized(model: nn.Module) -> bool:
    return any(
        isinstance(m, (nn.QuantizedLinear, QuantizedSwitchLinear)) for _, m in model.named_modules()
    )


def prepare_dtype(model: nn.Module, frozen_half: mx.Dtype | None = None) -> None:
    """On the CPU, train in float32: half-precision matmuls there are slow and lossy.
    `frozen_half` keeps the frozen matrices in that dtype (see `light_weights`)."""
    if mx.default_device() == mx.cpu:
        cast_for_cpu(model, frozen_half)


def quantize(model: nn.Module, bits: int, group_size: int) -> None:
    """Quantize every layer whose input size the group size divides (as mlx-lm's convert)."""

    def predicate(_path, module):
        return hasattr(module, "to_quantized") and module.weight.shape[-1] % group_size == 0

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)


def block_linear_paths(model: nn.Module) -> list[str]:
    """Block-relative paths of the linear layers in the transformer blocks."""
    paths = set()
    for block in model.layers:
        paths.update(name for name, m in block.named_modules() if isinstance(m, LINEAR_TYPES))
    return sorted(paths)


def resolve_target_modules(model: nn.Module, target_modules: list[str]) -> list[str]:
    """Short names ('q_proj') or block paths ('self_attn.q_proj') → block paths to adapt."""
    available = block_linear_paths(model)
    if not target_modules:
        return available
    keys: list[str] = []
    for name in target_modules:
        matches = [
            p for p in available if p == name or ("." not in name and p.rsplit(".", 1)[-1] == name)
        ]
        if not matches:
            short = sorted({p.rsplit(".", 1)[-1] for p in available})
            raise WorkerError(
                Reason.UNKNOWN_TARGET_MODULE,
                f"unknown target module {name!r}: this model's blocks have "
                f"{', '.join(short)} (or the paths {', '.join(available)})",
            )
        keys += [m for m in matches if m not in keys]
    return keys


@dataclass
class ParameterCounts:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def count_parameters(model: nn.Module, adapters: bool) -> ParameterCounts:
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    # mlx-lm's count unpacks quantized weights but skips adapter tensors (they sit
    # on non-leaf modules), so adapters are added back, as PEFT's "all params" does.
    total = get_total_parameters(model) + (trainable if adapters else 0)
    return ParameterCounts(trainable, total)


@dataclass
class AdapterSetup:
    """What the adapters are, in the terms mlx-lm's adapter_config.json uses."""

    fine_tune_type: str  # "lora", "dora" or "full"
    num_layers: int
    keys: list[str]
    rank: int
    scale: float
    dropout: float

    def lora_parameters(self) -> dict | None:
        if self.fine_tune_type == "full":
            return None
        return {"rank": self.rank, "scale": self.scale, "dropout": self.dropout, "keys": self.keys}


def apply_method(model: nn.Module, config: WorkerConfig) -> AdapterSetup:
    """Freezes the base and adds adapters, or unfreezes everything for FULL."""
    lora = config.lora
    if config.method == "full":
        if is_quantized(model):
            raise WorkerError(
                Reason.UNSUPPORTED,
                f"full fine-tuning needs a float model, but {config.model} is quantized; "
                "use QLORA, or a float base model",
            )
        model.unfreeze()
        return AdapterSetup("full", len(model.layers), [], 0, 0.0, 0.0)
    n_blocks = len(model.layers)
    if lora.num_layers > n_blocks:
        raise WorkerError(
            Reason.INVALID_CONFIG,
            f"lora.num_layers={lora.num_layers} but the model has only {n_blocks} blocks",
        )
    num_layers = n_blocks if lora.num_layers in (-1, 0) else lora.num_layers
    keys = resolve_target_modules(model, lora.target_modules)
    model.freeze()
    params = {"rank": lora.rank, "scale": lora.scale, "dropout": lora.dropout, "keys": keys}
    fine_tune_type = "dora" if config.method == "dora" else "lora"
    linear_to_lora_layers(model, num_layers, params, use_dora=fine_tune_type == "dora")
    return AdapterSetup(fine_tune_type, num_layers, keys, lora.rank, lora.scale, lora.dropout)


def lora_details(config: WorkerConfig, setup: AdapterSetup, counts: ParameterCounts) -> dict:
    """The `lora_details` of the setup event (rank 0 and no modules for FULL)."""
    adapters = setup.fine_tune_type != "full"
    return {
        "rank": setup.rank,
        "alpha": config.lora.alpha if adapters else 0.0,
        "scale": setup.scale,
        "dropout": setup.dropout,
        "target_modules": setup.keys,
        "num_layers": setup.num_layers,
        "trainable_parameters": counts.trainable,
        "total_parameters": counts.total,
        "trainable_percent": round(counts.percent, 6),
    }


def setup_model(config: WorkerConfig) -> tuple[LoadedModel, AdapterSetup, ParameterCounts]:
    """Load, cast, quantize (QLoRA), seed, and add adapters: the model ready to train."""
    loaded = load_model(config.model)
    # Quantize before the float32 cast: the float32 copy of layers about to be
    # quantized would only cost memory.
    if config.method == "qlora" and not is_quantized(loaded.model):
        quantize(loaded.model, config.quantization.bits, config.quantization.group_size)
        loaded.quantized_at_load = True
    half = plan_half_dtype(
        loaded.model, config.method, config.hyperparameters.half_precision_frozen_weights
    )
    prepare_dtype(loaded.model, half)
    # Materialize the cast and quantized weights now: left lazy, the first
    # training step's graph would hold the originals and the training buffers at once.
    mx.eval(loaded.model.parameters())
    # Seeded right before the adapters are drawn: same seed, same initial adapters.
    seed = config.hyperparameters.seed
    mx.random.seed(seed)
    np.random.seed(seed % 2**32)
    setup = apply_method(loaded.model, config)
    loaded.dequantized_layers = use_dequantized_matmul(loaded.model)
    loaded.widened_layers = use_widening_layers(loaded.model, half)
    loaded.frozen_dtype = str(half).removeprefix("mlx.core.") if loaded.widened_layers else ""
    return loaded, setup, count_parameters(loaded.model, setup.fine_tune_type != "full")
