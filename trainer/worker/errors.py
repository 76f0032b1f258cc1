"""Failures the worker understands: each becomes one `error` event, then exit code 1."""

from __future__ import annotations

from tunewire.trainer.protocol.events import FailureReason


class WorkerError(Exception):
    """`reason` is one of the protocol's failure reasons; `message` tells a person what to change."""

    def __init__(self, reason: FailureReason | str, message: str):
        super().__init__(message)
        self.reason = FailureReason(reason)
        self.message = message
