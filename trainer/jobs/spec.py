"""The job spec's defaults, and its translation into the worker's configuration.

This is the one place where defaults live: `with_defaults` fills them into the
spec the user sent (so `TrainingJob.spec` shows what will really run), and
`worker_config` turns a complete spec into the JSON the worker reads.
"""

from __future__ import annotations

from tunewire.spec_defaults import ADAPTER_METHODS, DEFAULT_ADAPTER_LR, DEFAULT_FULL_LR
from tunewire.trainer.model_inspect import ModelInfo
from tunewire.v1 import training_job_pb2 as job_pb

DEFAULT_LORA_RANK = 8
DEFAULT_LORA_LAYERS = 16
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_SEQ_LENGTH = 2048
DEFAULT_ADAMW_WEIGHT_DECAY = 0.01
DEFAULT_QUANT_BITS = 4
DEFAULT_QUANT_GROUP_SIZE = 64
DEFAULT_CHECKPOINT_INTERVAL = 100
DEFAULT_REPORT_INTERVAL = 10

_METHOD_NAMES = {
    job_pb.TRAINING_METHOD_LORA: "lora",
    job_pb.TRAINING_METHOD_QLORA: "qlora",
    job_pb.TRAINING_METHOD_DORA: "dora",
    job_pb.TRAINING_METHOD_FULL: "full",
}
_MASKING_NAMES = {
    job_pb.LOSS_MASKING_ALL_ASSISTANT_TURNS: "all_assistant",
    job_pb.LOSS_MASKING_LAST_ASSISTANT_TURN: "last_assistant",
    job_pb.LOSS_MASKING_ALL_TOKENS: "all",
}
_SCHEDULE_NAMES = {
    job_pb.LEARNING_RATE_SCHEDULE_CONSTANT: "constant",
    job_pb.LEARNING_RATE_SCHEDULE_COSINE: "cosine",
    job_pb.LEARNING_RATE_SCHEDULE_LINEAR: "linear",
}
_OPTIMIZER_NAMES = {
    job_pb.OPTIMIZER_ADAMW: "adamw",
    job_pb.OPTIMIZER_ADAM: "adam",
    job_pb.OPTIMIZER_SGD: "sgd",
    job_pb.OPTIMIZER_ADAFACTOR: "adafactor",
}
_BACKEND_NAMES = {
    job_pb.DISTRIBUTED_BACKEND_RING: "ring",
    job_pb.DISTRIBUTED_BACKEND_MPI: "mpi",
    job_pb.DISTRIBUTED_BACKEND_NCCL: "nccl",
}
_WANDB_MODES = {
    job_pb.WANDB_MODE_OFFLINE: "offline",
    job_pb.WANDB_MODE_ONLINE: "online",
    job_pb.WANDB_MODE_DISABLED: "disabled",
}


def method_name(method: int) -> str:
    return _METHOD_NAMES.get(method, "lora")


def with_defaults(
    spec: job_pb.TrainingJobSpec,
    model: ModelInfo | None,
    *,
    wandb_online: bool = False,
    hosts: list[str] | None = None,
) -> job_pb.TrainingJobSpec:
    """A copy of `spec` with every unset field given its default."""
    out = job_pb.TrainingJobSpec()
    out.CopyFrom(spec)
    if out.method == job_pb.TRAINING_METHOD_UNSPECIFIED:
        out.method = job_pb.TRAINING_METHOD_LORA
    adapter = out.method in ADAPTER_METHODS

    lora = out.lora
    if adapter:
        if not lora.HasField("rank"):
            lora.rank = DEFAULT_LORA_RANK
        if not lora.HasField("alpha"):
            lora.alpha = 2.0 * lora.rank
        model_layers = model.num_layers if model else 0
        if lora.num_layers == 0:
            lora.num_layers = (
                min(DEFAULT_LORA_LAYERS, model_layers) if model_layers else DEFAULT_LORA_LAYERS
            )
        elif lora.num_layers < 0 and model_layers:
            lora.num_layers = model_layers
    else:
        out.ClearField("lora")

    if out.method == job_pb.TRAINING_METHOD_QLORA:
        out.quantization.bits = out.quantization.bits or DEFAULT_QUANT_BITS
        out.quantization.group_size = out.quantization.group_size or DEFAULT_QUANT_GROUP_SIZE
    else:
        out.ClearField("quantization")

    hp = out.hyperparameters
    if hp.max_steps == 0 and not hp.HasField("epochs"):
        hp.epochs = 1
    if not hp.HasField("batch_size"):
        hp.batch_size = DEFAULT_BATCH_SIZE
    if not hp.HasField("learning_rate"):
        hp.learning_rate = DEFAULT_ADAPTER_LR if adapter else DEFAULT_FULL_LR
    if hp.learning_rate_schedule == job_pb.LEARNING_RATE_SCHEDULE_UNSPECIFIED:
        hp.learning_rate_schedule = job_pb.LEARNING_RATE_SCHEDULE_CONSTANT
    if hp.optimizer == job_pb.OPTIMIZER_UNSPECIFIED:
        hp.optimizer = job_pb.OPTIMIZER_ADAMW
    if not hp.HasField("weight_decay"):
        hp.weight_decay = (
            DEFAULT_ADAMW_WEIGHT_DECAY if hp.optimizer == job_pb.OPTIMIZER_ADAMW else 0.0
        )
    if not hp.HasField("gradient_accumulation_steps"):
        hp.gradient_accumulation_steps = 1
    if not hp.HasField("max_seq_length"):
        context = model.context_length if model else 0
        hp.max_seq_length = (
            min(DEFAULT_MAX_SEQ_LENGTH, context) if context else DEFAULT_MAX_SEQ_LENGTH
        )

    if out.loss_masking == job_pb.LOSS_MASKING_UNSPECIFIED:
        out.loss_masking = job_pb.LOSS_MASKING_ALL_ASSISTANT_TURNS
    if out.checkpointing.interval_steps == 0:
        out.checkpointing.interval_steps = DEFAULT_CHECKPOINT_INTERVAL
    if out.report_interval_steps == 0:
        out.report_interval_steps = DEFAULT_REPORT_INTERVAL

    dist = out.distributed
    if dist.world_size == 0:
        dist.world_size = len(hosts) if hosts else 1
    if dist.backend == job_pb.DISTRIBUTED_BACKEND_UNSPECIFIED:
        dist.backend = job_pb.DISTRIBUTED_BACKEND_RING

    if out.wandb.mode == job_pb.WANDB_MODE_UNSPECIFIED:
        out.wandb.mode = job_pb.WANDB_MODE_ONLINE if wandb_online else job_pb.WANDB_MODE_OFFLINE
    return out


def worker_config(
    job_id: str,
    job_dir: str,
    spec: job_pb.TrainingJobSpec,
    *,
    model_path: str,
    train_path: str,
    validation_path: str | None,
    target_modules: list[str],
    hosts: list[str],
    resume_from: str | None,
) -> dict:
    """The worker's JSON configuration for a spec that went through `with_defaults`."""
    hp = spec.hyperparameters
    wandb_mode = _WANDB_MODES.get(spec.wandb.mode, "offline")
    return {
        "job_id": job_id,
        "job_dir": job_dir,
        "model": model_path,
        "method": method_name(spec.method),
        "train_path": train_path,
        "validation_path": validation_path,
        "lora": {
            "rank": spec.lora.rank,
            "alpha": spec.lora.alpha,
            "dropout": spec.lora.dropout,
            "target_modules": target_modules,
            "num_layers": spec.lora.num_layers,
        },
        "quantization": {
            "bits": spec.quantization.bits or DEFAULT_QUANT_BITS,
            "group_size": spec.quantization.group_size or DEFAULT_QUANT_GROUP_SIZE,
        },
        "hyperparameters": {
            "max_steps": hp.max_steps,
            "epochs": hp.epochs,
            "batch_size": hp.batch_size,
            "learning_rate": hp.learning_rate,
            "learning_rate_schedule": _SCHEDULE_NAMES[hp.learning_rate_schedule],
            "warmup_steps": hp.warmup_steps,
            "min_learning_rate": hp.min_learning_rate,
            "optimizer": _OPTIMIZER_NAMES[hp.optimizer],
            "weight_decay": hp.weight_decay,
            "gradient_accumulation_steps": hp.gradient_accumulation_steps,
            "max_seq_length": hp.max_seq_length,
            "gradient_checkpointing": hp.gradient_checkpointing,
            "seed": hp.seed,
            "max_grad_norm": hp.max_grad_norm,
        },
        "loss_masking": _MASKING_NAMES[spec.loss_masking],
        "evaluation": {
            "interval_steps": spec.evaluation.interval_steps,
            "max_batches": spec.evaluation.max_batches,
            "early_stopping": {
                "patience": spec.evaluation.early_stopping.patience,
                "min_delta": spec.evaluation.early_stopping.min_delta,
            },
        },
        "checkpointing": {
            "interval_steps": spec.checkpointing.interval_steps,
            "keep_last": spec.checkpointing.keep_last,
        },
        "report_interval_steps": spec.report_interval_steps,
        "wandb": {
            "project": spec.wandb.project,
            "entity": spec.wandb.entity,
            "name": spec.wandb.name or spec.display_name or job_id,
            "tags": list(spec.wandb.tags),
            "mode": wandb_mode if spec.wandb.project else "disabled",
        },
        "distributed": {
            "world_size": len(hosts) if hosts else spec.distributed.world_size,
            "backend": _BACKEND_NAMES.get(spec.distributed.backend, "ring"),
            "hosts": hosts,
        },
        "resume_from": resume_from,
    }
