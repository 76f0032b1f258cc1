"""When a job's worker died, whether and when to start it again.

A worker that dies without saying why (killed, out of memory, crashed) while
a checkpoint of its job is on disk is started again from that checkpoint, at
most `max_worker_restarts` times, waiting `restart_backoff_seconds` before the
first attempt and twice as long before each next one. The job waits in the
queue meanwhile (ahead of newer jobs); only then, or with no checkpoint, does
it fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.jobs import checkpoints, failures
from tunewire.trainer.processes import supervisor
from tunewire.trainer.protocol import events as protocol
from tunewire.v1 import training_job_pb2 as training_job_pb


@dataclass(frozen=True)
class Plan:
    attempt: int  # 1 for the first restart
    delay: float  # seconds before the worker starts again
    reason: str  # the state change's reason: what happened and what comes next


class RestartPolicy:
    def __init__(self, config: TrainerConfig):
        self._config = config
        self._not_before: dict[str, float] = {}  # job id -> loop time it may start again
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task] = set()
        self._stopped = False

    def plan(
        self,
        job: training_job_pb.TrainingJob,
        error: protocol.Error | None,
        result: supervisor.GroupExit,
    ) -> Plan | None:
        if self._stopped or not failures.is_crash(error, result):
            return None
        if job.restart_count >= self._config.max_worker_restarts:
            return None
        newest = checkpoints.candidates(self._config.jobs_dir / job.id)
        if not newest:
            return None
        attempt = job.restart_count + 1
        delay = self._config.restart_backoff_seconds * 2 ** (attempt - 1)
        reason = (
            f"{failures.crash_summary(result)}; restarting from its checkpoint at step "
            f"{int(newest[0].name)} in {delay:g} s (attempt {attempt} of "
            f"{self._config.max_worker_restarts})"
        )
        return Plan(attempt, delay, reason)

    def hold(self, job_id: str, delay: float, schedule: Callable[[], Awaitable[None]]) -> None:
        """Keeps the job from starting for `delay` seconds, then runs `schedule`."""
        loop = asyncio.get_running_loop()
        self._not_before[job_id] = loop.time() + delay
        self._timers.append(loop.call_later(delay, self._wake, schedule))

    def _wake(self, schedule: Callable[[], Awaitable[None]]) -> None:
        if self._stopped:
            return
        task = asyncio.ensure_future(schedule())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def ready(self, queued: list[str]) -> list[str]:
        """The queued jobs that may start now, in queue order."""
        now = asyncio.get_running_loop().time()
        out = [job_id for job_id in queued if self._not_before.get(job_id, 0.0) <= now]
        if out:
            self._not_before.pop(out[0], None)
        return out

    def waiting(self) -> set[str]:
        """The jobs held back now (a claim passes over them)."""
        now = asyncio.get_running_loop().time()
        for job_id in [j for j, t in self._not_before.items() if t <= now]:
            del self._not_before[job_id]
        return set(self._not_before)

    def stop(self) -> None:
        self._stopped = True
        for timer in self._timers:
            timer.cancel()
