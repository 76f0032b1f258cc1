"""A training YAML file → a job spec.

Two vocabularies are accepted in one file:

* tunewire's own: the keys of `tunewire.v1.TrainingJobSpec`, nested as in the
  proto (`hyperparameters: {batch_size: 4}`, `method: qlora`);
* the keys of an `mlx_lm.lora` config (`--config`), so a file written for
  mlx-lm trains here too: every key of mlx-lm's config is known
  (`tunewire/client/mlx_lm_keys.py`), null meaning absent. `data` is a local
  file, or a folder with train.jsonl (and valid.jsonl), that `tunewire train`
  uploads.

Keys left out get tunewire's defaults (the server fills them in; `tunewire
jobs show` prints them), not mlx-lm's. An unknown key is an error naming it,
its line, and the nearest valid key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunewire.client import mlx_lm_keys
from tunewire.client.spec import SpecError, field_names, spec_from_dict, suggest
from tunewire.v1 import training_job_pb2 as training_job_pb


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

    def to_spec(
        self, dataset_id: str = "", validation_id: str = ""
    ) -> training_job_pb.TrainingJobSpec:
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
    native_keys = set(field_names(training_job_pb.TrainingJobSpec.DESCRIPTOR))
    native_keys |= {f.json_name for f in training_job_pb.TrainingJobSpec.DESCRIPTOR.fields}
    known = sorted(native_keys | set(mlx_lm_keys.KEYS))
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

    for key, value in sorted(data.items(), key=lambda kv: kv[0] in mlx_lm_keys.LAST):
        key = str(key)
        if value is None and (key in native_keys or key in mlx_lm_keys.KEYS):
            continue  # `key: null` is the key left out, in mlx-lm's configs as here
        if key in native_keys:
            if key == "wandb" and isinstance(value, str):  # older mlx-lm: `wandb: PROJECT`
                value = {"project": value}
            for dotted, leaf in (
                _leaf_paths(value, key) if isinstance(value, dict) else [(key, value)]
            ):
                put(dotted, leaf, dotted)
        elif key in mlx_lm_keys.FIELDS:
            put(mlx_lm_keys.FIELDS[key], value, key)
        elif key in mlx_lm_keys.SPECIAL:
            problems += mlx_lm_keys.translate(key, value, put, config, where, spec)
        elif key in mlx_lm_keys.IGNORED:
            config.notes.append(f"{where(key)}: ignored {key!r}: {mlx_lm_keys.IGNORED[key]}")
        elif key in mlx_lm_keys.UNSUPPORTED:
            problems.append(f"{where(key)}: {key!r}: {mlx_lm_keys.UNSUPPORTED[key]}")
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
