"""A job's event stream that survives dropped connections.

The server numbers every event of a job (1, 2, 3, ... with no gaps) and
replays what a subscriber missed when it comes back with `after_sequence`.
So a broken stream is reopened with the last sequence seen, and events at or
below it are skipped: the caller sees each event exactly once, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from tunewire.client.errors import TunewireError, from_rpc_error
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

# Codes after which the stream is reopened: the server went away or restarted
# (UNAVAILABLE, CANCELLED), dropped a slow subscriber or rate-limited us
# (RESOURCE_EXHAUSTED), or aborted the call (ABORTED).
RECONNECT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)
TERMINAL_STATES = frozenset(
    {
        training_job_pb.JOB_STATE_SUCCEEDED,
        training_job_pb.JOB_STATE_FAILED,
        training_job_pb.JOB_STATE_CANCELLED,
    }
)
FIRST_DELAY, MAX_DELAY = 0.2, 2.0


def is_terminal(event: training_event_pb.TrainingEvent) -> bool:
    return (
        event.WhichOneof("payload") == "state_change"
        and event.state_change.state in TERMINAL_STATES
    )


def watch_events(
    open_stream: Callable[[int], object],
    after_sequence: int,
    *,
    address: str,
    job_finished: Callable[[], bool],
    reconnect: bool = True,
    give_up_after: float = 120.0,
    on_reconnect: Callable[[TunewireError, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[training_event_pb.TrainingEvent]:
    """Yields events after `after_sequence` until the terminal one.

    open_stream(after) starts a WatchTrainingJob call; job_finished() tells
    whether a stream that ended without a terminal event ended because the job
    had finished before `after` (nothing left to send) or because it was cut.
    """
    last = after_sequence
    failing_since: float | None = None
    delay = FIRST_DELAY
    while True:
        call = open_stream(last)
        received = False
        try:
            for reply in call:
                event = reply.event
                if event.sequence <= last:
                    continue  # seen before the reconnect
                last, received = event.sequence, True
                failing_since, delay = None, FIRST_DELAY
                yield event
                if is_terminal(event):
                    return
            if not received and job_finished():
                return
            error = TunewireError(
                grpc.StatusCode.UNAVAILABLE,
                "the event stream ended before the job did",
                address=address,
            )
        except grpc.RpcError as err:
            error = from_rpc_error(err, address)
            if error.code not in RECONNECT_CODES:
                raise error from None
        finally:
            call.cancel()
        if not reconnect:
            raise error
        now = time.monotonic()
        failing_since = failing_since or now
        if now - failing_since > give_up_after:
            raise error
        if on_reconnect is not None:
            on_reconnect(error, last)
        sleep(max(delay, error.retry_after or 0.0))
        delay = min(delay * 2, MAX_DELAY)
