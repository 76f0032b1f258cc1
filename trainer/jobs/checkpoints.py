"""Which checkpoint a job resumes from: the newest one whose files match the
checksums written with them. One that does not (truncated, corrupted, half
of it missing) is set aside as `unusable-<step>` (kept to look at, never used
again) and the one before it is tried, so a bad file costs steps, not the job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tunewire.trainer.protocol import job_layout
from tunewire.trainer.protocol.checksums import file_sha256

# What a checkpoint needs to be resumed from (the worker's checkpoint.py writes them).
REQUIRED = ("adapters.safetensors", "optimizer.safetensors", job_layout.CHECKPOINT_STATE_FILE)


@dataclass
class Choice:
    path: Path | None  # the checkpoint to resume from; None: start from the beginning
    set_aside: list[str] = field(default_factory=list)  # one sentence per checkpoint set aside


def candidates(job_dir: Path) -> list[Path]:
    """Complete checkpoints (directories appear by atomic rename), newest first."""
    root = job_dir / job_layout.CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / job_layout.CHECKPOINT_STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name), reverse=True)


def problem(checkpoint: Path) -> str | None:
    """Why the checkpoint cannot be resumed from, or None when it can."""
    missing = [name for name in REQUIRED if not (checkpoint / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        json.loads((checkpoint / job_layout.CHECKPOINT_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{job_layout.CHECKPOINT_STATE_FILE} unreadable"
    sums_file = checkpoint / job_layout.CHECKPOINT_CHECKSUMS_FILE
    if not sums_file.is_file():
        return None  # written before checkpoints carried checksums
    try:
        sums = json.loads(sums_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{job_layout.CHECKPOINT_CHECKSUMS_FILE} unreadable"
    for name, expected in sorted(sums.items()):
        try:
            if file_sha256(checkpoint / name) != expected:
                return f"{name} does not match its checksum"
        except OSError:
            return f"{name} unreadable"
    return None


def choose(job_dir: Path) -> Choice:
    """The newest usable checkpoint; those newer that fail their check are set aside."""
    choice = Choice(None)
    for checkpoint in candidates(job_dir):
        why = problem(checkpoint)
        if why is None:
            choice.path = checkpoint
            return choice
        aside = _aside_name(checkpoint)
        os.rename(checkpoint, aside)
        choice.set_aside.append(
            f"checkpoint at step {int(checkpoint.name)} is unusable ({why}); set aside as "
            f"{aside.name}"
        )
    return choice


def _aside_name(checkpoint: Path) -> Path:
    base = checkpoint.with_name(f"{job_layout.CHECKPOINT_ASIDE_PREFIX}{checkpoint.name}")
    aside, n = base, 1
    while aside.exists():
        n += 1
        aside = base.with_name(f"{base.name}.{n}")
    return aside


def recorded_resume_point(job_dir: Path, recorded_steps: set[int]) -> Path | None:
    """The newest usable checkpoint whose step the store recorded. One the worker wrote after
    the last event its trainer recorded (a trainer lost, or a daemon killed with the worker's
    events still in the pipe) would skip the steps in between in the job's event log."""
    for path in candidates(job_dir):
        if int(path.name) in recorded_steps and problem(path) is None:
            return path
    return None
