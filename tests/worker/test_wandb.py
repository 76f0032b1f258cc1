"""WandB per job: an offline run in JOB_DIR/wandb holds the job's losses and config."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

pytestmark = pytest.mark.timeout(90)

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log of 32 KiB blocks
HEADER = 7  # ":W&B", a 2-byte magic, a version byte


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of an offline run file (wandb no longer ships a Python reader)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full record, or the first chunk of one
            pending = payload
        elif kind in (3, 4):  # middle or last chunk
            pending += payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history_rows(records) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in r.history.item
                }
            )
    return rows


def test_offline_run_has_the_losses_and_the_job_config(make_config, run_worker, validation_file):
    worker = run_worker(
        make_config(
            "wandb-job",
            validation_path=str(validation_file),
            hyperparameters={"max_steps": 4},
            wandb={
                "project": "tunewire-tests",
                "entity": "",
                "name": "tiny-lora",
                "tags": ["ci"],
                "mode": "offline",
            },
        )
    )
    assert worker.returncode == 0, worker.log()
    assert not [e for e in worker.of_type("log") if e.level == "WARNING" and "WandB" in e.message]
    wandb_dir = Path(worker.done().artifacts.wandb_dir)
    assert wandb_dir.is_relative_to(worker.job_dir / "wandb")
    (run_file,) = wandb_dir.glob("run-*.wandb")
    records = wandb_records(run_file)

    rows = history_rows(records)
    logged = {row["_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    expected = worker.losses()
    assert logged.keys() == expected.keys() == {1, 2, 3, 4}
    assert all(math.isclose(logged[s], expected[s], rel_tol=1e-9) for s in expected)
    (evaluation,) = worker.of_type("evaluation")
    assert any(math.isclose(row.get("val/loss", -1), evaluation.validation_loss) for row in rows)

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "tunewire-tests" and run.display_name == "tiny-lora"
    assert list(run.tags) == ["ci"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["job_id"] == "wandb-job"
    assert config["hyperparameters"]["max_steps"] == 4


def test_a_wandb_failure_is_a_warning_and_training_goes_on(make_config, run_worker, monkeypatch):
    # Online mode without an API key: wandb.init refuses, the job must not care.
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    worker = run_worker(
        make_config(hyperparameters={"max_steps": 2}, wandb={"project": "p", "mode": "online"})
    )
    assert worker.returncode == 0, worker.log()
    assert worker.done().outcome == "succeeded"
    warnings = [e.message for e in worker.of_type("log") if e.level == "WARNING"]
    assert any(m.startswith("WandB init failed") for m in warnings), warnings
    assert worker.done().artifacts.wandb_dir is None
