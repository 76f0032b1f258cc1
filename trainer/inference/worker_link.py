"""The daemon's side of the resident inference worker: starts it at the first
generation (and again if it died), sends it one generation at a time, and relays
its replies as they come.

The worker is the only process that keeps models loaded; the daemon itself
never imports mlx. Requests queue here (`_turn`): the worker generates for one
request at a time, so a second caller waits its turn rather than slowing the
first. A caller that goes away mid-generation cancels it; the next request waits
only until the worker has confirmed the cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from tunewire.errors import ServiceError
from tunewire.reasons import Reason
from tunewire.trainer.processes import blas
from tunewire.trainer.protocol import inference as proto
from tunewire.v1 import training_service_pb2 as training_service_pb

log = logging.getLogger(__name__)

MODULE = "tunewire.trainer.worker.inference"
START_TIMEOUT_SECONDS = 120.0
MAX_REPLY_LINE = 16 << 20
LOG_NAME = "inference.log"


class InferenceWorker:
    def __init__(self, python: str, home: Path, budget_bytes: int, nice: int):
        self._python = python
        self._log_path = Path(home) / LOG_NAME
        self._budget = budget_bytes
        self._nice = nice
        self._proc: asyncio.subprocess.Process | None = None
        self._replies: asyncio.Queue[proto.Reply | None] = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self._turn = asyncio.Lock()
        self._next_id = 0
        self.starts = 0
        self.report: proto.Report | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    async def _start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        env = blas.worker_env(dict(os.environ))
        env["HF_HUB_OFFLINE"] = "1"  # models are local paths; never wait on a hub
        with open(self._log_path, "ab") as log_file:
            self._proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                MODULE,
                "--memory-budget-bytes",
                str(self._budget),
                "--nice",
                str(self._nice),
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                limit=MAX_REPLY_LINE,
                start_new_session=True,  # a Ctrl-C meant for the daemon is not its
            )
        self.starts += 1
        self._replies = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(self._proc))
        try:
            first = await asyncio.wait_for(self._replies.get(), START_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            first = None
        if not isinstance(first, proto.Ready):
            await self.close()
            raise self._failure(f"the inference worker did not start (see {LOG_NAME})")
        self.report = first.report
        log.info("inference worker started (pid %s)", self._proc.pid)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                try:
                    await self._replies.put(proto.decode_reply(line))
                except proto.ProtocolError as exc:
                    log.warning("inference worker: %s", exc)
        finally:
            await self._replies.put(None)  # the worker is gone

    def _failure(self, message: str) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"generation failed: {message}",
            reason=Reason.GENERATION_FAILED,
        )

    async def generate(
        self, request: proto.Generate, timeout: float
    ) -> AsyncIterator[proto.Token | proto.Finished]:
        """The generation's pieces of text, then its `Finished` record."""
        await self._turn.acquire()
        handed_off = False
        call_id = 0
        try:
            if not self.running:
                await self._start()
            self._next_id += 1
            call = proto.Generate(**{**request.__dict__, "id": self._next_id})
            self._write(proto.encode(call))
            call_id = call.id
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    reply = await asyncio.wait_for(self._replies.get(), max(left, 0.001))
                except asyncio.TimeoutError:
                    handed_off = self._cancel_in_background(call.id)
                    raise ServiceError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"generation took longer than {timeout:g} s",
                        reason=Reason.GENERATION_TIMEOUT,
                    ) from None
                if reply is None:
                    code = await self._proc.wait() if self._proc else None
                    raise self._failure(
                        f"the inference worker exited (code {code}); see {LOG_NAME} in the "
                        "trainer's home. The next request starts it again"
                    )
                if isinstance(reply, (proto.Finished, proto.Failed)):
                    self.report = reply.report
                if isinstance(reply, proto.Failed) and reply.id == call.id:
                    if reply.over_budget:
                        raise ServiceError(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{reply.message}; raise --inference-memory-mb",
                            reason=Reason.OUT_OF_MEMORY,
                        )
                    raise self._failure(reply.message)
                if getattr(reply, "id", None) != call.id:
                    continue  # the end of an earlier, cancelled request
                if isinstance(reply, proto.Finished):
                    call_id, handed_off = 0, True  # this request is over: next turn
                    self._turn.release()
                yield reply
                if isinstance(reply, proto.Finished):
                    return
        except (asyncio.CancelledError, GeneratorExit):
            if self.running and call_id:
                handed_off = self._cancel_in_background(call_id)
            raise
        finally:
            if not handed_off:
                self._turn.release()

    def _write(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(data)

    def _cancel_in_background(self, call_id: int) -> bool:
        """Cancel `call_id`; the turn passes on once the worker has ended it."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._write(proto.encode(proto.Cancel(id=call_id)))

        async def drain() -> None:
            try:
                while True:
                    reply = await asyncio.wait_for(self._replies.get(), START_TIMEOUT_SECONDS)
                    if reply is None or (
                        isinstance(reply, (proto.Finished, proto.Failed)) and reply.id == call_id
                    ):
                        return
            except asyncio.TimeoutError:
                await self.close()  # a worker that ignores cancels is stopped
            finally:
                self._turn.release()

        task = asyncio.ensure_future(drain())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return True

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            if proc.stdin:
                proc.stdin.close()  # EOF: the worker exits
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)

    def info(self) -> training_service_pb.InferenceInfo:
        report = self.report
        info = training_service_pb.InferenceInfo(
            running=self.running, starts=self.starts, memory_budget_bytes=self._budget
        )
        if report is not None:
            info.model_loads = report.model_loads
            info.adapter_loads = report.adapter_loads
            info.evictions = report.evictions
            info.requests = report.requests
            info.nice = report.nice
            if self.running:
                info.models.extend(
                    training_service_pb.ResidentModel(
                        model=r.model, quantization_bits=r.quantization_bits, bytes=r.bytes
                    )
                    for r in report.resident
                )
        return info
