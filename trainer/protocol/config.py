"""The worker's configuration: what the daemon writes to JOB_DIR/worker_config.json.

The daemon decides every value (`tunewire.trainer.jobs.spec` applies the
defaults, `tunewire.trainer.jobs.handoff` builds this record from the stored
job); nothing here has a default of its own, so a config that lacks a field is
a `ConfigError` naming it, as is an unknown field, a value of the wrong type,
an enum word the proto does not have, or another protocol version. Field names
and nesting follow `tunewire.v1.TrainingJobSpec`, enum values are the proto's
words (`tunewire.enum_words`), so a job's spec and its worker's config compare
field by field. Ranges are the daemon's to check, once, before a job is queued.
This module must not import mlx: the worker reports STARTING before mlx loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewire.trainer.protocol import codec
from tunewire.trainer.protocol.codec import PROTOCOL_VERSION
from tunewire.v1 import training_job_pb2 as training_job_pb


class ConfigError(ValueError):
    """A worker config that cannot run; the message names the field and the value."""


@dataclass(kw_only=True)
class LoraSettings:
    rank: int = field(metadata={"help": "Rank r of the adapter matrices."})
    alpha: float = field(metadata={"help": "Scale is alpha / rank, as in PEFT."})
    dropout: float = field(metadata={"help": "Dropout on the adapter input."})
    target_modules: list[str] = field(
        metadata={"help": "Block paths ('self_attn.q_proj') or short names; empty: every linear."}
    )
    num_layers: int = field(metadata={"help": "Blocks from the last that get adapters."})

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass(kw_only=True)
class QuantizationSettings:
    bits: int = field(metadata={"help": "QLoRA bits per weight (4 or 8)."})
    group_size: int = field(metadata={"help": "Weights per group (32, 64, 128)."})


@dataclass(kw_only=True)
class Hyperparameters:
    max_steps: int = field(metadata={"help": "Optimizer steps; 0: from epochs."})
    epochs: int = field(metadata={"help": "Passes over the data when max_steps is 0."})
    batch_size: int = field(
        metadata={"help": "Records (packed: rows) per micro-batch (all ranks)."}
    )
    learning_rate: float = field(metadata={"help": "Peak learning rate."})
    learning_rate_schedule: str = field(
        metadata={"words": training_job_pb.LearningRateSchedule, "help": "After warmup."}
    )
    warmup_steps: int = field(metadata={"help": "Linear warmup from 0."})
    min_learning_rate: float = field(metadata={"help": "End of cosine/linear."})
    optimizer: str = field(
        metadata={"words": training_job_pb.Optimizer, "help": "adamw, adam, sgd or adafactor."}
    )
    weight_decay: float = field(metadata={"help": "Weight decay."})
    gradient_accumulation_steps: int = field(metadata={"help": "Micro-batches per step."})
    max_seq_length: int = field(metadata={"help": "Longer records are truncated."})
    gradient_checkpointing: bool = field(metadata={"help": "Recompute activations."})
    seed: int = field(metadata={"help": "Seed of adapters, data order and dropout."})
    max_grad_norm: float = field(metadata={"help": "Global-norm clip; 0: off."})
    bias_correction: bool = field(metadata={"help": "Adam(W) moment bias correction."})
    half_precision_frozen_weights: bool = field(
        metadata={"help": "CPU: frozen base in bf16/f16, widened per layer."}
    )
    packing: bool = field(metadata={"help": "Several records per row, attention within each."})
    gradient_checkpointing_blocks: int = field(
        metadata={"help": "Checkpointed blocks from the first; 0: all."}
    )


@dataclass(kw_only=True)
class EarlyStopping:
    patience: int = field(metadata={"help": "Evaluations without improvement; 0: off."})
    min_delta: float = field(metadata={"help": "Smallest decrease that counts."})


@dataclass(kw_only=True)
class EvaluationSettings:
    interval_steps: int = field(metadata={"help": "0: once at the end."})
    max_batches: int = field(metadata={"help": "Batches per evaluation; 0: all."})
    early_stopping: EarlyStopping


@dataclass(kw_only=True)
class CheckpointSettings:
    interval_steps: int = field(metadata={"help": "Steps between checkpoints."})
    keep_last: int = field(metadata={"help": "Newest kept (+ the best); 0: all."})


@dataclass(kw_only=True)
class WandbSettings:
    project: str = field(metadata={"help": "'' turns WandB off."})
    entity: str
    name: str
    tags: list[str]
    mode: str = field(
        metadata={"words": training_job_pb.WandbMode, "help": "offline, online or disabled."}
    )

    @property
    def enabled(self) -> bool:
        return bool(self.project) and self.mode != "disabled"


@dataclass(kw_only=True)
class DistributedSettings:
    world_size: int = field(metadata={"help": "Data-parallel ranks."})
    backend: str = field(
        metadata={"words": training_job_pb.DistributedBackend, "help": "ring, mpi or nccl."}
    )
    hosts: list[str] = field(metadata={"help": "'host[:port]' per rank, rank order."})


@dataclass(kw_only=True)
class PreferenceSettings:
    method: str = field(
        metadata={"words": training_job_pb.PreferenceMethod, "help": "dpo or orpo."}
    )
    beta: float = field(metadata={"help": "DPO's beta (0 for ORPO)."})
    loss: str = field(
        metadata={"words": training_job_pb.DpoLoss, "help": "sigmoid, ipo or hinge (DPO)."}
    )
    label_smoothing: float = field(metadata={"help": "Conservative DPO's smoothing."})
    sft_weight: float = field(metadata={"help": "Weight of the chosen reply's NLL (DPO)."})
    orpo_lambda: float = field(metadata={"help": "ORPO's odds-ratio weight (0 for DPO)."})


@dataclass(kw_only=True)
class WorkerConfig:
    protocol: int = field(metadata={"help": "The protocol version of the daemon that wrote it."})
    job_id: str
    job_dir: str
    model: str = field(metadata={"help": "Local directory of the base model."})
    train_path: str = field(metadata={"help": "Canonical JSONL of training records."})
    validation_path: str | None = field(
        metadata={"help": "Canonical JSONL of validation records, if any."}
    )
    method: str = field(
        metadata={"words": training_job_pb.TrainingMethod, "help": "lora, qlora, dora or full."}
    )
    lora: LoraSettings | None = field(metadata={"help": "None for full."})
    quantization: QuantizationSettings | None = field(metadata={"help": "QLoRA only."})
    hyperparameters: Hyperparameters
    loss_masking: str = field(
        metadata={"words": training_job_pb.LossMasking, "help": "Which tokens train."}
    )
    evaluation: EvaluationSettings
    checkpointing: CheckpointSettings
    report_interval_steps: int
    wandb: WandbSettings
    distributed: DistributedSettings
    preference: PreferenceSettings | None = field(
        metadata={"help": "DPO or ORPO on preference pairs; None: supervised."}
    )
    initial_adapter_file: str | None = field(
        metadata={
            "help": "adapters.safetensors to start from (checked by the daemon); None: fresh."
        }
    )

    @property
    def uses_adapters(self) -> bool:
        return self.method != "full"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode(config: WorkerConfig) -> str:
    """The config as the JSON text of worker_config.json."""
    return codec.dumps(codec.encode(config))


def decode(data: Any) -> WorkerConfig:
    """A WorkerConfig from decoded JSON; ConfigError names what is wrong."""
    if isinstance(data, dict) and data.get("protocol") != PROTOCOL_VERSION:
        raise ConfigError(
            f"the worker config was written for protocol version {data.get('protocol')!r}; "
            f"this worker speaks version {PROTOCOL_VERSION}"
        )
    try:
        return codec.decode(WorkerConfig, data)
    except codec.DecodeError as exc:
        raise ConfigError(f"worker config: {exc}") from None


def load(path: str | Path) -> WorkerConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read worker config {path}: {exc}") from None
    try:
        data = codec.loads(text)
    except codec.DecodeError as exc:
        raise ConfigError(f"worker config {path}: {exc}") from None
    return decode(data)
