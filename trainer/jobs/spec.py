"""The job spec's one path: inspect the model, apply every default, check, resolve.

`resolve` is what CreateTrainingJob does with a spec: the model is inspected
(config and weight headers, no mlx), every default of the one table
(`tunewire.spec_defaults`) applied, the *defaulted* spec checked against the
model (`checks.py`), and the names a user gave resolved (target modules to
block paths, num_layers -1 to the block count). `new_job` makes the stored job
of the result: that spec, with the resolved model and data paths, is what
`GetTrainingJob` shows and what the worker runs (`handoff.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewire.errors import FieldViolation
from tunewire.spec_defaults import Context, apply_defaults
from tunewire.trainer import model_inspect
from tunewire.trainer.jobs import checks, distributed_checks
from tunewire.trainer.model_inspect import ModelInfo
from tunewire.trainer.paths import Roots
from tunewire.trainer.protocol import job_layout
from tunewire.v1 import training_job_pb2 as training_job_pb

LOG_FILE = job_layout.LOG_FILE


@dataclass(frozen=True)
class Resolved:
    """A spec after the path: what the job stores, or why it cannot run."""

    spec: training_job_pb.TrainingJobSpec
    model: ModelInfo | None
    hosts: list[str]  # "host[:port]" per rank
    violations: list[FieldViolation]


def resolve(
    spec: training_job_pb.TrainingJobSpec,
    *,
    job_id: str,
    wandb_online_allowed: bool,
    model_roots: Roots,
    roots: Roots | tuple[Path, ...] = (),
) -> Resolved:
    """Inspect → defaults → check the defaulted spec → resolve names. A hostfile outside
    the data roots, or a model outside the model roots, raises PERMISSION_DENIED."""
    model, violations = checks.inspect(spec, model_roots)
    hosts, host_violations = distributed_checks.read_hosts(
        spec, roots if isinstance(roots, Roots) else Roots(tuple(roots))
    )
    violations += host_violations
    context = Context(job_id, model, tuple(hosts), wandb_online_allowed)
    full = apply_defaults(spec, context)
    violations += checks.check_spec(full, model, hosts, wandb_online_allowed=wandb_online_allowed)
    if not violations and model is not None:
        _resolve_names(full, model)
    return Resolved(full, model, hosts or ["localhost"] * full.distributed.world_size, violations)


def _resolve_names(spec: training_job_pb.TrainingJobSpec, model: ModelInfo) -> None:
    """Target modules as block paths, num_layers -1 as the block count: what the worker runs."""
    if not spec.HasField("lora"):
        return
    lora = spec.lora
    if lora.target_modules and model.block_linear_modules:
        paths, _ = model_inspect.resolve_target_modules(
            list(lora.target_modules), model.block_linear_modules
        )
        del lora.target_modules[:]
        lora.target_modules.extend(paths)
    if lora.num_layers == -1 and model.num_layers:
        lora.num_layers = model.num_layers


def new_job(
    resolved: Resolved,
    *,
    job_id: str,
    job_dir: Path,
    train_path: Path,
    validation_path: Path | None,
) -> training_job_pb.TrainingJob:
    """The part of a new job its spec decides: the spec, the resolved inputs, ranks, paths."""
    spec = resolved.spec
    job = training_job_pb.TrainingJob(id=job_id, spec=spec)
    if resolved.model is not None:
        job.resolved.model_path = str(resolved.model.path)
    job.resolved.train_path = str(train_path)
    job.resolved.validation_path = str(validation_path) if validation_path else ""
    job.artifacts.output_dir = str(job_dir)
    job.artifacts.log_path = str(job_dir / LOG_FILE)
    job.distributed.world_size = len(resolved.hosts)
    job.distributed.backend = spec.distributed.backend
    job.distributed.hosts.extend(resolved.hosts)
    return job
