"""Starts a job's worker processes and relays what they say.

A job runs as one worker process per rank. Rank 0 writes the protocol's
events (`tunewire.trainer.protocol.events`) to a pipe we read and decode here;
every rank's stdout/stderr goes to a log file in the job directory; commands
go to each rank's stdin. When the daemon dies, the workers see EOF on stdin
and exit, so no orphan keeps writing into the job directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunewire.reasons import Reason
from tunewire.trainer.processes import launch
from tunewire.trainer.protocol import commands
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.commands import Command

log = logging.getLogger(__name__)

EventHandler = Callable[[protocol.Event], Awaitable[None]]
LOG_TAIL_LINES = 20
MAX_EVENT_LINE = 16 << 20


@dataclass
class RankCommand:
    argv: list[str]
    env: dict[str, str]
    log_path: Path


@dataclass
class GroupExit:
    """How a worker group ended: rank 0's code, and the first failing rank if any."""

    returncode: int
    ranks: int = 1
    failed_rank: int | None = None
    failed_code: int | None = None
    log_tail: str = ""
    killed: bool = False


@dataclass
class WorkerGroup:
    job_id: str
    processes: list[asyncio.subprocess.Process]
    commands: list[RankCommand]
    reader_task: asyncio.Task | None = None
    killed: bool = False
    # The rank that failed first, and how; ranks we kill because of it come after.
    first_failure: tuple[int, int] | None = None
    _exit: asyncio.Future | None = field(default=None, repr=False)

    async def send(self, command: Command) -> None:
        """Sends a control command to every rank; a rank that is gone is skipped."""
        line = commands.encode(command)
        for proc in self.processes:
            if proc.returncode is None and proc.stdin is not None:
                try:
                    proc.stdin.write(line)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass

    def kill(self) -> None:
        self.killed = True
        for proc in self.processes:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    try:
                        proc.kill()
                    except ProcessLookupError:
                        pass

    async def wait(self) -> GroupExit:
        assert self._exit is not None
        return await asyncio.shield(self._exit)


async def start_group(
    job_id: str, cwd: Path, commands: list[RankCommand], on_event: EventHandler
) -> WorkerGroup:
    """Starts every rank; rank 0 gets the events pipe. Returns at once."""
    read_fd, write_fd = os.pipe()
    processes: list[asyncio.subprocess.Process] = []
    try:
        for rank, cmd in enumerate(commands):
            argv = list(cmd.argv)
            pass_fds: tuple[int, ...] = ()
            if rank == 0:
                argv = launch.with_events_fd(argv, write_fd)
                pass_fds = (write_fd,)
            cmd.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(cmd.log_path, "ab") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=str(cwd),
                    env=cmd.env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    pass_fds=pass_fds,
                    # Own process group: a Ctrl-C meant for the daemon must not hit
                    # workers mid-step; the daemon stops them with a command.
                    start_new_session=True,
                )
            processes.append(proc)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        for proc in processes:
            proc.kill()
        raise
    os.close(write_fd)
    group = WorkerGroup(job_id=job_id, processes=processes, commands=commands)
    loop = asyncio.get_running_loop()
    group._exit = loop.create_future()
    group.reader_task = asyncio.create_task(_supervise(group, read_fd, on_event))
    return group


async def _supervise(group: WorkerGroup, read_fd: int, on_event: EventHandler) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_EVENT_LINE, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
    )
    watchers = [
        asyncio.create_task(_watch_rank(group, rank)) for rank in range(1, len(group.processes))
    ]
    decoder = protocol.Reader()
    try:
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                log.warning("job %s: dropped an oversized event line", group.job_id)
                continue
            if not line:
                break
            try:
                event = decoder.feed(line)
            except protocol.ProtocolMismatch as exc:
                # Nothing this worker says can be read: fail the job, naming both versions.
                log.error("job %s: %s", group.job_id, exc)
                group.kill()
                mismatch = protocol.Error(reason=Reason.PROTOCOL_MISMATCH, message=str(exc))
                await _deliver(group, on_event, mismatch)
                break
            except protocol.ProtocolError as exc:
                log.warning("job %s: %s", group.job_id, exc)
                continue
            if event is not None:
                await _deliver(group, on_event, event)
        code = await group.processes[0].wait()
        # Rank 0 is gone; other ranks cannot make progress without it.
        for proc in group.processes[1:]:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), timeout=10)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
        result = GroupExit(returncode=code, ranks=len(group.processes), killed=group.killed)
        failures = [
            (rank, p.returncode)
            for rank, p in enumerate(group.processes)
            if p.returncode not in (0, None)
        ]
        # A rank that died on its own outranks rank 0 failing because it lost
        # that peer: prefer the recorded first failure, then any other rank.
        others = [f for f in failures if f[0] != 0]
        first = group.first_failure or (others[0] if others else failures[0] if failures else None)
        if first is not None:
            result.failed_rank, result.failed_code = first
            result.log_tail = log_tail(group.commands[first[0]].log_path)
        group._exit.set_result(result)
    except BaseException as exc:
        if not group._exit.done():
            group._exit.set_exception(exc)
        raise
    finally:
        transport.close()
        for w in watchers:
            w.cancel()


async def _deliver(group: WorkerGroup, on_event: EventHandler, event: protocol.Event) -> None:
    try:
        await on_event(event)
    except Exception:
        log.exception("job %s: handling worker event failed", group.job_id)


async def _watch_rank(group: WorkerGroup, rank: int) -> None:
    """A rank other than 0 that dies takes the whole group down (no hung all-reduce)."""
    code = await group.processes[rank].wait()
    if code != 0 and not group.killed:
        if group.first_failure is None:
            group.first_failure = (rank, code)
        log.warning(
            "job %s: rank %d exited with %d; stopping the other ranks", group.job_id, rank, code
        )
        for proc in group.processes:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            tail = deque(f.read().decode("utf-8", "replace").splitlines(), maxlen=lines)
    except OSError:
        return ""
    return "\n".join(tail)
