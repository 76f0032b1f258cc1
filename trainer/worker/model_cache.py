"""The inference worker's resident models: base models within a memory budget
(least recently used out first), and adapters applied to a resident base per
request, in place, without loading the base again.

An adapter is applied the way mlx-lm's `load_adapters` does it (LoRA/DoRA layers
wrapped around the base's layers, then the adapter's weights loaded into them)
and taken off again by unwrapping, so the base's own weights are never touched.
Adapters' files are read once and kept (they are small; a few MB).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear
from mlx_lm.tuner.utils import linear_to_lora_layers

from tunewire.trainer.protocol.inference import Quantization, Resident
from tunewire.trainer.worker.errors import WorkerError
from tunewire.trainer.worker.model_setup import load_model, prepare_dtype, quantize

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_LEAVES = {"lora_a", "lora_b", "m"}
WRAPPED_LINEAR = (LoRALinear, DoRALinear, LoRASwitchLinear)
WRAPPED_EMBEDDING = (LoRAEmbedding, DoRAEmbedding)
MAX_ADAPTERS = 32


class OverBudget(ValueError):
    """A model that alone does not fit in the memory budget."""


@dataclass
class Adapter:
    key: tuple[str, int]  # path and the weights file's mtime: a rewritten adapter is read again
    config: dict
    weights: dict[str, mx.array]


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object
    bytes: int
    quantization: Quantization | None
    applied: tuple[str, int] | None = None  # the adapter wrapped around it now


def weights_bytes(model: nn.Module) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def files_bytes(model_dir: Path) -> int:
    """What loading will take, before loading: the size of the weight files."""
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def read_adapter(path: str) -> Adapter:
    folder = Path(path)
    try:
        key = (str(folder), (folder / ADAPTER_WEIGHTS).stat().st_mtime_ns)
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        weights = mx.load(str(folder / ADAPTER_WEIGHTS))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the adapter in {folder.name}: {exc}") from None
    if config.get("fine_tune_type", "lora") == "full":
        raise ValueError("a full fine-tuning checkpoint is not an adapter; use the job's model")
    return Adapter(key, config, weights)  # type: ignore[arg-type]


def remove_adapter(model: nn.Module) -> None:
    """Unwrap every LoRA/DoRA layer back to the base layer it holds."""
    originals = []
    for name, module in model.named_modules():
        if isinstance(module, WRAPPED_LINEAR):
            originals.append((name, module.linear))
        elif isinstance(module, WRAPPED_EMBEDDING):
            originals.append((name, module.embedding))
    if originals:
        model.update_modules(tree_unflatten(originals))


def apply_adapter(model: nn.Module, adapter: Adapter) -> None:
    config = adapter.config
    linear_to_lora_layers(
        model,
        config["num_layers"],
        config["lora_parameters"],
        use_dora=config.get("fine_tune_type") == "dora",
    )
    params = dict(tree_flatten(model.parameters()))
    for name, w in adapter.weights.items():
        if name.rsplit(".", 1)[-1] not in ADAPTER_LEAVES or name not in params:
            remove_adapter(model)
            raise ValueError(f"the adapter's tensor {name} is not an adapter parameter of the base")
        if w.shape != params[name].shape:
            remove_adapter(model)
            raise ValueError(
                f"the adapter's tensor {name} has shape {tuple(w.shape)}, "
                f"the base needs {tuple(params[name].shape)}: trained on another base?"
            )
    model.load_weights(list(adapter.weights.items()), strict=False)
    model.eval()  # new layers start in training mode: their dropout must be off


class ModelCache:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[tuple[str, int, int], Loaded] = OrderedDict()
        self._adapters: OrderedDict[tuple[str, int], Adapter] = OrderedDict()
        self.model_loads = 0
        self.adapter_loads = 0
        self.evictions = 0

    def used_bytes(self) -> int:
        return sum(r.bytes for r in self._models.values())

    def resident(self) -> list[Resident]:
        return [
            Resident(model=key[0], quantization_bits=key[1], bytes=r.bytes)
            for key, r in reversed(self._models.items())
        ]

    def _evict_until(self, free: int, keep: tuple | None = None) -> None:
        for key in list(self._models):
            if self.used_bytes() + free <= self.budget_bytes:
                break
            if key != keep:
                del self._models[key]
                self.evictions += 1
        mx.clear_cache()

    def get(self, model_dir: str, quantization: Quantization | None) -> tuple[Loaded, bool]:
        """The resident base (loaded now if it was not: the bool says so)."""
        bits = quantization.bits if quantization else 0
        group = quantization.group_size if quantization else 0
        key = (model_dir, bits, group)
        found = self._models.get(key)
        if found is not None:
            self._models.move_to_end(key)
            return found, False
        estimate = files_bytes(Path(model_dir))
        if quantization:
            estimate = estimate * quantization.bits // 16
        if estimate > self.budget_bytes:
            raise OverBudget(
                f"model {Path(model_dir).name} needs about {estimate >> 20} MiB, more than the "
                f"inference memory budget of {self.budget_bytes >> 20} MiB"
            )
        self._evict_until(estimate)
        try:
            loaded = load_model(model_dir)
        except WorkerError as exc:
            raise ValueError(exc.message) from None
        if quantization:
            # As the training worker made the base it trained on: quantize, then cast.
            quantize(loaded.model, quantization.bits, quantization.group_size)
            prepare_dtype(loaded.model)
        mx.eval(loaded.model.parameters())
        loaded.model.eval()
        entry = Loaded(loaded.model, loaded.tokenizer, weights_bytes(loaded.model), quantization)
        self._models[key] = entry
        self.model_loads += 1
        self._evict_until(0, keep=key)
        return entry, True

    def adapter(self, path: str) -> Adapter:
        folder = Path(path)
        try:
            key = (str(folder), (folder / ADAPTER_WEIGHTS).stat().st_mtime_ns)
        except OSError as exc:
            raise ValueError(f"cannot read the adapter in {folder.name}: {exc}") from None
        found = self._adapters.get(key)
        if found is not None:
            self._adapters.move_to_end(key)
            return found
        adapter = read_adapter(path)
        self.adapter_loads += 1
        self._adapters[adapter.key] = adapter
        while len(self._adapters) > MAX_ADAPTERS:
            self._adapters.popitem(last=False)
        return adapter

    def prepare(self, entry: Loaded, adapter_path: str | None) -> None:
        """Wrap `adapter_path`'s adapter around the base, or unwrap it for the base alone."""
        adapter = self.adapter(adapter_path) if adapter_path else None
        wanted = adapter.key if adapter else None
        if entry.applied == wanted:
            return
        if entry.applied is not None:
            remove_adapter(entry.model)
            entry.applied = None
        if adapter is not None:
            apply_adapter(entry.model, adapter)
            entry.applied = adapter.key
