"""A training YAML file → a job spec.

Two vocabularies are accepted in one file:

* tunewire's own: the keys of `tunewire.v1.TrainingJobSpec`, nested as in the
  proto (`hyperparameters: {batch_size: 4}`, `method: qlora`);
* the keys of an `mlx_lm.lora` config (`--config`), so a file written for
  mlx-lm trains here too: model, data, fine_tune_type, lora_parameters,
  num_layers, batch_size, iters, learning_rate, max_seq_length, ... (table
  below). `data` is a local file, or a folder with train.jsonl (and
  valid.jsonl), that `tunewire train` uploads.

Keys left out get tunewire's defaults (the server fills them in; `tunewire
jobs show` prints them), not mlx-lm's. An unknown key is an error naming it,
its line, and the nearest valid key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunewire.client.spec import SpecError, field_names, spec_from_dict, suggest
from tunewire.v1 import training_job_pb2 as job_pb

# mlx_lm.lora key → the spec field it sets (dotted path).
MLX_LM_FIELDS = {
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
}
# mlx_lm.lora keys with their own translation (see `_translate`).
MLX_LM_SPECIAL = (
    "data",
    "fine_tune_type",
    "lora_parameters",
    "optimizer",
    "optimizer_config",
    "lr_schedule",
    "mask_prompt",
    "val_batches",
    "report_to",
)
# Keys that mean something only to mlx-lm's own command line: accepted, not used.
MLX_LM_IGNORED = {
    "train": "training is what `tunewire train` does",
    "test": "run a test pass yourself with `tunewire generate`",
    "test_batches": "there is no test pass",
    "adapter_path": "the server keeps the adapter in the job's directory (`tunewire jobs show JOB`)",
    "clear_cache_threshold": "the worker manages its memory cache",
    "trust_remote_code": "tunewire loads only models mlx-lm supports natively",
    "config": "this file is the config",
}
MLX_LM_UNSUPPORTED = {
    "resume_adapter_file": "resuming from an adapter file is not supported; jobs resume from their own checkpoints",
    "hf_dataset": "Hugging Face datasets are not fetched; download the data and point `data` at the folder",
}
LORA_PARAMETER_KEYS = ("rank", "scale", "alpha", "dropout", "keys")
MLX_LM_RANK_DEFAULT = 8
SCHEDULES = {"cosine_decay": "cosine", "linear_schedule": "linear"}
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")


class ConfigError(ValueError):
    """A config file problem, worded with its file and line."""


@dataclass
class TrainConfig:
    """What `tunewire train` does with a file: the spec (as a mapping), local
    data to upload first, and notes about keys that were accepted but not used."""

    spec: dict
    upload_train: Path | None = None
    upload_validation: Path | None = None
    notes: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # spec path -> the file's key that set it

    def to_spec(self, dataset_id: str = "", validation_id: str = "") -> job_pb.TrainingJobSpec:
        data = dict(self.spec)
        if dataset_id:
            data["dataset"] = {"dataset_id": dataset_id}
        if validation_id:
            data["validation_dataset"] = {"dataset_id": validation_id}
        return spec_from_dict(data)


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    return parse_config(text, str(path))


def parse_config(text: str, name: str = "config") -> TrainConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ConfigError(
            f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"
        ) from None
    if data is None:
        raise ConfigError(
            f"{name}: the file is empty; it needs at least `model` and `data` (or `dataset`)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping of keys to values at the top")
    lines = _key_lines(root)

    def where(key):
        return f"{name}:{lines[key]}" if key in lines else name

    config = TrainConfig(spec={})
    problems = _translate(data, config, where)
    if not problems:
        try:
            config.to_spec(
                "ds-placeholder" if config.upload_train else "",
                "ds-placeholder" if config.upload_validation else "",
            )
        except SpecError as exc:

            def origin(p):
                return config.origins.get(p, p)

            problems = [f"{where(origin(p))}: {origin(p)}: {why}" for p, why in exc.problems]
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def _key_lines(node, prefix: str = "") -> dict[str, int]:
    """Line of every key in the YAML, by dotted path ('hyperparameters.batch_size')."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}{key.value}"
            lines[path] = key.start_mark.line + 1
            lines.update(_key_lines(value, path + "."))
    return lines


def _translate(data: dict, config: TrainConfig, where) -> list[str]:
    native_keys = set(field_names(job_pb.TrainingJobSpec.DESCRIPTOR))
    native_keys |= {f.json_name for f in job_pb.TrainingJobSpec.DESCRIPTOR.fields}
    known = sorted(native_keys | set(MLX_LM_FIELDS) | set(MLX_LM_SPECIAL) | set(MLX_LM_IGNORED))
    spec, problems, setters = config.spec, [], config.origins

    def put(dotted: str, value, key: str, replace: bool = False) -> None:
        if dotted in setters and not replace:
            problems.append(
                f"{where(key)}: {key!r} sets {dotted}, which {setters[dotted]!r} already sets"
            )
            return
        setters[dotted] = key
        *parents, leaf = dotted.split(".")
        target = spec
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                problems.append(f"{where(key)}: {key!r} conflicts with {part!r}")
                return
        target[leaf] = value

    # lr_schedule last: its first argument replaces learning_rate, as in mlx-lm.
    for key, value in sorted(data.items(), key=lambda kv: kv[0] == "lr_schedule"):
        key = str(key)
        if key in native_keys:
            if key == "wandb" and isinstance(value, str):  # older mlx-lm: `wandb: PROJECT`
                value = {"project": value}
            for dotted, leaf in (
                _leaf_paths(value, key) if isinstance(value, dict) else [(key, value)]
            ):
                put(dotted, leaf, dotted)
        elif key in MLX_LM_FIELDS:
            put(MLX_LM_FIELDS[key], value, key)
        elif key in MLX_LM_SPECIAL:
            problems += _special(key, value, put, config, where)
        elif key in MLX_LM_IGNORED:
            config.notes.append(f"{where(key)}: ignored {key!r}: {MLX_LM_IGNORED[key]}")
        elif key in MLX_LM_UNSUPPORTED:
            problems.append(f"{where(key)}: {key!r}: {MLX_LM_UNSUPPORTED[key]}")
        else:
            problems.append(f"{where(key)}: unknown key {key!r}{suggest(key, known)}")
    if config.upload_train and "dataset" in spec:
        problems.append(
            f"{where('data')}: give `data` (a local file to upload) or `dataset` (on the server), not both"
        )
    if config.upload_validation and "validation_dataset" in spec:
        problems.append(
            f"{where('data')}: {config.upload_train.parent}/valid.jsonl and `validation_dataset` both "
            "give validation data; keep one"
        )
    if "quantization" in spec and "method" not in spec:
        spec["method"] = (
            "qlora"  # a quantization section means QLoRA, as a quantized model does in mlx-lm
        )
    if not problems and not spec.get("model"):
        problems.append(
            f"{where('')}: `model` is required: a Hugging Face id or a local model folder"
        )
    if not problems and "dataset" not in spec and config.upload_train is None:
        problems.append(
            f"{where('')}: no training data: set `data` (a local file or folder) or `dataset`"
        )
    if isinstance(spec.get("model"), str) and Path(spec["model"]).expanduser().exists():
        # A local folder: the trainer runs elsewhere (another working directory), so send it absolute.
        spec["model"] = str(Path(spec["model"]).expanduser().resolve())
    return problems


def _leaf_paths(value: dict, prefix: str):
    """(dotted path, value) of every non-mapping leaf; maps like `metadata` stay whole."""
    if prefix in ("metadata",):
        return [(prefix, value)]
    out = []
    for k, v in value.items():
        path = f"{prefix}.{k}"
        out += _leaf_paths(v, path) if isinstance(v, dict) and v else [(path, v)]
    return out


def _special(key: str, value, put, config: TrainConfig, where) -> list[str]:
    here = where(key)
    if key == "data":
        return _data(value, config, here)
    if key == "fine_tune_type":
        if value not in ("lora", "dora", "full"):
            return [f"{here}: fine_tune_type must be lora, dora or full, got {value!r}"]
        put("method", value, key)
    elif key == "lora_parameters":
        return _lora_parameters(value, put, where)
    elif key == "optimizer":
        if str(value).lower() not in OPTIMIZERS:
            return [
                f"{here}: optimizer must be one of {', '.join(OPTIMIZERS)}, got {value!r}"
                + suggest(str(value).lower(), OPTIMIZERS)
            ]
        put("hyperparameters.optimizer", str(value).lower(), key)
    elif key == "optimizer_config":
        return _optimizer_config(value, put, here)
    elif key == "lr_schedule":
        return _schedule(value, put, here)
    elif key == "mask_prompt":
        if not isinstance(value, bool):
            return [f"{here}: mask_prompt must be true or false, got {value!r}"]
        # mlx-lm: true trains the last message only; false trains every token.
        put("loss_masking", "last_assistant_turn" if value else "all_tokens", key)
    elif key == "val_batches":
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            return [f"{here}: val_batches must be -1 (all) or a count, got {value!r}"]
        put("evaluation.max_batches", max(value, 0), key)
    elif key == "report_to":
        services = [s.strip() for s in str(value or "").split(",") if s.strip()]
        unknown = [s for s in services if s != "wandb"]
        if unknown:
            return [f"{here}: report_to supports only 'wandb', got {', '.join(map(repr, unknown))}"]
    return []


def _data(value, config: TrainConfig, here: str) -> list[str]:
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


def _lora_parameters(value, put, where) -> list[str]:
    here = where("lora_parameters")
    if not isinstance(value, dict):
        return [f"{here}: lora_parameters must be a mapping (rank, scale, dropout, keys)"]
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


def _optimizer_config(value, put, here: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{here}: optimizer_config must be a mapping of optimizer name to settings"]
    problems = []
    for name, settings in value.items():
        if name not in OPTIMIZERS:
            problems.append(
                f"{here}: optimizer_config.{name}: unknown optimizer"
                + suggest(str(name), OPTIMIZERS)
            )
            continue
        for setting, v in (settings or {}).items():
            if setting == "weight_decay":
                put("hyperparameters.weight_decay", v, f"optimizer_config.{name}.weight_decay")
            else:
                problems.append(
                    f"{here}: optimizer_config.{name}.{setting} is not supported "
                    "(only weight_decay; tunewire sets the other optimizer settings)"
                )
    return problems


def _schedule(value, put, here: str) -> list[str]:
    if not isinstance(value, dict) or "name" not in value:
        return [f"{here}: lr_schedule must be a mapping with name, arguments and optionally warmup"]
    unknown = set(value) - {"name", "arguments", "warmup", "warmup_init"}
    if unknown:
        return [
            f"{here}: unknown key 'lr_schedule.{min(unknown)}'"
            + suggest(min(unknown), ("name", "arguments", "warmup", "warmup_init"))
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
