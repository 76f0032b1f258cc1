"""What a worker tells the daemon: one typed record per event kind, and the wire they travel on.

The worker writes one JSON object per line to its events pipe (`trainer/worker/events.py`);
the daemon reads them (`trainer/processes/supervisor.py`) and turns them into job changes
(`trainer/jobs/worker_events.py`). The first line is a header with the protocol version;
a reader that meets another version (or no header) stops with `ProtocolMismatch`, which
names both versions. Every later line is `{"kind": ..., "time": ..., <the record's fields>}`.

    setup        the model and data are ready: steps, adapter, dataset counts, the config it runs
    state        the worker moved to STARTING or RUNNING
    metrics      training metrics of one report interval
    evaluation   one pass over the validation data
    checkpoint   a checkpoint was written
    log          a line for the job's watchers
    done         the worker finished (its outcome and artifacts); exit code 0 follows
    error        a failure a user can act on (its reason and message); exit code 1 follows

This module must not import mlx: the daemon uses it.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from tunewire.reasons import Reason
from tunewire.trainer.protocol import codec
from tunewire.trainer.protocol.codec import PROTOCOL_VERSION, DecodeError
from tunewire.trainer.protocol.config import WorkerConfig

HEADER_KEY = "tunewire_worker_protocol"


class ProtocolError(ValueError):
    """A line that is not a well-formed event."""


class ProtocolMismatch(ProtocolError):
    """The two sides speak different versions: nothing after the header can be trusted."""


class WorkerState(str, enum.Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"


class Outcome(str, enum.Enum):
    """How a worker that finished normally ended (the `done` record)."""

    SUCCEEDED = "succeeded"
    EARLY_STOPPED = "early_stopped"  # validation loss stopped improving; a success
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # asked to stop (daemon shutdown): the job resumes later


class LogLevel(str, enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _now() -> float:
    return time.time()


@dataclass(frozen=True, kw_only=True)
class LoraDetails:
    """The adapter as built: rank 0 and no modules for FULL."""

    rank: int
    alpha: float
    scale: float
    dropout: float
    target_modules: list[str]
    num_layers: int
    trainable_parameters: int
    total_parameters: int
    trainable_percent: float


@dataclass(frozen=True, kw_only=True)
class DatasetCounts:
    train_records: int
    validation_records: int
    train_tokens: int


@dataclass(frozen=True, kw_only=True)
class Setup:
    kind: ClassVar[str] = "setup"
    total_steps: int
    total_epochs: float
    lora_details: LoraDetails
    dataset_details: DatasetCounts
    resumed_from_step: int
    world_size: int
    config: WorkerConfig  # what the worker runs with, as it read it
    time: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class State:
    kind: ClassVar[str] = "state"
    state: WorkerState
    reason: str
    time: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class PreferenceMetrics:
    """What tells whether DPO or ORPO works: means over the pairs of an interval or evaluation."""

    # beta × (policy - reference) log-prob of the chosen reply (ORPO: lambda × mean log-prob)
    chosen_reward: float
    rejected_reward: float
    reward_margin: float  # chosen_reward - rejected_reward
    reward_accuracy: float  # share of pairs whose chosen reward is above the rejected one
    chosen_logps: float  # the policy's summed log-prob of the chosen reply
    rejected_logps: float
    pairs: int


@dataclass(frozen=True, kw_only=True)
class Metrics:
    kind: ClassVar[str] = "metrics"
    step: int
    epoch: float
    loss: float
    learning_rate: float
    tokens_per_second: float
    iterations_per_second: float
    trained_tokens: int
    peak_memory_bytes: int
    rss_bytes: int
    all_reduce_seconds_per_step: float
    preference: PreferenceMetrics | None = None  # DPO and ORPO jobs
    trained_token_share: float = 0.0  # trained targets / computed positions, padding included
    time: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    kind: ClassVar[str] = "evaluation"
    step: int
    validation_loss: float
    perplexity: float
    seconds: float
    preference: PreferenceMetrics | None = None  # DPO and ORPO jobs
    time: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str
    train_loss: float | None  # None only before the first report of a run
    validation_loss: float | None  # None unless an evaluation ran at this step
    best: bool
    size_bytes: int
    removed: list[str]  # checkpoints pruned (keep_last) after this one was written
    time: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class Log:
    kind: ClassVar[str] = "log"
    level: LogLevel
    message: str
    rank: int = 0
    time: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class Artifacts:
    adapter_path: str | None
    model_path: str | None
    wandb_dir: str | None


@dataclass(frozen=True, kw_only=True)
class Done:
    kind: ClassVar[str] = "done"
    outcome: Outcome
    step: int
    artifacts: Artifacts
    best_checkpoint_step: int  # 0 when no evaluation ran
    time: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class Error:
    kind: ClassVar[str] = "error"
    reason: Reason  # from the catalogue (tunewire.reasons): the job's error carries it
    message: str
    time: float = field(default_factory=_now)


Event: TypeAlias = Setup | State | Metrics | Evaluation | Checkpoint | Log | Done | Error
KINDS: dict[str, type[Event]] = {
    cls.kind: cls for cls in (Setup, State, Metrics, Evaluation, Checkpoint, Log, Done, Error)
}


def header_line() -> bytes:
    """The first line a worker writes: the version of the protocol it speaks."""
    return (codec.dumps({HEADER_KEY: PROTOCOL_VERSION}) + "\n").encode()


def encode(event: Event) -> bytes:
    """One event as its line (with the newline)."""
    return (codec.dumps({"kind": event.kind, **codec.encode(event)}) + "\n").encode()


def to_dict(event: Event) -> dict[str, object]:
    """The event as plain values, `kind` first (logs, tests, benchmarks)."""
    return {"kind": event.kind, **codec.encode(event)}


def decode(line: str | bytes) -> Event:
    """One event line (not the header) as its record; ProtocolError says what is wrong."""
    try:
        data = codec.loads(line)
        if not isinstance(data, dict):
            raise DecodeError("an event must be a JSON object")
        kind = data.pop("kind", None)
        cls = KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise DecodeError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        return codec.decode(cls, data, f"{kind}.")
    except DecodeError as exc:
        raise ProtocolError(f"bad worker event: {exc}") from None


def check_header(line: str | bytes) -> None:
    """Raises ProtocolMismatch unless `line` is the header of this protocol version."""
    try:
        data = codec.loads(line)
    except DecodeError:
        data = None
    version = data.get(HEADER_KEY) if isinstance(data, dict) else None
    if version is None:
        raise ProtocolMismatch(
            f"the worker did not announce a protocol version (this trainer speaks version "
            f"{PROTOCOL_VERSION}); its first line was {bytes_text(line)[:120]!r}"
        )
    if version != PROTOCOL_VERSION:
        raise ProtocolMismatch(
            f"the worker speaks protocol version {version}, this trainer speaks version "
            f"{PROTOCOL_VERSION}: run trainer and worker from the same tunewire installation"
        )


class Reader:
    """Decodes a stream of lines: the header first, then events."""

    def __init__(self) -> None:
        self._header_seen = False

    def feed(self, line: str | bytes) -> Event | None:
        """The event on `line`, or None for the header. ProtocolMismatch for a wrong header."""
        if not self._header_seen:
            check_header(line)
            self._header_seen = True
            return None
        return decode(line)


def bytes_text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
