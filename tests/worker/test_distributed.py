"""Data-parallel ranks on MLX's ring backend over loopback, started as the daemon starts them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import pytest

from tunewire.trainer.processes.launch import HOSTFILE_NAME, rank_commands, worker_argv
from tunewire.trainer.protocol.config import DistributedSettings

pytestmark = pytest.mark.timeout(120)

# No dropout: each rank draws masks for its own rows, so it could not match one rank.
# A moderate learning rate: Adam turns float-noise-sized gradients into full-size
# steps, so at very high rates two correct runs drift apart through rounding alone.
SETTINGS = {
    "hyperparameters": {
        "max_steps": 8,
        "batch_size": 4,
        "gradient_accumulation_steps": 2,
        "seed": 2,
        "learning_rate": 0.005,
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
    },
    "evaluation": {"interval_steps": 4},
}


def close(a: float, b: float) -> bool:
    # Different batch shapes per rank change float summation order, nothing more.
    return math.isclose(a, b, rel_tol=1e-4)


def test_two_ranks_give_the_loss_curve_of_one_rank_with_the_same_global_batch(
    make_config, run_worker, start_ranks, validation_file
):
    settings = dict(SETTINGS, validation_path=str(validation_file))
    single = run_worker(make_config("one-rank", **settings))
    assert single.returncode == 0, single.log()

    config = make_config(
        "two-ranks", **settings, distributed={"world_size": 2, "backend": "ring", "hosts": []}
    )
    rank0, (rank1,) = start_ranks(config)
    assert rank0.finish() == 0, rank0.log()
    assert rank1.wait(timeout=60) == 0, (Path(config.job_dir) / "train.rank1.log").read_text()

    (setup,) = rank0.of_type("setup")
    assert setup.world_size == 2 and setup.total_steps == 8
    one, two = single.losses(), rank0.losses()
    assert one.keys() == two.keys() == set(range(1, 9))
    assert all(close(one[s], two[s]) for s in one), (one, two)

    def evals(w):
        return [e.validation_loss for e in w.of_type("evaluation")]

    assert len(evals(rank0)) == 2 and all(map(close, evals(single), evals(rank0)))

    # Throughput and token counts are for the whole job, all ranks together.
    for a, b in zip(single.of_type("metrics"), rank0.of_type("metrics")):
        assert a.trained_tokens == b.trained_tokens
        assert a.all_reduce_seconds_per_step == 0.0 < b.all_reduce_seconds_per_step

    # Rank 0 alone wrote checkpoints and the adapter, and it is the one-rank adapter.
    assert [c.step for c in rank0.of_type("checkpoint")] == [4, 8]
    adapter = mx.load(str(Path(rank0.done().artifacts.adapter_path, "adapters.safetensors")))
    reference = mx.load(str(Path(single.done().artifacts.adapter_path, "adapters.safetensors")))
    assert adapter.keys() == reference.keys()
    for name, weight in adapter.items():
        drift = mx.linalg.norm((weight - reference[name]).flatten()) / mx.linalg.norm(
            reference[name].flatten()
        )
        assert drift.item() < 1e-2, name


def test_rank_commands_give_each_rank_its_place_in_the_ring(tmp_path):
    worker = worker_argv(tmp_path / "worker_config.json")
    commands = rank_commands(ranks(3), tmp_path, worker, base_env={"PATH": "/usr/bin"})
    assert len(commands) == 3
    hosts = json.loads((tmp_path / HOSTFILE_NAME).read_text())
    assert len(hosts) == 3 and all(h[0].startswith("127.0.0.1:") for h in hosts)
    assert len({h[0] for h in hosts}) == 3
    for rank, (argv, env) in enumerate(commands):
        assert argv[1:4] == ["-m", "tunewire.trainer.worker", "--config"]
        assert env["MLX_RANK"] == str(rank) and env["MLX_HOSTFILE"] == str(tmp_path / HOSTFILE_NAME)
        assert env["PATH"] == "/usr/bin"

    remote = rank_commands(
        ranks(2, ["127.0.0.1:5000", "10.0.0.2:5001"]), tmp_path, worker, base_env={}
    )
    assert remote[1][0][:3] == ["ssh", "-o", "BatchMode=yes"] and remote[1][0][3] == "10.0.0.2"
    assert "export MLX_RANK=1;" in remote[1][0][4]
    with pytest.raises(ValueError, match="needs a port"):
        rank_commands(ranks(2, ["127.0.0.1", "10.0.0.2"]), tmp_path, worker)
    single = rank_commands(ranks(1), tmp_path, worker, base_env={})
    assert len(single) == 1 and "MLX_RANK" not in single[0][1]


def ranks(world_size: int, hosts: list[str] | None = None) -> DistributedSettings:
    return DistributedSettings(world_size=world_size, backend="ring", hosts=hosts or [])
