"""Checkpoints: everything a job needs to continue exactly where it stopped.

`JOB_DIR/checkpoints/<step as %08d>/` holds the trainable weights
(`adapters.safetensors`: the adapters, or every weight for FULL, named as
mlx-lm names them), `optimizer.safetensors` (the flattened optimizer state,
its step counter included, so the schedule continues), `state.json` (step,
data position, counters, RNG state, metrics), `adapter_config.json` and
`checksums.json` (SHA-256 of each, which the daemon checks before resuming).
A checkpoint is written into a temporary folder, fsynced, then renamed into
place: a reader never sees half of one, whatever moment the process dies.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from tunewire.trainer.protocol import attempt_fence, job_layout
from tunewire.trainer.protocol.checksums import file_sha256
from tunewire.trainer.worker import disk

CHECKPOINTS = job_layout.CHECKPOINTS_DIR
WEIGHTS_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = job_layout.CHECKPOINT_STATE_FILE
ADAPTER_CONFIG_FILE = "adapter_config.json"
TMP_PREFIX = ".tmp-"


@dataclass
class TrainState:
    """The loop's counters; with the weights and optimizer state, a full resume point."""

    step: int = 0
    epoch: int = 0  # data position: the next micro-batch is batch `index` of `epoch`
    index: int = 0
    trained_tokens: int = 0
    best_validation_loss: float | None = None
    best_step: int = 0
    patience_counter: int = 0
    # mx.random.state[0] (two uint32) and numpy's global generator state.
    mx_rng_key: list[int] = field(default_factory=list)
    numpy_rng: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # train_loss, validation_loss at this step

    def capture_rng(self) -> None:
        self.mx_rng_key = [int(x) for x in mx.random.state[0].tolist()]
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        self.numpy_rng = {
            "kind": kind,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }

    def restore_rng(self) -> None:
        if self.mx_rng_key:
            # A key is the seed's two 32-bit halves, so seeding with them restores it
            # (the Python binding offers no setter for the key itself).
            hi, lo = self.mx_rng_key
            mx.random.seed((hi << 32) | lo)
        if self.numpy_rng:
            r = self.numpy_rng
            np.random.set_state(
                (
                    r["kind"],
                    np.array(r["keys"], dtype=np.uint32),
                    r["pos"],
                    r["has_gauss"],
                    r["cached_gaussian"],
                )
            )


def checkpoints_dir(job_dir: str | Path) -> Path:
    return Path(job_dir) / CHECKPOINTS


def checkpoint_path(job_dir: str | Path, step: int) -> Path:
    return checkpoints_dir(job_dir) / f"{step:08d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    job_dir: str | Path,
    weights: dict[str, mx.array],
    optimizer_state: dict,
    state: TrainState,
    adapter_config: dict,
    attempt: str | None = None,
) -> tuple[Path, int]:
    """Writes checkpoint `state.step` atomically; returns its path and size in bytes.
    With `attempt` (the fence this worker started under), raises attempt_fence.Fenced
    and leaves nothing if a newer attempt owns the job's files by the time of the rename."""
    root = checkpoints_dir(job_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(job_dir, state.step)
    tmp = root / f"{TMP_PREFIX}{state.step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with disk.writing(tmp, f"the checkpoint at step {state.step}", final):
        tmp.mkdir()
        mx.save_safetensors(str(tmp / WEIGHTS_FILE), weights)
        mx.save_safetensors(str(tmp / OPTIMIZER_FILE), dict(tree_flatten(optimizer_state)))
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        (tmp / ADAPTER_CONFIG_FILE).write_text(
            json.dumps(adapter_config, indent=4), encoding="utf-8"
        )
        # Written last, inside the folder that is renamed into place: a checkpoint and
        # its checksums appear together or not at all.
        sums = {f.name: file_sha256(f) for f in sorted(tmp.iterdir())}
        (tmp / job_layout.CHECKPOINT_CHECKSUMS_FILE).write_text(
            json.dumps(sums, indent=2), encoding="utf-8"
        )
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    # Check and rename under the fence's lock: a worker frozen while writing (its lease
    # taken meanwhile) finds the newer attempt here and never replaces its checkpoint;
    # one frozen inside holds the newer attempt's start off instead. The same step
    # written again (a resumed run stopping at once) replaces it.
    old = root / f"{TMP_PREFIX}old-{state.step:08d}-{os.getpid()}"
    attempt_fence.land_directory(
        job_dir, attempt, f"checkpoint at step {state.step}", tmp, final, old
    )
    _fsync(root)
    size = sum(f.stat().st_size for f in final.iterdir())
    return final, size


def load(path: str | Path) -> tuple[dict[str, mx.array], dict, TrainState]:
    """Weights, optimizer state (as a tree) and counters of a checkpoint directory."""
    path = Path(path)
    missing = [n for n in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE) if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} lacks {', '.join(missing)}")
    weights = mx.load(str(path / WEIGHTS_FILE))
    optimizer_state = tree_unflatten(list(mx.load(str(path / OPTIMIZER_FILE)).items()))
    state = TrainState(**json.loads((path / STATE_FILE).read_text(encoding="utf-8")))
    return weights, optimizer_state, state


def existing_steps(job_dir: str | Path) -> list[int]:
    root = checkpoints_dir(job_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def prune(
    job_dir: str | Path, keep_last: int, best_step: int, attempt: str | None = None
) -> list[str]:
    """Deletes all but the newest `keep_last` checkpoints and the best; returns what went.
    With `attempt`, fenced like a save: a superseded worker deletes nothing (Fenced), so
    it cannot remove the checkpoint a newer attempt resumed from."""
    if keep_last <= 0:
        return []
    removed = []
    with attempt_fence.landing(job_dir, attempt, "pruning old checkpoints"):
        steps = existing_steps(job_dir)
        keep = set(steps[-keep_last:]) | {best_step}
        for step in steps:
            if step not in keep:
                path = checkpoint_path(job_dir, step)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
    return removed


def remove_partial(job_dir: str | Path) -> None:
    """Temporary folders of a process that died mid-write are garbage: nothing points at them."""
    root = checkpoints_dir(job_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
