"""OpenAI's `POST /fine_tuning/jobs` body → tunewire's TrainingJobSpec.

OpenAI's parameters map onto the spec (model, files, seed, suffix, metadata,
the wandb integration, the supervised method's hyperparameters); everything
else tunewire can do is accepted under `tunewire` as a partial TrainingJobSpec
in proto JSON (`{"tunewire": {"method": "TRAINING_METHOD_QLORA", "lora": {"rank": 16}}}`),
applied over what the OpenAI parameters set. "auto" hyperparameters are
resolved here, from the training file's size, as OpenAI resolves them; the job
echoes the values it runs with.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from google.protobuf import json_format

from tunewire.gateway.openai import body as fields
from tunewire.gateway.openai.errors import bad_request
from tunewire.gateway.openai.names import MAX_SUFFIX, SUFFIX_CHARS
from tunewire.spec_defaults import default_learning_rate
from tunewire.v1 import training_job_pb2 as training_job_pb

KNOWN = {
    "model",
    "training_file",
    "validation_file",
    "suffix",
    "seed",
    "metadata",
    "integrations",
    "method",
    "hyperparameters",
    "tunewire",
}
HYPERPARAMETERS = {"n_epochs", "batch_size", "learning_rate_multiplier"}
MAX_METADATA = 16
MAX_SEED = 2**31 - 1
# OpenAI's "auto" epochs (its fine-tuning guide): about 3 passes, at least 100
# and at most 25,000 examples seen, between 1 and 25 epochs.
TARGET_EPOCHS, MIN_EXAMPLES, MAX_EXAMPLES, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25
# OpenAI's "auto" batch size: about 0.2% of the training examples, at most 256.
AUTO_BATCH_SHARE, MAX_AUTO_BATCH = 0.002, 256
# Fields the OpenAI parameters own; `tunewire` may not set them a second way.
OWNED_BY_OPENAI = {
    "model": "model",
    "dataset": "training_file",
    "validation_dataset": "validation_file",
}


def auto_batch_size(train_records: int) -> int:
    return max(1, min(MAX_AUTO_BATCH, round(train_records * AUTO_BATCH_SHARE)))


def auto_epochs(train_records: int) -> int:
    if train_records * TARGET_EPOCHS < MIN_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, max(1, MIN_EXAMPLES // max(train_records, 1)))
    if train_records * TARGET_EPOCHS > MAX_EXAMPLES:
        return max(1, MAX_EXAMPLES // train_records)
    return TARGET_EPOCHS


@dataclass
class Requested:
    """The spec to create, with the hyperparameters still "auto"."""

    spec: training_job_pb.TrainingJobSpec
    auto_epochs: bool
    auto_batch_size: bool
    multiplier: float | None


def _auto_or(hp: dict, name: str, param: str, kind: type, low, high):
    value = hp.get(name)
    if value is None or value == "auto":
        return None
    if kind is int:
        return fields.integer(hp, name, param=param, low=low, high=high)
    return fields.number(hp, name, param=param, low=low, high=high, low_open=True)


def _hyperparameters(body: dict) -> tuple[dict, str, bool]:
    """(hyperparameters, where they were, whether the method is DPO)."""
    method = fields.obj(body, "method")
    dpo = False
    if method is not None:
        fields.refuse_unknown(method, {"type", "supervised", "dpo", "reinforcement"}, "method.")
        kind = fields.string(method, "type", param="method.type", required=True)
        if kind not in ("supervised", "dpo"):
            raise bad_request(
                f"method.type must be 'supervised' or 'dpo', got {kind!r}", "method.type"
            )
        dpo = kind == "dpo"
        section = fields.obj(method, kind, param=f"method.{kind}") or {}
        fields.refuse_unknown(section, {"hyperparameters"}, f"method.{kind}.")
        where = f"method.{kind}.hyperparameters"
        hp = fields.obj(section, "hyperparameters", param=where) or {}
        if body.get("hyperparameters"):
            raise bad_request(
                f"give hyperparameters either in {where} or in the "
                "deprecated top-level hyperparameters, not both",
                "hyperparameters",
            )
    else:
        where = "hyperparameters"
        hp = fields.obj(body, "hyperparameters") or {}
    fields.refuse_unknown(hp, HYPERPARAMETERS | ({"beta"} if dpo else set()), where + ".")
    return hp, where, dpo


def _metadata(body: dict, spec: training_job_pb.TrainingJobSpec) -> None:
    metadata = fields.obj(body, "metadata") or {}
    if len(metadata) > MAX_METADATA:
        raise bad_request(
            f"metadata may have at most {MAX_METADATA} keys, got {len(metadata)}", "metadata"
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise bad_request(
                f"metadata keys are at most 64 characters, got {len(key)}", "metadata"
            )
        if not isinstance(value, str) or len(value) > 512:
            raise bad_request(
                f"metadata[{key!r}] must be a string of at most 512 characters", "metadata"
            )
        spec.metadata[key] = value


def _integrations(body: dict, spec: training_job_pb.TrainingJobSpec) -> None:
    for i, item in enumerate(fields.array(body, "integrations", max_len=1) or []):
        where = f"integrations[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object", where)
        fields.refuse_unknown(item, {"type", "wandb"}, where + ".")
        if fields.string(item, "type", param=f"{where}.type", required=True) != "wandb":
            raise bad_request(f"{where}.type must be 'wandb'", f"{where}.type")
        wandb = fields.obj(item, "wandb", param=f"{where}.wandb") or {}
        fields.refuse_unknown(wandb, {"project", "entity", "name", "tags"}, f"{where}.wandb.")
        spec.wandb.project = fields.string(
            wandb, "project", param=f"{where}.wandb.project", required=True, max_len=128
        )
        spec.wandb.entity = fields.string(wandb, "entity", param=f"{where}.wandb.entity") or ""
        spec.wandb.name = fields.string(wandb, "name", param=f"{where}.wandb.name") or ""
        tags = fields.array(wandb, "tags", param=f"{where}.wandb.tags", max_len=64) or []
        if not all(isinstance(t, str) and len(t) <= 64 for t in tags):
            raise bad_request(
                f"{where}.wandb.tags must be strings of at most 64 characters",
                f"{where}.wandb.tags",
            )
        spec.wandb.tags.extend(tags)


def _tunewire(body: dict, spec: training_job_pb.TrainingJobSpec) -> None:
    extra = fields.obj(body, "tunewire")
    if not extra:
        return
    for key, param in OWNED_BY_OPENAI.items():
        if key in extra:
            raise bad_request(
                f"tunewire.{key} is set by the OpenAI parameter {param!r}; give it there",
                f"tunewire.{key}",
            )
    try:
        json_format.ParseDict(extra, spec)
    except json_format.ParseError as exc:
        raise bad_request(f"tunewire: {exc}", "tunewire") from None


def requested_spec(body: dict) -> Requested:
    fields.refuse_unknown(body, KNOWN)
    spec = training_job_pb.TrainingJobSpec()
    spec.model = fields.string(body, "model", required=True, max_len=4096)
    spec.dataset.dataset_id = fields.string(body, "training_file", required=True, max_len=256)
    validation = fields.string(body, "validation_file", max_len=256)
    if validation:
        spec.validation_dataset.dataset_id = validation
    suffix = fields.string(body, "suffix", max_len=MAX_SUFFIX)
    if suffix:
        if not SUFFIX_CHARS.fullmatch(suffix):
            raise bad_request(
                "suffix may hold only letters, digits, '.', '_' and '-' "
                f"(it becomes part of the model name), got {suffix!r}",
                "suffix",
            )
        spec.display_name = suffix
    seed = fields.integer(body, "seed", low=0, high=MAX_SEED)
    spec.hyperparameters.seed = secrets.randbelow(MAX_SEED) if seed is None else seed
    _metadata(body, spec)
    _integrations(body, spec)

    hp, where, dpo = _hyperparameters(body)
    if dpo:
        # OpenAI's DPO: preference pairs (its input/preferred_output/non_preferred_output).
        spec.preference.method = training_job_pb.PREFERENCE_METHOD_DPO
        beta = _auto_or(hp, "beta", f"{where}.beta", float, 0.0, 10.0)
        if beta is not None:
            spec.preference.beta = beta
    epochs = _auto_or(hp, "n_epochs", f"{where}.n_epochs", int, 1, 10_000)
    batch = _auto_or(hp, "batch_size", f"{where}.batch_size", int, 1, 1024)
    multiplier = _auto_or(
        hp, "learning_rate_multiplier", f"{where}.learning_rate_multiplier", float, 0.0, 1000.0
    )
    if epochs is not None:
        spec.hyperparameters.epochs = epochs
    if batch is not None:
        spec.hyperparameters.batch_size = batch

    _tunewire(body, spec)
    hps = spec.hyperparameters
    return Requested(
        spec=spec,
        auto_epochs=not hps.HasField("epochs") and not hps.max_steps,
        auto_batch_size=not hps.HasField("batch_size"),
        multiplier=None if hps.HasField("learning_rate") else multiplier,
    )


def resolve(requested: Requested, train_records: int | None) -> training_job_pb.TrainingJobSpec:
    """The spec with "auto" resolved as OpenAI resolves it: epochs and batch size from
    the training file's valid records (when known; the trainer's defaults otherwise),
    the learning rate as the multiplier times the method's default learning rate."""
    spec = requested.spec
    hp = spec.hyperparameters
    if train_records:
        held_out = spec.validation_fraction if not spec.HasField("validation_dataset") else 0.0
        train = max(1, int(train_records * (1.0 - min(max(held_out, 0.0), 0.5))))
        if requested.auto_epochs:
            hp.epochs = auto_epochs(train)
        if requested.auto_batch_size:
            hp.batch_size = auto_batch_size(train)
    if requested.multiplier is not None:
        hp.learning_rate = requested.multiplier * default_learning_rate(spec.method)
    return spec
