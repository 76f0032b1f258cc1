"""The worker's configuration: the JSON the daemon writes to JOB_DIR/worker_config.json.

The daemon applies every default before it writes the file (`trainer/spec.py`);
the defaults here only make hand-written configs and tests short. Loading is
strict: an unknown key or a value out of range is a `ConfigError` that names
the field, so a daemon/worker mismatch shows up as a clear error event.
This module must not import mlx: the worker reports STARTING before mlx loads.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

METHODS = ("lora", "qlora", "dora", "full")
SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor")
MASKING_MODES = ("all_assistant", "last_assistant", "all")
WANDB_MODES = ("offline", "online", "disabled")
BACKENDS = ("ring", "mpi", "nccl")


class ConfigError(ValueError):
    """A worker config that cannot run; the message names the field and the value."""


@dataclass
class LoraSettings:
    rank: int = field(default=8, metadata={"help": "Rank r of the adapter matrices."})
    alpha: float = field(default=16.0, metadata={"help": "Scale is alpha / rank, as in PEFT."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    target_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Short ('q_proj') or block-relative ('self_attn.q_proj') names; "
            "empty: every linear layer of the block."
        },
    )
    num_layers: int = field(default=-1, metadata={"help": "Blocks from the last; -1: all."})

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass
class QuantizationSettings:
    bits: int = field(default=4, metadata={"help": "QLoRA bits per weight (4 or 8)."})
    group_size: int = field(default=64, metadata={"help": "Weights per group (32, 64, 128)."})


@dataclass
class Hyperparameters:
    max_steps: int = field(default=0, metadata={"help": "Optimizer steps; 0: from epochs."})
    epochs: int = field(default=1, metadata={"help": "Passes over the data when max_steps is 0."})
    batch_size: int = field(default=4, metadata={"help": "Records per micro-batch (all ranks)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    learning_rate_schedule: str = field(default="constant", metadata={"help": "After warmup."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup from 0."})
    min_learning_rate: float = field(default=0.0, metadata={"help": "End of cosine/linear."})
    optimizer: str = field(default="adamw", metadata={"help": "adamw, adam, sgd or adafactor."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches/step."})
    max_seq_length: int = field(default=2048, metadata={"help": "Longer records are truncated."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations."})
    seed: int = field(default=0, metadata={"help": "Seed of adapters, data order and dropout."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Global-norm clip; 0: off."})


@dataclass
class EarlyStopping:
    patience: int = field(default=0, metadata={"help": "Evaluations without improvement; 0: off."})
    min_delta: float = field(default=0.0, metadata={"help": "Smallest decrease that counts."})


@dataclass
class EvaluationSettings:
    interval_steps: int = field(default=0, metadata={"help": "0: once at the end."})
    max_batches: int = field(default=0, metadata={"help": "Batches per evaluation; 0: all."})
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)


@dataclass
class CheckpointSettings:
    interval_steps: int = field(default=100, metadata={"help": "Steps between checkpoints."})
    keep_last: int = field(default=0, metadata={"help": "Newest kept (+ the best); 0: all."})


@dataclass
class WandbSettings:
    project: str = field(default="", metadata={"help": "'' turns WandB off."})
    entity: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    mode: str = field(default="offline", metadata={"help": "offline, online or disabled."})

    @property
    def enabled(self) -> bool:
        return bool(self.project) and self.mode != "disabled"


@dataclass
class DistributedSettings:
    world_size: int = field(default=1, metadata={"help": "Data-parallel ranks."})
    backend: str = field(default="ring", metadata={"help": "ring, mpi or nccl."})
    hosts: list[str] = field(default_factory=list, metadata={"help": "One per rank; empty: here."})


@dataclass
class WorkerConfig:
    job_id: str
    job_dir: str
    model: str = field(metadata={"help": "Local directory or hub id."})
    train_path: str = field(metadata={"help": "Canonical JSONL of training records."})
    method: str = "lora"
    validation_path: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    loss_masking: str = "all_assistant"
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    checkpointing: CheckpointSettings = field(default_factory=CheckpointSettings)
    report_interval_steps: int = 10
    wandb: WandbSettings = field(default_factory=WandbSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    resume_from: str | None = None

    @property
    def uses_adapters(self) -> bool:
        return self.method != "full"

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raises ConfigError for values the worker cannot run with."""
        hp = self.hyperparameters
        _one_of("method", self.method, METHODS)
        _one_of("loss_masking", self.loss_masking, MASKING_MODES)
        _one_of("hyperparameters.learning_rate_schedule", hp.learning_rate_schedule, SCHEDULES)
        _one_of("hyperparameters.optimizer", hp.optimizer, OPTIMIZERS)
        _one_of("wandb.mode", self.wandb.mode, WANDB_MODES)
        _one_of("distributed.backend", self.distributed.backend, BACKENDS)
        _at_least("hyperparameters.batch_size", hp.batch_size, 1)
        _at_least("hyperparameters.gradient_accumulation_steps", hp.gradient_accumulation_steps, 1)
        _at_least("hyperparameters.max_seq_length", hp.max_seq_length, 2)
        _at_least("hyperparameters.max_steps", hp.max_steps, 0)
        _at_least("hyperparameters.warmup_steps", hp.warmup_steps, 0)
        _at_least("report_interval_steps", self.report_interval_steps, 1)
        _at_least("checkpointing.interval_steps", self.checkpointing.interval_steps, 0)
        _at_least("checkpointing.keep_last", self.checkpointing.keep_last, 0)
        _at_least("evaluation.interval_steps", self.evaluation.interval_steps, 0)
        _at_least("evaluation.max_batches", self.evaluation.max_batches, 0)
        _at_least("evaluation.early_stopping.patience", self.evaluation.early_stopping.patience, 0)
        _at_least("distributed.world_size", self.distributed.world_size, 1)
        if hp.max_steps == 0:
            _at_least("hyperparameters.epochs", hp.epochs, 1)
        if not (hp.learning_rate > 0 and math.isfinite(hp.learning_rate)):
            raise ConfigError(f"hyperparameters.learning_rate must be > 0, got {hp.learning_rate}")
        if hp.max_grad_norm < 0:
            raise ConfigError(f"hyperparameters.max_grad_norm must be >= 0, got {hp.max_grad_norm}")
        if self.uses_adapters:
            _at_least("lora.rank", self.lora.rank, 1)
            if not 0 <= self.lora.dropout < 1:
                raise ConfigError(f"lora.dropout must be in [0, 1), got {self.lora.dropout}")
            if self.lora.num_layers < -1:
                raise ConfigError(
                    f"lora.num_layers must be -1 (all) or >= 0, got {self.lora.num_layers}"
                )
        if self.method == "qlora":
            _one_of("quantization.bits", self.quantization.bits, (4, 8))
            _one_of("quantization.group_size", self.quantization.group_size, (32, 64, 128))
        if hp.batch_size % self.distributed.world_size:
            raise ConfigError(
                f"hyperparameters.batch_size={hp.batch_size} must be divisible by "
                f"distributed.world_size={self.distributed.world_size}"
            )


def _one_of(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def from_dict(data: dict) -> WorkerConfig:
    """Builds and validates a WorkerConfig; unknown keys and wrong types are ConfigErrors."""
    config = _build(WorkerConfig, data, "")
    config.validate()
    return config


def load(path: str | Path) -> WorkerConfig:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read worker config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"worker config {path} must hold a JSON object")
    return from_dict(data)


def _build(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config field {prefix}{unknown[0]}")
    values = {}
    for name, f in known.items():
        path = prefix + name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"config field {path} is required")
            continue
        values[name] = _convert(hints[name], data[name], path)
    return cls(**values)


def _convert(hint, value, path: str):
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _build(hint, value, path + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(t for t in options if t is not type(None))
        origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path} must be a list of strings, got {value!r}")
        return list(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{path} must be {hint.__name__}, got {value!r}")
    return value
