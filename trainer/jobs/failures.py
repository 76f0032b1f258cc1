"""Why a job failed, as the one-line `google.rpc.Status` its owner sees.

A client never gets a traceback or the worker's log in `error.message`: the
message is one line that says what happened and where to read more (the job's
log, through `GetTrainingJobLog`), and the log itself stays on the server.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass

from google.rpc import code_pb2, status_pb2

from tunewire.errors import build_status
from tunewire.reasons import Reason
from tunewire.trainer.processes import supervisor
from tunewire.trainer.protocol import events as protocol

MAX_MESSAGE = 300
SEE_LOG = "its log has the details (`tunewire logs JOB`, or GET /v1/jobs/JOB/log)"

# The gRPC code a worker's failure reason is reported with (FAILED_PRECONDITION otherwise).
_CODES = {
    Reason.PROTOCOL_MISMATCH: code_pb2.INTERNAL,
    Reason.NO_SPACE: code_pb2.RESOURCE_EXHAUSTED,
    Reason.OUT_OF_MEMORY: code_pb2.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True)
class Divergence:
    step: int
    what: str  # "training loss" or "validation loss"
    value: float


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """The first non-empty line of a message, cut at `limit` characters."""
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def divergence(event: protocol.Event) -> Divergence | None:
    """A NaN or infinite loss in a worker's report; training past it only makes noise."""
    if isinstance(event, protocol.Metrics) and not math.isfinite(event.loss):
        return Divergence(event.step, "training loss", event.loss)
    if isinstance(event, protocol.Evaluation) and not math.isfinite(event.validation_loss):
        return Divergence(event.step, "validation loss", event.validation_loss)
    return None


def diverged_status(d: Divergence) -> status_pb2.Status:
    return build_status(
        code_pb2.FAILED_PRECONDITION,
        f"training diverged: the {d.what} became {d.value} at step {d.step}; lower the "
        "learning rate (or check the data) and start again",
        Reason.DIVERGED,
        metadata={"step": str(d.step)},
    )


def worker_failure(error: protocol.Error | None, result: supervisor.GroupExit) -> status_pb2.Status:
    """The status of a job whose workers ended without finishing it."""
    peer_lost = error is not None and error.reason is Reason.DISTRIBUTED_PEER_LOST
    if error is not None and not (peer_lost and result.failed_rank not in (None, 0)):
        message = one_line(error.message) or "the worker reported an error"
        return build_status(
            _CODES.get(error.reason, code_pb2.FAILED_PRECONDITION), message, error.reason
        )
    if result.failed_rank is not None:
        return build_status(
            code_pb2.INTERNAL,
            f"{crash_summary(result)}; {SEE_LOG}",
            Reason.WORKER_CRASHED,
            metadata={"rank": str(result.failed_rank)},
        )
    return build_status(
        code_pb2.INTERNAL,
        f"the worker exited without finishing the job; {SEE_LOG}",
        Reason.WORKER_CRASHED,
    )


def is_crash(error: protocol.Error | None, result: supervisor.GroupExit) -> bool:
    """A worker that died (killed, out of memory, crashed) without saying why:
    the kind of end a restart from its last checkpoint may get past."""
    return error is None and result.failed_rank is not None


def crash_summary(result: supervisor.GroupExit) -> str:
    code = result.failed_code or 0
    how = (
        f"was killed by signal {-code} ({signal_name(-code)})"
        if code < 0
        else f"exited with code {code}"
    )
    who = "the worker" if result.ranks == 1 else f"rank {result.failed_rank}"
    return f"{who} {how}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
