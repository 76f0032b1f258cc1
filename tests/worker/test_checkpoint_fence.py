"""Checkpoint files fenced by attempt on a shared artifact root: a worker whose
attempt was superseded (its trainer lost the lease while it was frozen) cannot
rename a checkpoint over the newer attempt's, and leaves no half-written folder."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from tunewire.trainer.protocol import attempt_fence
from tunewire.trainer.worker import checkpoint


def _save(job_dir, value: float, attempt):
    state = checkpoint.TrainState(step=4, metrics={"train_loss": value})
    return checkpoint.save(
        job_dir, {"w": mx.full((3,), value)}, {"m": mx.zeros((3,))}, state, {"rank": 4}, attempt
    )


def test_a_superseded_attempt_cannot_replace_the_new_attempts_checkpoint(tmp_path):
    attempt_fence.write(tmp_path, 1)
    stale = attempt_fence.read(tmp_path)  # what attempt 1's worker read at its start
    assert stale == "1"
    attempt_fence.write(tmp_path, 2)  # another trainer took the job over
    fresh = attempt_fence.read(tmp_path)
    path, _ = _save(tmp_path, 2.0, fresh)

    with pytest.raises(attempt_fence.Fenced, match="attempt 2 of the job has started since"):
        _save(tmp_path, 1.0, stale)

    # Attempt 2's checkpoint is intact, and the stale write left nothing behind.
    weights, _, state = checkpoint.load(path)
    assert weights["w"].tolist() == [2.0, 2.0, 2.0]
    assert state.metrics == {"train_loss": 2.0}
    assert sorted(p.name for p in checkpoint.checkpoints_dir(tmp_path).iterdir()) == [path.name]
    assert json.loads((path / "state.json").read_text())["step"] == 4


def test_without_a_fence_file_checkpoints_are_written_as_before(tmp_path):
    assert attempt_fence.read(tmp_path) is None
    path, _ = _save(tmp_path, 1.0, attempt_fence.read(tmp_path))
    path, _ = _save(tmp_path, 3.0, None)  # the same step again replaces it
    assert checkpoint.load(path)[0]["w"].tolist() == [3.0, 3.0, 3.0]
