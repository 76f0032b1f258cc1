"""The names inside a job's directory ($TUNEWIRE_HOME/jobs/<id>/): the one owner both sides
read them from, so the daemon finds what the worker writes. mlx-free (the daemon imports it).

    worker_config.json   the worker's config, written by the runner at each start
    train.log            rank 0's output (other ranks: train.rank<N>.log)
    data/                the job's train/validation split of its dataset
    checkpoints/<step>/  one directory per checkpoint, complete once state.json is in it,
                         with checksums.json; one that fails its check becomes unusable-<step>
    adapters/            the final adapter (moved into place whole)
    mlx_hostfile.json    the ranks' hosts of a distributed job
    reference_logps.json a DPO job's reference log-probabilities, computed once at its start
    attempt              on a shared queue, the attempt that owns these files (attempt_fence.py)
    attempt.lock         flocked around a fenced rename and a new attempt's start (attempt_fence.py)
"""

from __future__ import annotations

CONFIG_FILE = "worker_config.json"
LOG_FILE = "train.log"
DATA_DIR = "data"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_STATE_FILE = "state.json"
CHECKPOINT_CHECKSUMS_FILE = "checksums.json"  # {file name: SHA-256}, written with the files
CHECKPOINT_ASIDE_PREFIX = "unusable-"  # a checkpoint that failed its check, kept to look at
ADAPTERS_DIR = "adapters"
HOSTFILE = "mlx_hostfile.json"
REFERENCE_LOGPS_FILE = "reference_logps.json"
ATTEMPT_FILE = "attempt"
ATTEMPT_LOCK_FILE = "attempt.lock"


def rank_log_file(rank: int) -> str:
    return LOG_FILE if rank == 0 else f"train.rank{rank}.log"
