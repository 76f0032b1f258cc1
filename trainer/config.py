"""The trainer daemon's configuration: one frozen dataclass, filled once from flags and environment."""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tunewire import addresses
from tunewire.identity import INTERNAL_TOKEN_ENV
from tunewire.trainer.paths import Roots, huggingface_cache

DATABASE_ENV = "TUNEWIRE_DATABASE"


def db_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def default_home() -> Path:
    return Path(os.environ.get("TUNEWIRE_HOME", "./.tunewire")).resolve()


@dataclass(frozen=True)
class TrainerConfig:
    home: Path = field(default_factory=default_home, metadata={"help": "State directory."})
    database: str = field(
        default="",
        repr=False,  # a URL may carry a password
        metadata={
            "help": "postgresql://... to share one database (and queue) with other trainers; "
            "'': SQLite in HOME/state.db."
        },
    )
    artifact_root: Path | None = field(
        default=None,
        metadata={
            "help": "Where datasets and jobs' files live (a shared filesystem when trainers "
            "share a database); None: the home."
        },
    )
    listen: str = field(
        default=addresses.DEFAULT_TRAINER,
        metadata={"help": "host:port, or unix:PATH; 'unix' alone means HOME/trainer.sock."},
    )
    data_roots: tuple[Path, ...] = field(
        default=(), metadata={"help": "Directories whose files jobs and validation may read."}
    )
    model_roots: tuple[Path, ...] = field(
        default=(),
        metadata={
            "help": "Directories whose model folders jobs may load, besides HOME/models and "
            "the Hugging Face cache."
        },
    )
    internal_token: str = field(
        default="",
        repr=False,
        metadata={
            "help": "Credential every call must present (the gateway does); '': the home's "
            "internal-token file, made at the first start. Required for non-loopback binds."
        },
    )
    max_running_jobs: int = field(default=1, metadata={"help": "Jobs training at once."})
    rank_slots: int = field(
        default=0,
        metadata={
            "help": "Ranks this trainer runs at once over all its jobs (a job takes one per "
            "rank, all claimed together or none); 0: no limit but --max-running-jobs."
        },
    )
    reserve_after_seconds: float = field(
        default=300.0,
        metadata={
            "help": "With --rank-slots: a job waiting this long for room is not passed by "
            "smaller ones; the trainer drains until it fits. 0: smaller jobs always pass."
        },
    )
    device: str = field(
        default="",
        metadata={
            "help": "The device this trainer's workers train on, cpu or gpu, advertised to "
            "the queue; '': MLX's default here (gpu on Apple silicon, else cpu)."
        },
    )
    memory_gib: float = field(
        default=0.0,
        metadata={"help": "Memory this trainer advertises to the queue; 0: the host's total."},
    )
    max_worker_restarts: int = field(
        default=3,
        metadata={"help": "Times a job's dead worker is started again from its checkpoint."},
    )
    restart_backoff_seconds: float = field(
        default=5.0,
        metadata={"help": "Wait before the first restart of a dead worker; doubles each time."},
    )
    heartbeat_seconds: float = field(
        default=2.0, metadata={"help": "How often the trainer renews the leases of its jobs."}
    )
    missed_heartbeats: int = field(
        default=5,
        metadata={
            "help": "Beats a trainer may miss before its jobs are re-queued for another trainer."
        },
    )
    trainer_id: str = field(
        default="", metadata={"help": "This trainer's name in leases; '': HOME/trainer-id."}
    )
    cancel_grace_seconds: float = field(
        default=30.0, metadata={"help": "How long a cancelled worker may take to checkpoint."}
    )
    shutdown_grace_seconds: float = field(
        default=30.0, metadata={"help": "How long workers may take to checkpoint on SIGTERM."}
    )
    max_upload_bytes: int = field(default=2 << 30, metadata={"help": "Largest dataset upload."})
    max_inline_bytes: int = field(
        default=4 << 20, metadata={"help": "Largest dataset sent inline to ValidateDataset."}
    )
    inference_memory_bytes: int = field(
        default=8 << 30,
        metadata={"help": "Memory the inference worker's resident models may use (LRU out)."},
    )
    inference_nice: int = field(
        default=10,
        metadata={"help": "Niceness of the inference worker: above 0, training keeps the CPU."},
    )
    python: str = field(default=sys.executable, metadata={"help": "Python that runs workers."})
    wandb_api_key: str = field(default="", repr=False, metadata={"help": "Enables online WandB."})
    webhook_allow_private_networks: bool = field(
        default=False,
        metadata={"help": "Let webhooks reach loopback, private and link-local addresses."},
    )
    # Retries of a webhook delivery: the first after this long, doubling up to the cap,
    # for as long as the window since the job ended (OpenAI retries for 72 hours).
    webhook_first_retry_seconds: float = 5.0
    webhook_max_retry_delay_seconds: float = 3600.0
    webhook_retry_window_seconds: float = 72 * 3600.0
    webhook_timeout_seconds: float = 10.0

    @property
    def db_path(self) -> Path:
        return self.home / "state.db"

    @property
    def lease_seconds(self) -> float:
        return self.heartbeat_seconds * self.missed_heartbeats

    @property
    def artifacts(self) -> Path:
        return self.artifact_root or self.home

    @property
    def jobs_dir(self) -> Path:
        return self.artifacts / "jobs"

    @property
    def datasets_dir(self) -> Path:
        return self.artifacts / "datasets"

    @property
    def adapters_dir(self) -> Path:
        """Uploaded adapters (UploadAdapter): `<id>/` each, `.incoming/` while arriving."""
        return self.artifacts / "adapters"

    @property
    def allowed_roots(self) -> Roots:
        """Roots for dataset paths: the flags, else the start directory; never the home
        (paths.py keeps it out unless a root lies inside it)."""
        roots = self.data_roots or (Path.cwd(),)
        return Roots(tuple(Path(r).resolve() for r in roots), state_dirs=self.state_dirs)

    @property
    def allowed_model_roots(self) -> Roots:
        """Roots for local model folders: HOME/models, the Hugging Face cache, the flags."""
        roots = (self.home / "models", huggingface_cache(), *self.model_roots)
        return Roots(
            tuple(Path(r).resolve() for r in roots), state_dirs=self.state_dirs, kind="model"
        )

    @property
    def state_dirs(self) -> tuple[Path, ...]:
        """What no client path may reach: the home, and the artifact root."""
        return tuple(dict.fromkeys((self.home.resolve(), self.artifacts.resolve())))

    @property
    def listen_address(self) -> str:
        """The address in gRPC's form (unix sockets as unix:ABSOLUTE_PATH)."""
        if self.listen == "unix":
            return str(addresses.trainer_socket(self.home))
        return self.listen


def parse_args(argv: list[str] | None = None) -> TrainerConfig:
    parser = argparse.ArgumentParser(
        prog="tunewire-trainer",
        description="tunewire's trainer daemon: runs fine-tuning jobs on MLX behind gRPC.",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="state directory (default $TUNEWIRE_HOME or ./.tunewire)",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("TUNEWIRE_TRAINER_LISTEN", addresses.DEFAULT_TRAINER),
        help="address to serve on: host:port, unix:PATH, or 'unix' (default %(default)s)",
    )
    parser.add_argument(
        "--data-root",
        action="append",
        type=Path,
        default=[],
        help="directory whose files may be used as datasets (repeatable; default: the current "
        "directory; the state directory only through a root inside it)",
    )
    parser.add_argument(
        "--model-root",
        action="append",
        type=Path,
        default=[],
        help="directory whose model folders jobs may load (repeatable; always allowed: "
        "HOME/models and the Hugging Face cache)",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get(DATABASE_ENV, ""),
        help="postgresql://user@host/db to share one database and queue with other trainers "
        f"(default ${DATABASE_ENV}, else SQLite in the home)",
    )
    parser.add_argument(
        "--artifact-root",
        type=Path,
        default=None,
        help="directory for datasets and jobs' files, shared by the trainers of one database "
        "(default: the home)",
    )
    parser.add_argument("--max-running-jobs", type=int, default=1)
    parser.add_argument(
        "--rank-slots",
        type=int,
        default=0,
        help="ranks this trainer runs at once over all its jobs; a job with N ranks takes N, "
        "claimed all at once or not at all (default 0: no limit but --max-running-jobs)",
    )
    parser.add_argument(
        "--reserve-after",
        type=float,
        default=300.0,
        help="with --rank-slots: a job that has waited this many seconds for room is no longer "
        "passed by smaller jobs; the trainer claims nothing behind it until it fits "
        "(default %(default)s; 0: smaller jobs always pass, a big job can starve)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="",
        help="the device this trainer's workers train on, advertised to the queue: it claims "
        "only jobs whose spec.resources.device it offers (default: gpu on Apple silicon, else cpu)",
    )
    parser.add_argument(
        "--memory-gib",
        type=float,
        default=0.0,
        help="memory (GiB) this trainer advertises to the queue: it claims only jobs whose "
        "spec.resources.min_memory_gib fits (default 0: the host's total, from /proc/meminfo)",
    )
    parser.add_argument(
        "--max-worker-restarts",
        type=int,
        default=3,
        help="times a job's dead worker starts again from its checkpoint (default %(default)s)",
    )
    parser.add_argument(
        "--restart-backoff",
        type=float,
        default=5.0,
        help="seconds before the first restart; doubles each time (default %(default)s)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=2.0,
        help="seconds between lease renewals (default %(default)s)",
    )
    parser.add_argument(
        "--missed-heartbeats",
        type=int,
        default=5,
        help="beats a trainer may miss before another takes its jobs (default %(default)s)",
    )
    parser.add_argument(
        "--cancel-grace",
        type=float,
        default=30.0,
        help="seconds a cancelled job may take to checkpoint",
    )
    parser.add_argument(
        "--inference-memory-mb",
        type=int,
        default=8192,
        help="memory the inference worker may keep models loaded in (default %(default)s)",
    )
    parser.add_argument(
        "--inference-nice",
        type=int,
        default=10,
        help="niceness of the inference worker, 0-19; training workers run at 0 (default %(default)s)",
    )
    parser.add_argument(
        "--webhook-allow-private-networks",
        action="store_true",
        help="let webhook endpoints be on loopback, private or link-local addresses "
        "(default: public addresses only, the trainer makes the requests)",
    )
    args = parser.parse_args(argv)
    if args.inference_memory_mb < 1:
        parser.error(f"--inference-memory-mb must be at least 1, got {args.inference_memory_mb}")
    if not 0 <= args.inference_nice <= 19:
        parser.error(f"--inference-nice must be between 0 and 19, got {args.inference_nice}")
    if args.heartbeat <= 0 or args.missed_heartbeats < 2:
        parser.error(
            f"--heartbeat must be above 0 and --missed-heartbeats at least 2, got "
            f"{args.heartbeat} and {args.missed_heartbeats}"
        )
    if args.max_running_jobs < 1:
        parser.error(f"--max-running-jobs must be at least 1, got {args.max_running_jobs}")
    if args.rank_slots < 0:
        parser.error(f"--rank-slots must be 0 (no limit) or more, got {args.rank_slots}")
    if not math.isfinite(args.reserve_after) or args.reserve_after < 0:
        parser.error(f"--reserve-after must be 0 or more seconds, got {args.reserve_after}")
    if not math.isfinite(args.memory_gib) or args.memory_gib < 0:
        parser.error(f"--memory-gib must be 0 (the host's total) or more, got {args.memory_gib}")
    if args.database and not db_url(args.database):
        parser.error(
            f"--database must be a postgresql:// URL (SQLite is the default), got {args.database[:40]!r}"
        )
    return TrainerConfig(
        home=(args.home or default_home()).resolve(),
        database=args.database,
        artifact_root=args.artifact_root.resolve() if args.artifact_root else None,
        listen=args.listen,
        data_roots=tuple(p.resolve() for p in args.data_root),
        model_roots=tuple(p.resolve() for p in args.model_root),
        internal_token=os.environ.get(INTERNAL_TOKEN_ENV, ""),
        max_running_jobs=args.max_running_jobs,
        rank_slots=args.rank_slots,
        reserve_after_seconds=args.reserve_after,
        device=args.device,
        memory_gib=args.memory_gib,
        max_worker_restarts=max(0, args.max_worker_restarts),
        restart_backoff_seconds=max(0.0, args.restart_backoff),
        heartbeat_seconds=args.heartbeat,
        missed_heartbeats=args.missed_heartbeats,
        cancel_grace_seconds=args.cancel_grace,
        inference_memory_bytes=args.inference_memory_mb << 20,
        inference_nice=args.inference_nice,
        wandb_api_key=os.environ.get("WANDB_API_KEY", ""),
        webhook_allow_private_networks=args.webhook_allow_private_networks,
    )
