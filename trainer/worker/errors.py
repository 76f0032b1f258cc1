"""Failures the worker understands: each becomes one `error` event, then exit code 1."""

from __future__ import annotations

from tunewire.reasons import Reason


class WorkerError(Exception):
    """`reason` comes from the catalogue (tunewire.reasons); `message` tells a person what to
    change."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = Reason(reason)
        self.message = message
