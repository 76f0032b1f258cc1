"""Checks a job spec before it is queued: every problem that would stop the job
from running becomes a field violation, all of them at once.

`check_spec` sees the spec with every default applied (`spec.py` runs it after
`apply_defaults`), so it checks the values the job will really run with and
never repeats a default. Dataset contents are checked by `data.py`; this module
checks the model, the numbers and their combinations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tunewire.errors import FieldViolation
from tunewire.trainer import model_inspect
from tunewire.trainer.jobs.check_tools import MAX_BATCH, Bad, collector, enum_ok, show
from tunewire.trainer.jobs.distributed_checks import check_distributed
from tunewire.trainer.model_inspect import ModelInfo, ModelUnusable
from tunewire.trainer.paths import Roots
from tunewire.v1 import training_job_pb2 as training_job_pb

MAX_RANK = 1024
MAX_ACCUMULATION = 1024
MIN_SEQ, MAX_SEQ = 16, 131072
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000_000
MAX_METADATA = 64
MAX_TEXT = 256
MAX_TARGET_MODULES = 256
MAX_ALPHA = 65536.0
MAX_WEIGHT_DECAY = 10.0
MAX_GRAD_NORM = 1e6
MAX_MIN_DELTA = 1000.0
QUANT_BITS = (4, 8)
QUANT_GROUPS = (32, 64, 128)

Spec = training_job_pb.TrainingJobSpec


def _float_fields(message: Message, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(path, value) of every float and double field set in the spec, at any depth."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            values = value if field.is_repeated else [value]
            for i, v in enumerate(values):
                yield (f"{path}[{i}]" if len(values) > 1 else path), v
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field.message_type):
            if field.is_repeated:
                for i, item in enumerate(value):
                    yield from _float_fields(item, f"{path}[{i}].")
            else:
                yield from _float_fields(value, f"{path}.")


def _is_map(descriptor: Descriptor) -> bool:
    return descriptor.GetOptions().map_entry


def _non_finite(spec: Spec) -> list[tuple[str, float]]:
    return [(path, v) for path, v in _float_fields(spec) if not math.isfinite(v)]


MAX_MEMORY_GIB = 1 << 20  # 1 PiB: past any host; a bigger number is a unit mistake


def _check_resources(resources: training_job_pb.ResourceRequirements, bad: Bad) -> None:
    if not enum_ok(training_job_pb.ResourceDevice, resources.device):
        bad("resources.device", f"unknown device {resources.device}: ANY, CPU or GPU")
    memory = resources.min_memory_gib
    if math.isfinite(memory) and not 0 <= memory <= MAX_MEMORY_GIB:
        bad(
            "resources.min_memory_gib",
            f"must be between 0 and {MAX_MEMORY_GIB} GiB, got {memory:g}",
        )


def inspect(spec: Spec, model_roots: Roots) -> tuple[ModelInfo | None, list[FieldViolation]]:
    """The model as the daemon can know it (config and weight headers, no mlx). A local
    model outside the model roots is PERMISSION_DENIED, raised by paths.py."""
    found, bad = collector()
    if not spec.model:
        bad("model", "is required: a Hugging Face hub id or a local model directory")
        return None, found
    try:
        return model_inspect.inspect_model(spec.model, model_roots, "spec.model"), found
    except ModelUnusable as exc:
        bad("model", str(exc))
        return None, found


def check_spec(
    spec: Spec, model: ModelInfo | None, hosts: list[str], *, wandb_online_allowed: bool
) -> list[FieldViolation]:
    """Every violation of a spec whose defaults are applied."""
    non_finite = _non_finite(spec)
    found, bad = collector(frozenset(path for path, _ in non_finite))
    found += [
        FieldViolation(f"spec.{path}", f"must be a finite number, got {value:g}")
        for path, value in non_finite
    ]
    _check_method(spec, model, bad)
    _check_data(spec, bad)
    if spec.HasField("lora"):
        _check_lora(spec.lora, model, bad)
    if spec.method == training_job_pb.TRAINING_METHOD_QLORA:
        q = spec.quantization
        if q.bits not in QUANT_BITS:
            bad("quantization.bits", f"must be 4 or 8, got {q.bits}")
        if q.group_size not in QUANT_GROUPS:
            bad("quantization.group_size", f"must be 32, 64 or 128, got {q.group_size}")
    _check_hyperparameters(spec.hyperparameters, model, bad)
    if not enum_ok(training_job_pb.LossMasking, spec.loss_masking):
        bad("loss_masking", f"unknown loss masking {spec.loss_masking}")
    _check_evaluation(spec, bad)
    check_distributed(spec, hosts, bad)
    _check_resources(spec.resources, bad)
    _check_labels(spec, wandb_online_allowed, bad)
    if spec.HasField("preference"):
        _check_preference(spec.preference, bad)
        if spec.hyperparameters.packing:
            bad(
                "hyperparameters.packing",
                "packs supervised records only; set it false for DPO/ORPO",
            )
    return found


def _check_method(spec: Spec, model: ModelInfo | None, bad: Bad) -> None:
    if not enum_ok(training_job_pb.TrainingMethod, spec.method):
        bad("method", f"unknown method {spec.method}; use LORA, QLORA, DORA or FULL")
    if (
        model is not None
        and model.quantized
        and spec.method == training_job_pb.TRAINING_METHOD_FULL
    ):
        bad(
            "method", "FULL fine-tuning needs a float model, but this model is quantized; use QLORA"
        )


def _check_data(spec: Spec, bad: Bad) -> None:
    if not spec.HasField("dataset") or spec.dataset.WhichOneof("source") is None:
        bad("dataset", "is required: set dataset.dataset_id or dataset.path")
    if not 0.0 <= spec.validation_fraction <= 0.5:
        bad("validation_fraction", f"must be between 0 and 0.5, got {spec.validation_fraction:g}")
    if spec.validation_fraction and spec.HasField("validation_dataset"):
        bad(
            "validation_fraction", "give either validation_dataset or validation_fraction, not both"
        )


def _check_lora(lora: training_job_pb.LoraConfig, model: ModelInfo | None, bad: Bad) -> None:
    rank_ok = 1 <= lora.rank <= MAX_RANK
    if not rank_ok:
        bad("lora.rank", f"must be between 1 and {MAX_RANK}, got {lora.rank}")
    if rank_ok and not 0 < lora.alpha <= MAX_ALPHA:  # a bad rank repeats itself in its alpha
        bad("lora.alpha", f"must be in (0, {MAX_ALPHA:g}], got {lora.alpha:g}")
    if not 0.0 <= lora.dropout < 1.0:
        bad("lora.dropout", f"must be in [0, 1), got {lora.dropout:g}")
    if lora.num_layers < -1:
        bad(
            "lora.num_layers",
            f"must be -1 (all), 0 (default) or a positive count, got {lora.num_layers}",
        )
    elif model is not None and model.num_layers and lora.num_layers > model.num_layers:
        bad("lora.num_layers", f"the model has {model.num_layers} blocks, got {lora.num_layers}")
    if len(lora.target_modules) > MAX_TARGET_MODULES:
        bad(
            "lora.target_modules",
            f"at most {MAX_TARGET_MODULES} names, got {len(lora.target_modules)}",
        )
    elif lora.target_modules and model is not None:
        _, unknown = model_inspect.resolve_target_modules(
            list(lora.target_modules), model.block_linear_modules
        )
        if unknown:
            valid = ", ".join(sorted({m.rsplit(".", 1)[-1] for m in model.block_linear_modules}))
            bad(
                "lora.target_modules",
                f"unknown module(s) {', '.join(map(show, unknown[:10]))}"
                f"{f' (and {len(unknown) - 10} more)' if len(unknown) > 10 else ''}; "
                f"this model has: {valid}",
            )


def _check_hyperparameters(
    hp: training_job_pb.Hyperparameters, model: ModelInfo | None, bad: Bad
) -> None:
    if hp.max_steps < 0 or hp.max_steps > MAX_STEPS:
        bad("hyperparameters.max_steps", f"must be between 0 and {MAX_STEPS}, got {hp.max_steps}")
    if hp.HasField("epochs") and not 1 <= hp.epochs <= MAX_EPOCHS:
        bad("hyperparameters.epochs", f"must be between 1 and {MAX_EPOCHS}, got {hp.epochs}")
    if not 1 <= hp.batch_size <= MAX_BATCH:
        bad("hyperparameters.batch_size", f"must be between 1 and {MAX_BATCH}, got {hp.batch_size}")
    lr_ok = 0.0 < hp.learning_rate <= 1.0
    if not lr_ok:
        bad("hyperparameters.learning_rate", f"must be in (0, 1], got {hp.learning_rate:g}")
    # Checked against a wrong learning_rate it would only repeat that violation.
    if lr_ok and not 0.0 <= hp.min_learning_rate <= hp.learning_rate:
        bad(
            "hyperparameters.min_learning_rate",
            f"must be between 0 and learning_rate, got {hp.min_learning_rate:g}",
        )
    if not 0 <= hp.warmup_steps <= MAX_STEPS:
        bad(
            "hyperparameters.warmup_steps",
            f"must be between 0 and {MAX_STEPS}, got {hp.warmup_steps}",
        )
    elif 0 < hp.max_steps <= MAX_STEPS and hp.warmup_steps >= hp.max_steps:
        bad(
            "hyperparameters.warmup_steps",
            f"must be less than max_steps ({hp.max_steps}), got {hp.warmup_steps}",
        )
    if not enum_ok(training_job_pb.LearningRateSchedule, hp.learning_rate_schedule):
        bad(
            "hyperparameters.learning_rate_schedule",
            f"unknown schedule {hp.learning_rate_schedule}",
        )
    if not enum_ok(training_job_pb.Optimizer, hp.optimizer):
        bad("hyperparameters.optimizer", f"unknown optimizer {hp.optimizer}")
    if not 0 <= hp.weight_decay <= MAX_WEIGHT_DECAY:
        bad(
            "hyperparameters.weight_decay",
            f"must be between 0 and {MAX_WEIGHT_DECAY:g}, got {hp.weight_decay:g}",
        )
    if not 1 <= hp.gradient_accumulation_steps <= MAX_ACCUMULATION:
        bad(
            "hyperparameters.gradient_accumulation_steps",
            f"must be between 1 and {MAX_ACCUMULATION}, got {hp.gradient_accumulation_steps}",
        )
    if not MIN_SEQ <= hp.max_seq_length <= MAX_SEQ:
        bad(
            "hyperparameters.max_seq_length",
            f"must be between {MIN_SEQ} and {MAX_SEQ}, got {hp.max_seq_length}",
        )
    elif model is not None and model.context_length and hp.max_seq_length > model.context_length:
        bad(
            "hyperparameters.max_seq_length",
            f"the model's context is {model.context_length} tokens, got {hp.max_seq_length}",
        )
    _check_checkpointed_blocks(hp, model, bad)
    if not 0 <= hp.max_grad_norm <= MAX_GRAD_NORM:
        bad(
            "hyperparameters.max_grad_norm",
            f"must be between 0 (off) and {MAX_GRAD_NORM:g}, got {hp.max_grad_norm:g}",
        )


def _check_checkpointed_blocks(hp, model: ModelInfo | None, bad: Bad) -> None:
    blocks = hp.gradient_checkpointing_blocks
    field = "hyperparameters.gradient_checkpointing_blocks"
    if blocks < 0:
        bad(field, f"must be 0 (every block) or a number of blocks, got {blocks}")
    elif blocks and not hp.gradient_checkpointing:
        bad(field, f"is {blocks} but hyperparameters.gradient_checkpointing is false; set it true")
    elif model is not None and model.num_layers and blocks > model.num_layers:
        bad(field, f"the model has {model.num_layers} blocks, got {blocks}")


def _check_evaluation(spec: Spec, bad: Bad) -> None:
    ev = spec.evaluation
    has_validation = spec.HasField("validation_dataset") or spec.validation_fraction > 0
    if ev.interval_steps < 0:
        bad("evaluation.interval_steps", f"must be at least 0, got {ev.interval_steps}")
    if ev.max_batches < 0:
        bad("evaluation.max_batches", f"must be at least 0, got {ev.max_batches}")
    if ev.early_stopping.patience < 0:
        bad(
            "evaluation.early_stopping.patience",
            f"must be at least 0, got {ev.early_stopping.patience}",
        )
    elif ev.early_stopping.patience and not has_validation:
        bad(
            "evaluation.early_stopping.patience",
            "early stopping needs validation data (validation_dataset or validation_fraction)",
        )
    if not 0 <= ev.early_stopping.min_delta <= MAX_MIN_DELTA:
        bad(
            "evaluation.early_stopping.min_delta",
            f"must be between 0 and {MAX_MIN_DELTA:g}, got {ev.early_stopping.min_delta:g}",
        )
    if spec.checkpointing.interval_steps < 0:
        bad(
            "checkpointing.interval_steps",
            f"must be at least 0, got {spec.checkpointing.interval_steps}",
        )
    if spec.checkpointing.keep_last < 0:
        bad("checkpointing.keep_last", f"must be at least 0, got {spec.checkpointing.keep_last}")
    if spec.report_interval_steps < 0:
        bad("report_interval_steps", f"must be at least 0, got {spec.report_interval_steps}")


MAX_BETA = 10.0


def _check_preference(p: training_job_pb.PreferenceConfig, bad: Bad) -> None:
    if p.method == training_job_pb.PREFERENCE_METHOD_UNSPECIFIED:
        bad("preference.method", "is required in a preference section: DPO or ORPO")
        return
    if not enum_ok(training_job_pb.PreferenceMethod, p.method):
        bad("preference.method", f"unknown preference method {p.method}; use DPO or ORPO")
        return
    if p.method == training_job_pb.PREFERENCE_METHOD_ORPO:
        if not 0.0 < p.orpo_lambda <= MAX_BETA:
            bad("preference.orpo_lambda", f"must be in (0, {MAX_BETA:g}], got {p.orpo_lambda:g}")
        return
    if not 0.0 < p.beta <= MAX_BETA:
        bad("preference.beta", f"must be in (0, {MAX_BETA:g}], got {p.beta:g}")
    if not enum_ok(training_job_pb.DpoLoss, p.loss):
        bad("preference.loss", f"unknown DPO loss {p.loss}; use SIGMOID, IPO or HINGE")
    if not 0.0 <= p.label_smoothing < 0.5:
        bad("preference.label_smoothing", f"must be in [0, 0.5), got {p.label_smoothing:g}")
    elif p.label_smoothing and p.loss != training_job_pb.DPO_LOSS_SIGMOID:
        bad("preference.label_smoothing", "applies to the SIGMOID loss only")
    if not 0.0 <= p.sft_weight <= 100.0:
        bad("preference.sft_weight", f"must be in [0, 100], got {p.sft_weight:g}")


def _check_labels(spec: Spec, wandb_online_allowed: bool, bad: Bad) -> None:
    if spec.wandb.mode == training_job_pb.WANDB_MODE_ONLINE and not wandb_online_allowed:
        bad(
            "wandb.mode", "ONLINE needs a WandB API key on the trainer (WANDB_API_KEY); use OFFLINE"
        )
    if not enum_ok(training_job_pb.WandbMode, spec.wandb.mode):
        bad("wandb.mode", f"unknown mode {spec.wandb.mode}")
    if len(spec.metadata) > MAX_METADATA:
        bad("metadata", f"at most {MAX_METADATA} entries, got {len(spec.metadata)}")
    for key, value in spec.metadata.items():
        if len(key) > MAX_TEXT or len(value) > MAX_TEXT:
            bad(f"metadata[{key[:40]!r}]", f"keys and values are at most {MAX_TEXT} characters")
    if len(spec.display_name) > MAX_TEXT:
        bad("display_name", f"at most {MAX_TEXT} characters, got {len(spec.display_name)}")
