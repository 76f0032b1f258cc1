"""The trainer's side of the shared queue, once per heartbeat.

Renews the leases of the jobs this trainer runs (and stops any it no longer
holds), passes on cancel and pause requests that reached another trainer, takes back
the jobs of trainers whose leases ran out, and claims queued work. Between
beats, a LISTEN/NOTIFY wake-up (a job was queued) claims at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from pathlib import Path

from tunewire.trainer.jobs.runner import JobRunner
from tunewire.trainer.store.leases import LeaseStore
from tunewire.v1 import training_job_pb2 as training_job_pb

log = logging.getLogger(__name__)

TRAINER_ID_FILE = "trainer-id"
# How often (in beats) a trainer re-judges whether queued jobs have a trainer that can run them.
REVIEW_EVERY_BEATS = 5


def trainer_id(home: Path, configured: str = "") -> str:
    """This trainer's name in leases: configured, else kept in the home (the same
    across restarts, so a restarted trainer knows its own jobs)."""
    if configured:
        return configured
    path = home / TRAINER_ID_FILE
    if not path.exists():
        name = f"{socket.gethostname()}-{secrets.token_hex(4)}"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(name + "\n")
        try:
            os.link(tmp, path)  # of two trainers starting at once, one name wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


class LeaseKeeper:
    def __init__(
        self, runner: JobRunner, leases: LeaseStore, interval: float, address: str
    ) -> None:
        self._runner = runner
        self._leases = leases
        self._interval = interval
        self._address = address
        self._wake = asyncio.Event()
        self._beats = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        """Claim now rather than at the next beat (a job was queued somewhere)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat failed; retrying at the next beat")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except asyncio.TimeoutError:
                continue
            self._wake.clear()

    async def beat(self) -> None:
        runner = self._runner
        held = {
            h.job_id: h for h in self._leases.renew(runner.trainer_id, self._address, runner.offer)
        }
        for job_id in runner.running_ids:
            if job_id not in held:
                log.warning("job %s: this trainer's lease on it is gone; stopping it", job_id)
                runner.lost(job_id)
        for h in held.values():
            if h.state == training_job_pb.JOB_STATE_CANCELLING:
                await runner.cancel_requested_elsewhere(h.job_id)
            elif h.pause_requested_by:
                await runner.pause_requested_elsewhere(h.job_id, h.pause_requested_by)
        for expired in self._leases.expired():
            if expired.lease.owner != runner.trainer_id:
                log.warning(
                    "job %s: trainer %s stopped heartbeating; re-queueing the job",
                    expired.lease.job_id,
                    expired.lease.owner,
                )
                runner.take_back(expired)
        await runner.schedule()
        self._beats += 1
        if runner.shared and self._beats % REVIEW_EVERY_BEATS == 0:
            runner.review_waiting()
