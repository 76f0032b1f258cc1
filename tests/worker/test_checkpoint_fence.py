"""Checkpoint files and the final adapter fenced by attempt on a shared artifact
root: a worker whose attempt was superseded (its trainer lost the lease while it
was frozen) cannot rename a checkpoint or adapter over the newer attempt's, nor
land one while it is between its check and its rename, and leaves no half-written
folder."""

from __future__ import annotations

import json
import os
import threading

import mlx.core as mx
import pytest
from mlx import nn

from tunewire.trainer.protocol import attempt_fence
from tunewire.trainer.worker import artifacts, checkpoint


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


def test_a_worker_between_its_check_and_its_rename_holds_the_new_attempt_off(tmp_path, monkeypatch):
    """The check and the rename are one step: a worker frozen between them (here held
    inside its rename) keeps the next attempt from starting, so it cannot land a
    checkpoint into that attempt's files; once it is through, the new attempt starts
    and the stale worker is fenced."""
    attempt_fence.write(tmp_path, 1)
    stale = attempt_fence.read(tmp_path)
    inside, go_on = threading.Event(), threading.Event()
    real_rename = os.rename

    def frozen_rename(src, dst):
        if str(dst).startswith(str(checkpoint.checkpoints_dir(tmp_path))):
            inside.set()
            go_on.wait(30)
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", frozen_rename)
    saved = []
    worker = threading.Thread(target=lambda: saved.append(_save(tmp_path, 1.0, stale)))
    worker.start()
    try:
        assert inside.wait(30)
        with pytest.raises(attempt_fence.FenceBusy, match=r"still holds attempt\.lock"):
            attempt_fence.write(tmp_path, 2, wait=0.3)
        assert attempt_fence.read(tmp_path) == "1"  # attempt 2 did not start
    finally:
        go_on.set()
        worker.join(30)
    monkeypatch.setattr(checkpoint.os, "rename", real_rename)
    assert saved  # landed while attempt 1 still owned the files

    attempt_fence.write(tmp_path, 2, wait=0.3)
    with pytest.raises(attempt_fence.Fenced):
        _save(tmp_path, 5.0, stale)
    assert checkpoint.load(saved[0][0])[0]["w"].tolist() == [1.0, 1.0, 1.0]


def test_a_superseded_attempt_cannot_replace_the_final_adapter(tmp_path):
    model = nn.Linear(2, 2)
    attempt_fence.write(tmp_path, 1)
    stale = attempt_fence.read(tmp_path)
    attempt_fence.write(tmp_path, 2)
    fresh = attempt_fence.read(tmp_path)
    model.weight = mx.full((2, 2), 2.0)
    final = artifacts.save_adapters(tmp_path, model, {"rank": 2}, fresh)

    model.weight = mx.full((2, 2), 1.0)
    with pytest.raises(attempt_fence.Fenced, match="the final adapter refused"):
        artifacts.save_adapters(tmp_path, model, {"rank": 2}, stale)
    assert mx.load(str(final / "adapters.safetensors"))["weight"].tolist() == [[2.0, 2.0]] * 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".adapters")) == []
    # Without a fence (one trainer on its own database) it is written as before.
    assert artifacts.save_adapters(tmp_path / "alone", model, {"rank": 2}, None).is_dir()


def test_a_superseded_attempt_prunes_nothing(tmp_path):
    """Pruning is fenced too: a stale worker cannot delete the checkpoint the newer
    attempt resumed from."""
    attempt_fence.write(tmp_path, 1)
    stale = attempt_fence.read(tmp_path)
    for step in (1, 2, 3):
        state = checkpoint.TrainState(step=step, metrics={"train_loss": 1.0})
        checkpoint.save(tmp_path, {"w": mx.zeros((1,))}, {}, state, {}, stale)
    attempt_fence.write(tmp_path, 2)
    with pytest.raises(attempt_fence.Fenced, match="pruning old checkpoints refused"):
        checkpoint.prune(tmp_path, keep_last=1, best_step=0, attempt=stale)
    assert checkpoint.existing_steps(tmp_path) == [1, 2, 3]
    fresh = attempt_fence.read(tmp_path)
    assert len(checkpoint.prune(tmp_path, keep_last=1, best_step=0, attempt=fresh)) == 2
    assert checkpoint.existing_steps(tmp_path) == [3]
