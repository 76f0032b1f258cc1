"""The keys of an `mlx_lm.lora` config (`--config`), translated onto the job spec.

Every key of mlx-lm's config (its `CONFIG_DEFAULTS` and its
`examples/lora_config.yaml`) is known here: it sets spec fields (`FIELDS`, or
its own translation in `translate`), means something only to mlx-lm's own
command line and is accepted with a note (`IGNORED`), or asks for what tunewire
does not do and is refused with the reason (`UNSUPPORTED`). A key whose value
is null is absent, as mlx-lm treats it, so mlx-lm's own defaults
(`resume_adapter_file: null`, `report_to: null`, ...) pass as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunewire import enum_words
from tunewire.client.spec import suggest
from tunewire.spec_defaults import DEFAULTS
from tunewire.v1 import training_job_pb2 as training_job_pb

# mlx_lm.lora key → the spec field it sets (dotted path).
FIELDS = {
    "batch_size": "hyperparameters.batch_size",
    "iters": "hyperparameters.max_steps",
    "learning_rate": "hyperparameters.learning_rate",
    "max_seq_length": "hyperparameters.max_seq_length",
    "grad_checkpoint": "hyperparameters.gradient_checkpointing",
    "grad_accumulation_steps": "hyperparameters.gradient_accumulation_steps",
    "seed": "hyperparameters.seed",
    "num_layers": "lora.num_layers",
    "steps_per_report": "report_interval_steps",
    "steps_per_eval": "evaluation.interval_steps",
    "save_every": "checkpointing.interval_steps",
    "project_name": "wandb.project",
    # mlx-lm loads the file into the fresh adapters; tunewire's initial adapter does the same.
    "resume_adapter_file": "initial_adapter.path",
}
# Keys with their own translation (`translate`); the last two go after every other key:
# lr_schedule's first argument replaces learning_rate (as in mlx-lm), and
# optimizer_config applies to the optimizer the file chose.
SPECIAL = (
    "data",
    "fine_tune_type",
    "training_mode",
    "lora_parameters",
    "optimizer",
    "mask_prompt",
    "val_batches",
    "report_to",
    "lr_schedule",
    "optimizer_config",
    # mlx-lm-lora's (the mlx-lm fork with preference training) keys for DPO and ORPO.
    "train_mode",
    "train_type",
    "dpo_cpo_loss_type",
    "beta",
)
# After every other key: lr_schedule's first argument replaces learning_rate (as in
# mlx-lm), optimizer_config applies to the optimizer the file chose, and `beta` means
# DPO's beta or ORPO's lambda by the train_mode the file chose.
LAST = ("lr_schedule", "optimizer_config", "beta")
# Keys that mean something only to mlx-lm's own command line: accepted, not used.
IGNORED = {
    "train": "training is what `tunewire train` does",
    "test": "run a test pass yourself with `tunewire generate`",
    "test_batches": "there is no test pass",
    "adapter_path": "the server keeps the adapter in the job's directory (`tunewire jobs show JOB`)",
    "clear_cache_threshold": "the worker manages its memory cache",
    "trust_remote_code": "tunewire loads only models mlx-lm supports natively",
    "config": "this file is the config",
    "reward_scaling": "ORPO's rewards are reported as lambda × the mean log-probability",
    "delta": "the hinge loss's margin is 1 / beta (TRL's hinge); set preference.loss: hinge",
}
UNSUPPORTED = {
    "hf_dataset": "Hugging Face datasets are not fetched; download the data and point `data` at the folder",
    "reference_model_path": (
        "DPO's reference is the base model (the adapters off); another reference model is not "
        "supported"
    ),
}
KEYS = (*FIELDS, *SPECIAL, *IGNORED, *UNSUPPORTED)
LORA_PARAMETER_KEYS = ("rank", "scale", "alpha", "dropout", "keys")
SCHEDULE_KEYS = ("name", "arguments", "warmup", "warmup_init")
MLX_LM_RANK_DEFAULT = 8
# mlx-lm's schedule names → the spec's schedules.
SCHEDULES = {
    "cosine_decay": training_job_pb.LEARNING_RATE_SCHEDULE_COSINE,
    "linear_schedule": training_job_pb.LEARNING_RATE_SCHEDULE_LINEAR,
}
# mlx-lm's optimizers; tunewire trains with those the proto has.
MLX_LM_OPTIMIZERS = ("adam", "adamw", "muon", "sgd", "adafactor")
OPTIMIZERS = enum_words.words(training_job_pb.Optimizer)
# training_mode (mlx-lm forks with preference training): "normal" is supervised training.
TRAINING_MODES = ("normal",)
# mlx-lm-lora's train_mode → the spec's preference method (sft: none).
TRAIN_MODES = {"sft": None, "dpo": "dpo", "orpo": "orpo"}
DPO_LOSSES = ("sigmoid", "ipo", "hinge")

Put = Callable[..., None]


def _tunewire_default(path: str) -> Any:
    return next(d.constant for d in DEFAULTS if d.path == path)


def _chosen_optimizer(spec: dict) -> str:
    """The word of the optimizer the file set (native or mlx-lm key), else tunewire's default."""
    given = spec.get("hyperparameters", {}).get("optimizer")
    try:
        number = (
            given
            if isinstance(given, int)
            else enum_words.number(training_job_pb.Optimizer, str(given))
            if given
            else _tunewire_default("hyperparameters.optimizer")
        )
        return enum_words.word(training_job_pb.Optimizer, number)
    except ValueError:
        return str(given)  # refused by the spec's own check, with its line


def translate(
    key: str, value: Any, put: Put, config: Any, where: Callable[[str], str], spec: dict
) -> list[str]:
    """Puts what mlx-lm key `key` means into the spec; returns the problems (file:line: ...)."""
    here = where(key)
    if key == "data":
        return _data(value, config, here)
    if key == "fine_tune_type":
        if value not in ("lora", "dora", "full"):
            return [f"{here}: fine_tune_type must be lora, dora or full, got {value!r}"]
        put("method", value, key)
    elif key == "training_mode":
        if value not in TRAINING_MODES:
            return [
                f"{here}: training_mode {value!r} is not supported; `normal` (supervised "
                "fine-tuning) is what tunewire trains"
            ]
    elif key == "train_type":
        return translate("fine_tune_type", value, put, config, lambda _k: here, spec)
    elif key == "train_mode":
        if value not in TRAIN_MODES:
            return [
                f"{here}: train_mode {value!r} is not supported; tunewire trains "
                f"{', '.join(TRAIN_MODES)}" + suggest(str(value), list(TRAIN_MODES))
            ]
        if TRAIN_MODES[value]:
            put("preference.method", TRAIN_MODES[value], key)
    elif key == "dpo_cpo_loss_type":
        if value not in DPO_LOSSES:
            return [
                f"{here}: dpo_cpo_loss_type must be one of {', '.join(DPO_LOSSES)}, got {value!r}"
            ]
        put("preference.loss", value, key)
    elif key == "beta":
        method = spec.get("preference", {}).get("method")
        if method not in ("dpo", "orpo"):
            return [f"{here}: `beta` needs train_mode dpo or orpo (or preference.method)"]
        put("preference.orpo_lambda" if method == "orpo" else "preference.beta", value, key)
    elif key == "lora_parameters":
        return _lora_parameters(value, put, where)
    elif key == "optimizer":
        name = str(value).lower()
        if name not in OPTIMIZERS:
            return [
                f"{here}: optimizer must be one of {', '.join(OPTIMIZERS)}, got {value!r}"
                + suggest(name, OPTIMIZERS)
            ]
        put("hyperparameters.optimizer", name, key)
    elif key == "optimizer_config":
        return _optimizer_config(value, _chosen_optimizer(spec), put, config, here)
    elif key == "lr_schedule":
        return _schedule(value, put, here)
    elif key == "mask_prompt":
        if not isinstance(value, bool):
            return [f"{here}: mask_prompt must be true or false, got {value!r}"]
        # mlx-lm: true trains the last message only; false trains every token.
        masking = (
            training_job_pb.LOSS_MASKING_LAST_ASSISTANT_TURN
            if value
            else training_job_pb.LOSS_MASKING_ALL_TOKENS
        )
        put("loss_masking", masking, key)
    elif key == "val_batches":
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            return [f"{here}: val_batches must be -1 (all) or a count, got {value!r}"]
        put("evaluation.max_batches", max(value, 0), key)
    elif key == "report_to":
        services = [s.strip() for s in str(value).split(",") if s.strip()]
        unknown = [s for s in services if s != "wandb"]
        if unknown:
            return [f"{here}: report_to supports only 'wandb', got {', '.join(map(repr, unknown))}"]
    return []


def _data(value: Any, config: Any, here: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{here}: data must be a path to a file or a folder, got {value!r}"]
    path = Path(value).expanduser()
    if path.is_dir():
        train, valid = path / "train.jsonl", path / "valid.jsonl"
        if not train.is_file():
            return [
                f"{here}: data folder {value!r} has no train.jsonl (mlx-lm's layout: train.jsonl, valid.jsonl)"
            ]
        config.upload_train = train
        config.upload_validation = valid if valid.is_file() else None
    elif path.is_file():
        config.upload_train = path
    else:
        return [
            (
                f"{here}: data {value!r} is not a local file or folder (Hugging Face datasets are not fetched: "
                "download the data and point `data` at the file or folder)"
            )
        ]
    return []


def _present(value: dict) -> dict:
    """A mapping without its null entries (null is absent, as in mlx-lm)."""
    return {k: v for k, v in value.items() if v is not None}


def _lora_parameters(value: Any, put: Put, where: Callable[[str], str]) -> list[str]:
    here = where("lora_parameters")
    if not isinstance(value, dict):
        return [f"{here}: lora_parameters must be a mapping (rank, scale, dropout, keys)"]
    value = _present(value)
    problems = []
    for k in value:
        if k not in LORA_PARAMETER_KEYS:
            problems.append(
                f"{where('lora_parameters.' + str(k))}: unknown key 'lora_parameters.{k}'"
                + suggest(str(k), LORA_PARAMETER_KEYS)
            )
    if "scale" in value and "alpha" in value:
        problems.append(f"{here}: give scale (mlx-lm) or alpha (PEFT), not both")
    if problems:
        return problems
    rank = value.get("rank")
    if rank is not None:
        put("lora.rank", rank, "lora_parameters")
    if "scale" in value:
        # mlx-lm multiplies the update by `scale`; tunewire by alpha / rank (PEFT's convention).
        scale, r = value["scale"], rank if rank is not None else MLX_LM_RANK_DEFAULT
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not isinstance(r, int):
            return [f"{here}: scale and rank must be numbers, got scale {scale!r}, rank {r!r}"]
        if rank is None:
            put("lora.rank", r, "lora_parameters")
        put("lora.alpha", float(scale) * r, "lora_parameters.scale")
    if "alpha" in value:
        put("lora.alpha", value["alpha"], "lora_parameters.alpha")
    if "dropout" in value:
        put("lora.dropout", value["dropout"], "lora_parameters.dropout")
    if "keys" in value:
        put("lora.target_modules", value["keys"], "lora_parameters.keys")
    return []


def _optimizer_config(value: Any, chosen: str, put: Put, config: Any, here: str) -> list[str]:
    """mlx-lm passes the chosen optimizer's entry to it and ignores the others."""
    if not isinstance(value, dict):
        return [f"{here}: optimizer_config must be a mapping of optimizer name to settings"]
    problems = []
    for name, settings in value.items():
        if name not in MLX_LM_OPTIMIZERS:
            problems.append(
                f"{here}: optimizer_config.{name}: unknown optimizer"
                + suggest(str(name), MLX_LM_OPTIMIZERS)
            )
            continue
        settings = _present(settings or {})
        if name != chosen:
            if settings:
                config.notes.append(
                    f"{here}: ignored 'optimizer_config.{name}': the job trains with {chosen}"
                )
            continue
        for setting, v in settings.items():
            if setting in ("weight_decay", "bias_correction"):
                put(f"hyperparameters.{setting}", v, f"optimizer_config.{name}.{setting}")
            else:
                problems.append(
                    f"{here}: optimizer_config.{name}.{setting} is not supported "
                    "(only weight_decay and bias_correction; tunewire sets the other "
                    "optimizer settings)"
                )
    return problems


def _schedule(value: Any, put: Put, here: str) -> list[str]:
    if not isinstance(value, dict) or "name" not in value:
        return [f"{here}: lr_schedule must be a mapping with name, arguments and optionally warmup"]
    value = _present(value)
    unknown = set(value) - set(SCHEDULE_KEYS)
    if unknown:
        return [
            f"{here}: unknown key 'lr_schedule.{min(unknown)}'"
            + suggest(min(unknown), SCHEDULE_KEYS)
        ]
    name = value["name"]
    if name not in SCHEDULES:
        return [
            f"{here}: lr_schedule {name!r} is not supported; use cosine_decay or linear_schedule"
            + suggest(str(name), SCHEDULES)
        ]
    args = value.get("arguments") or []
    if not isinstance(args, list) or not args:
        return [f"{here}: lr_schedule.arguments must be a list starting with the learning rate"]
    if value.get("warmup_init", 0) not in (0, 0.0):
        return [f"{here}: lr_schedule.warmup_init must be 0 (warmup starts from 0 here)"]
    put("hyperparameters.learning_rate_schedule", SCHEDULES[name], "lr_schedule")
    put("hyperparameters.learning_rate", args[0], "lr_schedule.arguments", replace=True)
    # cosine_decay(init, decay_steps, end=0); linear_schedule(init, end, steps)
    end = (
        args[2]
        if name == "cosine_decay" and len(args) > 2
        else args[1]
        if name == "linear_schedule" and len(args) > 1
        else None
    )
    if end is not None:
        put("hyperparameters.min_learning_rate", end, "lr_schedule.arguments")
    if value.get("warmup"):
        put("hyperparameters.warmup_steps", value["warmup"], "lr_schedule.warmup")
    return []
