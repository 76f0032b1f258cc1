"""Server-sent event frames of a streamed RPC.

`id:` is the event's sequence (so `Last-Event-ID` resumes after it) and
`event:` its kind: the name of the oneof field set in the message that holds
the sequence (`state_change`, `training_metrics`, `evaluation_metrics`,
`checkpoint_saved`, `log` for a TrainingEvent). A browser listens with
`source.addEventListener('training_metrics', ...)`; a frame without a kind is
a plain `message`. A failed stream ends with an `error` frame.
"""

from __future__ import annotations

import json

from google.protobuf.message import Message

ERROR_EVENT = "error"


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_frame(message: Message, body: dict, sequence_path: tuple[str, ...] | None) -> bytes:
    lines = []
    if sequence_path:
        holder = message
        for name in sequence_path[:-1]:
            holder = getattr(holder, name)
        lines.append(f"id: {getattr(holder, sequence_path[-1])}")
        kind = next(
            (k for k in (holder.WhichOneof(o.name) for o in holder.DESCRIPTOR.oneofs) if k), None
        )
        if kind:
            lines.append(f"event: {kind}")
    lines.append(f"data: {dumps(body)}")
    return ("\n".join(lines) + "\n\n").encode()


def error_frame(status: dict) -> bytes:
    return f"event: {ERROR_EVENT}\ndata: {dumps(status)}\n\n".encode()
