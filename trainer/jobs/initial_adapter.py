"""A job that starts from an existing adapter (`spec.initial_adapter`): another
job's adapter or one of its checkpoints, or an adapter folder on the server
(inside the data roots). mlx-lm's `resume_adapter_file` is the same idea: the
adapter's weights are loaded into the new job's freshly built adapters before
the first step.

Everything is checked here, at create, before anything runs: the adapter's kind
against the job's method, its rank against the job's, and every tensor's name and
shape against the adapters the job will build on its base (read from the
safetensors headers; no mlx in the daemon).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

from tunewire.errors import FieldViolation
from tunewire.trainer.model_inspect import ModelInfo, weight_shapes
from tunewire.trainer.paths import Roots, confine
from tunewire.v1 import training_job_pb2 as training_job_pb

FIELD = "initial_adapter"
WEIGHTS = "adapters.safetensors"
CONFIG = "adapter_config.json"
MAX_SHOWN = 5
KINDS = {
    training_job_pb.TRAINING_METHOD_LORA: "lora",
    training_job_pb.TRAINING_METHOD_QLORA: "lora",
    training_job_pb.TRAINING_METHOD_DORA: "dora",
}


class AdapterUnusable(ValueError):
    """The adapter cannot start this job; the message says why."""


def source_dir(
    source: training_job_pb.InitialAdapter,
    job_adapter: Callable[[str, int], str],
    roots: Roots,
    uploaded: Callable[[str], Path] | None = None,
) -> Path:
    """The adapter folder `source` names. `job_adapter(job_id, step)` finds another
    job's (visible to the caller) adapter, or its checkpoint at `step`; `uploaded(id)`
    an adapter the caller uploaded (NOT_FOUND for anyone else's)."""
    if sum(map(bool, (source.job_id, source.path, source.adapter_id))) != 1:
        raise AdapterUnusable("give exactly one of job_id, path and adapter_id")
    if source.adapter_id:
        if source.checkpoint_step:
            raise AdapterUnusable("checkpoint_step goes with job_id, not adapter_id")
        if uploaded is None:
            raise AdapterUnusable("this server does not keep uploaded adapters")
        return uploaded(source.adapter_id)
    if source.path:
        if source.checkpoint_step:
            raise AdapterUnusable("checkpoint_step goes with job_id, not path")
        folder = Path(confine(source.path, roots, f"{FIELD}.path"))
        return folder.parent if folder.name == WEIGHTS else folder
    return Path(job_adapter(source.job_id, source.checkpoint_step))


def read_header(path: Path) -> dict[str, list[int]]:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100 << 20:
                raise AdapterUnusable(f"{path.name} has an implausible header ({size} bytes)")
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise AdapterUnusable(f"cannot read {path.name}: {exc}") from None
    return {k: v.get("shape", []) for k, v in header.items() if k != "__metadata__"}


def _base_in_out(shape: list[int], bits: int) -> tuple[int, int]:
    """(input, output) size of a base linear layer from its weight's shape (packed if quantized)."""
    out, packed = shape
    return (packed * 32 // bits if bits else packed), out


def expected_tensors(
    spec: training_job_pb.TrainingJobSpec, model: ModelInfo
) -> dict[str, list[int]]:
    """Name → shape of every adapter tensor the job builds (as mlx-lm names them)."""
    base = weight_shapes(model.path)
    bits = _quantization_bits(model.path)
    rank = spec.lora.rank
    first = model.num_layers - spec.lora.num_layers
    tensors: dict[str, list[int]] = {}
    for layer in range(max(first, 0), model.num_layers):
        for module in spec.lora.target_modules:
            prefix = f"model.layers.{layer}.{module}"
            shape = base.get(f"{prefix}.weight")
            if shape is None or len(shape) != 2:
                continue
            size_in, size_out = _base_in_out(shape, bits)
            tensors[f"{prefix}.lora_a"] = [size_in, rank]
            tensors[f"{prefix}.lora_b"] = [rank, size_out]
            if spec.method == training_job_pb.TRAINING_METHOD_DORA:
                tensors[f"{prefix}.m"] = [size_out]
    return tensors


def _quantization_bits(model_dir: Path) -> int:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 0
    quantization = config.get("quantization") or {}
    return int(quantization.get("bits", 0)) if isinstance(quantization, dict) else 0


def check(
    folder: Path, spec: training_job_pb.TrainingJobSpec, model: ModelInfo
) -> tuple[str, list[FieldViolation]]:
    """(the adapter weights file, violations): the adapter against the job it would start."""
    kind = KINDS.get(spec.method)
    if kind is None:
        return "", [FieldViolation(FIELD, "only LoRA, QLoRA and DoRA jobs start from an adapter")]
    weights = folder / WEIGHTS
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return "", [FieldViolation(FIELD, f"no readable {CONFIG} beside {WEIGHTS}: {exc}")]
    violations = []
    found_kind = config.get("fine_tune_type", "lora")
    if found_kind != kind:
        violations.append(
            FieldViolation(FIELD, f"the adapter is {found_kind!r}, this job trains {kind!r}")
        )
    found_rank = (config.get("lora_parameters") or {}).get("rank")
    if found_rank != spec.lora.rank:
        violations.append(
            FieldViolation(
                "lora.rank",
                f"is {spec.lora.rank}, the initial adapter's rank is {found_rank}: they must match",
            )
        )
    if violations:
        return "", violations
    try:
        have = read_header(weights)
    except AdapterUnusable as exc:
        return "", [FieldViolation(FIELD, str(exc))]
    want = expected_tensors(spec, model)
    problems = [
        f"{name}: shape {have[name]}, this job's adapter is {shape}"
        for name, shape in want.items()
        if name in have and have[name] != shape
    ]
    problems += [f"{name}: missing" for name in want if name not in have]
    problems += [f"{name}: not an adapter tensor of this job" for name in have if name not in want]
    if problems:
        shown = "; ".join(problems[:MAX_SHOWN])
        more = f" (and {len(problems) - MAX_SHOWN} more)" if len(problems) > MAX_SHOWN else ""
        violations.append(
            FieldViolation(
                FIELD,
                f"does not fit {model.path.name} with this job's adapters "
                f"(lora.num_layers, lora.target_modules): {shown}{more}",
            )
        )
    return str(weights), violations
