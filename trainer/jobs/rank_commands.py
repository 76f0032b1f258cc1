"""The commands that start a job's ranks on this trainer: one per rank, with
its environment (BLAS threads shared out among the processes on this host)
and the file its output goes to."""

from __future__ import annotations

import os
from pathlib import Path

from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.processes import blas, launch, supervisor
from tunewire.trainer.protocol import job_layout
from tunewire.trainer.protocol.config import WorkerConfig


def rank_commands(
    trainer: TrainerConfig, config: WorkerConfig, job_dir: Path, argv: list[str]
) -> list[supervisor.RankCommand]:
    hosts = config.distributed.hosts or ["localhost"] * max(1, config.distributed.world_size)
    local_ranks = sum(1 for host in hosts if launch.is_local(host.rsplit(":", 1)[0]))
    # Processes sharing this host (ranks, jobs side by side) share its CPUs:
    # each gets its part of the BLAS threads instead of all fighting over every core.
    sharers = local_ranks * trainer.max_running_jobs
    threads = max(1, (os.cpu_count() or 1) // sharers) if sharers > 1 else None
    env = blas.worker_env(dict(os.environ), threads=threads)
    env["PYTHONUNBUFFERED"] = "1"
    return [
        supervisor.RankCommand(rank_argv, rank_env, job_dir / job_layout.rank_log_file(rank))
        for rank, (rank_argv, rank_env) in enumerate(
            launch.rank_commands(config.distributed, job_dir, argv, base_env=env)
        )
    ]
