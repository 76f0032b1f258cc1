"""The job spec's defaults: the one table, in the shared layer.

Each entry of `DEFAULTS` names a field of `tunewire.v1.TrainingJobSpec`, its
value (a constant, or a rule over the spec and what the server knows: the
model, the hosts, a WandB key), and the words the field's comment in
`training_job.proto` gives after "Default:"; a test holds the proto and this
table to the same words. The trainer applies the table to every spec it accepts
(`tunewire.trainer.jobs.spec`), so `TrainingJob.spec` shows what really runs;
other parts read values from it (the gateway's OpenAI routes turn a
`learning_rate_multiplier` into a learning rate with `default_learning_rate`),
so no part imports another to learn a default. Protos only: no mlx, no trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message

from tunewire.v1 import training_job_pb2 as training_job_pb

Spec = training_job_pb.TrainingJobSpec

ADAPTER_METHODS = frozenset(
    {
        training_job_pb.TRAINING_METHOD_LORA,
        training_job_pb.TRAINING_METHOD_QLORA,
        training_job_pb.TRAINING_METHOD_DORA,
    }
)
DEFAULT_ADAPTER_LR = 1e-4
DEFAULT_FULL_LR = 1e-5
LORA_LAYERS = 16
MAX_SEQ_LENGTH = 2048
ADAMW_WEIGHT_DECAY = 0.01


class ModelFacts(Protocol):
    """What defaults need to know of the base model (the trainer's `ModelInfo` has it)."""

    @property
    def num_layers(self) -> int: ...

    @property
    def context_length(self) -> int: ...

    @property
    def block_linear_modules(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Context:
    """What defaults depend on besides the spec: the job, its model, its hosts, the server."""

    job_id: str = ""
    model: ModelFacts | None = None
    hosts: tuple[str, ...] = ()
    wandb_online: bool = False


Rule = Callable[[Spec, Context], Any]


def _always(_spec: Spec) -> bool:
    return True


def uses_adapters(spec: Spec) -> bool:
    return spec.method in ADAPTER_METHODS


def _qlora(spec: Spec) -> bool:
    return spec.method == training_job_pb.TRAINING_METHOD_QLORA


@dataclass(frozen=True)
class Default:
    path: str  # dotted field path inside TrainingJobSpec
    doc: str  # the field's proto comment says "Default: <doc>."
    rule: Rule
    applies: Callable[[Spec], bool] = _always  # e.g. LoRA fields only for adapter methods
    constant: Any = None  # the value, when it is a constant (None: a rule)


def _const(path: str, value: Any, doc: str, applies: Callable[[Spec], bool] = _always) -> Default:
    return Default(path, doc, lambda _s, _c: value, applies, value)


def default_learning_rate(method: int) -> float:
    """The learning rate a job of `method` gets when it sets none (an unset method is LoRA)."""
    if method in ADAPTER_METHODS or method == training_job_pb.TRAINING_METHOD_UNSPECIFIED:
        return DEFAULT_ADAPTER_LR
    return DEFAULT_FULL_LR


def _num_layers(_spec: Spec, ctx: Context) -> int:
    blocks = ctx.model.num_layers if ctx.model else 0
    return min(LORA_LAYERS, blocks) if blocks else LORA_LAYERS


def _target_modules(_spec: Spec, ctx: Context) -> list[str]:
    modules = sorted(ctx.model.block_linear_modules) if ctx.model else []
    # mlx-lm stacks a mixture of experts' per-expert weights into other modules at
    # load: there only the worker's own "every linear layer" names them right.
    if any(".experts." in f".{m}." for m in modules):
        return []
    return modules


def _max_seq_length(_spec: Spec, ctx: Context) -> int:
    context = ctx.model.context_length if ctx.model else 0
    return min(MAX_SEQ_LENGTH, context) if context else MAX_SEQ_LENGTH


def _weight_decay(spec: Spec, _ctx: Context) -> float:
    adamw = spec.hyperparameters.optimizer == training_job_pb.OPTIMIZER_ADAMW
    return ADAMW_WEIGHT_DECAY if adamw else 0.0


def uses_preference(spec: Spec) -> bool:
    return spec.HasField("preference") and spec.preference.method != 0


def _dpo(spec: Spec) -> bool:
    return uses_preference(spec) and spec.preference.method == training_job_pb.PREFERENCE_METHOD_DPO


def _orpo(spec: Spec) -> bool:
    return (
        uses_preference(spec) and spec.preference.method == training_job_pb.PREFERENCE_METHOD_ORPO
    )


def _wandb_mode(_spec: Spec, ctx: Context) -> int:
    return (
        training_job_pb.WANDB_MODE_ONLINE
        if ctx.wandb_online
        else training_job_pb.WANDB_MODE_OFFLINE
    )


# In the order they apply: a rule may read fields defaulted above it.
DEFAULTS: tuple[Default, ...] = (
    _const("method", training_job_pb.TRAINING_METHOD_LORA, "LORA"),
    _const("lora.rank", 8, "8", uses_adapters),
    Default("lora.alpha", "2 × rank (scale 2.0)", lambda s, _c: 2.0 * s.lora.rank, uses_adapters),
    _const("lora.dropout", 0.0, "0", uses_adapters),
    Default(
        "lora.target_modules", "every linear layer of the block", _target_modules, uses_adapters
    ),
    Default(
        "lora.num_layers",
        f"{LORA_LAYERS}, or every block when the model has fewer",
        _num_layers,
        uses_adapters,
    ),
    _const("quantization.bits", 4, "4", _qlora),
    _const("quantization.group_size", 64, "64", _qlora),
    _const("hyperparameters.max_steps", 0, "0 (the steps of `epochs` passes)"),
    Default(
        "hyperparameters.epochs",
        "1 when `max_steps` is 0",
        lambda _s, _c: 1,
        lambda s: s.hyperparameters.max_steps == 0,
    ),
    _const("hyperparameters.batch_size", 4, "4"),
    Default(
        "hyperparameters.learning_rate",
        f"{DEFAULT_ADAPTER_LR:g} for the adapter methods, {DEFAULT_FULL_LR:g} for FULL",
        lambda s, _c: default_learning_rate(s.method),
    ),
    _const(
        "hyperparameters.learning_rate_schedule",
        training_job_pb.LEARNING_RATE_SCHEDULE_CONSTANT,
        "CONSTANT",
    ),
    _const("hyperparameters.warmup_steps", 0, "0"),
    _const("hyperparameters.min_learning_rate", 0.0, "0"),
    _const("hyperparameters.optimizer", training_job_pb.OPTIMIZER_ADAMW, "ADAMW"),
    Default(
        "hyperparameters.weight_decay",
        f"{ADAMW_WEIGHT_DECAY:g} for ADAMW, 0 for the others",
        _weight_decay,
    ),
    _const("hyperparameters.gradient_accumulation_steps", 1, "1"),
    Default(
        "hyperparameters.max_seq_length",
        f"{MAX_SEQ_LENGTH}, or the model's context length when shorter",
        _max_seq_length,
    ),
    _const("hyperparameters.gradient_checkpointing", False, "false"),
    _const("hyperparameters.seed", 0, "0"),
    _const("hyperparameters.max_grad_norm", 0.0, "0 (no clipping)"),
    _const("hyperparameters.bias_correction", True, "true"),
    _const("hyperparameters.half_precision_frozen_weights", True, "true"),
    _const("hyperparameters.packing", False, "false"),
    _const("hyperparameters.gradient_checkpointing_blocks", 0, "0 (every block)"),
    _const("loss_masking", training_job_pb.LOSS_MASKING_ALL_ASSISTANT_TURNS, "ALL_ASSISTANT_TURNS"),
    _const("validation_fraction", 0.0, "0"),
    _const("evaluation.interval_steps", 0, "0 (once, at the end)"),
    _const("evaluation.max_batches", 0, "0 (the whole validation set)"),
    _const("evaluation.early_stopping.patience", 0, "0 (no early stopping)"),
    _const("evaluation.early_stopping.min_delta", 0.0, "0"),
    _const("checkpointing.interval_steps", 100, "100 (and always at the end)"),
    _const("checkpointing.keep_last", 0, "0 (keep all)"),
    _const("report_interval_steps", 10, "10"),
    Default(
        "distributed.world_size",
        "the number of hosts, or 1",
        lambda _s, c: len(c.hosts) if c.hosts else 1,
    ),
    _const("distributed.backend", training_job_pb.DISTRIBUTED_BACKEND_RING, "RING"),
    _const("resources.device", training_job_pb.RESOURCE_DEVICE_ANY, "ANY"),
    _const("resources.min_memory_gib", 0.0, "0 (any)"),
    Default("wandb.mode", "OFFLINE, or ONLINE when the server has a WandB API key", _wandb_mode),
    _const("preference.beta", 0.1, "0.1", _dpo),
    _const("preference.loss", training_job_pb.DPO_LOSS_SIGMOID, "SIGMOID", uses_preference),
    _const("preference.label_smoothing", 0.0, "0", _dpo),
    _const("preference.sft_weight", 0.0, "0", _dpo),
    _const("preference.orpo_lambda", 0.1, "0.1", _orpo),
    Default("display_name", "the job's id", lambda _s, c: c.job_id),
    Default("wandb.name", "the job's display name", lambda s, _c: s.display_name),
)


def holder(spec: Message, path: str) -> tuple[Message, str]:
    """The message that holds `path`'s last part, and that part's name."""
    *parents, name = path.split(".")
    target = spec
    for part in parents:
        target = getattr(target, part)
    return target, name


def is_unset(message: Message, name: str) -> bool:
    """Unset: not present (fields with presence), empty (repeated) or zero (the rest)."""
    fd = message.DESCRIPTOR.fields_by_name[name]
    if fd.is_repeated:
        return len(getattr(message, name)) == 0
    if fd.has_presence:
        return not message.HasField(name)
    return not getattr(message, name)


def apply_defaults(spec: Spec, ctx: Context) -> Spec:
    """A copy of `spec` with every unset field that applies given its default, and the
    sections a method does not use cleared (LoRA for FULL, quantization but for QLoRA)."""
    out = Spec()
    out.CopyFrom(spec)
    for default in DEFAULTS:
        if not default.applies(out):
            continue
        message, name = holder(out, default.path)
        if not is_unset(message, name):
            continue
        value = default.rule(out, ctx)
        if isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    if not uses_adapters(out):
        out.ClearField("lora")
    if not _qlora(out):
        out.ClearField("quantization")
    return out
