"""What the daemon tells a worker: one command per line on the worker's stdin.

    cancel   finish the current step, checkpoint, save the artifacts, report `cancelled`
    stop     finish the current step, checkpoint, report `interrupted` (the job resumes later)

EOF on stdin means the daemon is gone: the worker exits at once.
This module must not import mlx: the daemon uses it.
"""

from __future__ import annotations

import enum

from tunewire.trainer.protocol import codec
from tunewire.trainer.protocol.events import ProtocolError


class Command(str, enum.Enum):
    CANCEL = "cancel"
    STOP = "stop"


def encode(command: Command) -> bytes:
    return (codec.dumps({"command": command.value}) + "\n").encode()


def decode(line: str | bytes) -> Command:
    """The command on `line`; ProtocolError for anything else."""
    try:
        data = codec.loads(line)
    except codec.DecodeError:
        data = None
    name = data.get("command") if isinstance(data, dict) else None
    try:
        return Command(name)
    except ValueError:
        raise ProtocolError(
            f"not a command line: {line!r} (commands: {', '.join(c.value for c in Command)})"
        ) from None
