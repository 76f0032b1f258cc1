"""Failures the worker understands: each becomes one "error" event, then exit code 1."""

from __future__ import annotations


class WorkerError(Exception):
    """`reason` is a stable UPPER_SNAKE code; `message` tells a person what to change."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
