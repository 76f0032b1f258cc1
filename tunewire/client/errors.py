"""The client's one exception: a gRPC error decoded from its google.rpc.Status.

Servers put the details (field violations, error reason, resource, retry
delay) in the `grpc-status-details-bin` trailer; `from_rpc_error` unpacks them
so callers read `err.violations` instead of parsing messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Codes after which a call may simply be made again (the watch reconnects on them).
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_CONNECT_FAILURES = (
    ("connection refused", "connection refused"),
    ("dns resolution failed", "unknown host"),
    ("name or service not known", "unknown host"),
    ("deadline exceeded", "timed out"),
    ("timeout", "timed out"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("socket closed", "connection closed"),
    ("connection reset", "connection reset"),
    ("failed to connect", "connection failed"),
)


@dataclass(frozen=True)
class Violation:
    """One bad field: its path in the request (`spec.lora.rank`) and what is wrong."""

    field: str
    description: str


@dataclass
class TunewireError(Exception):
    """A failed call. `code` is the gRPC status code; `violations` lists bad
    fields (INVALID_ARGUMENT); `retry_after` is the server's suggested delay in
    seconds; `address` is where the call went."""

    code: grpc.StatusCode
    message: str
    violations: list[Violation] = field(default_factory=list)
    reason: str = ""
    resource_type: str = ""
    resource_name: str = ""
    retry_after: float | None = None
    address: str = ""
    has_status: bool = False
    debug: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        lines = [f"{self.code.name}: {self.message}"]
        lines += [f"  {v.field}: {v.description}" for v in self.violations]
        return "\n".join(lines)

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    @property
    def unreachable(self) -> bool:
        """True when no server answered at all (as opposed to a server answering
        UNAVAILABLE, e.g. a gateway whose trainer is down, which sends a status)."""
        return self.code == grpc.StatusCode.UNAVAILABLE and not self.has_status

    @property
    def connection_problem(self) -> str:
        """Why the connection failed, in a few words ("connection refused")."""
        text = f"{self.message} {self.debug}".lower()
        for needle, words in _CONNECT_FAILURES:
            if needle in text:
                return words
        return "no answer"


def from_rpc_error(err: grpc.RpcError, address: str = "") -> TunewireError:
    """The TunewireError for a failed call, with every detail the server sent."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    message = err.details() if callable(getattr(err, "details", None)) else str(err)
    debug = err.debug_error_string() if callable(getattr(err, "debug_error_string", None)) else ""
    error = TunewireError(
        code, message or code.name.lower(), address=address, debug=_clean(debug or "")
    )
    try:
        status = rpc_status.from_call(err)
    except (ValueError, AttributeError):  # trailers that disagree with the code, or no call
        status = None
    if status is None:
        return error
    error.has_status = True
    error.code = _CODE_BY_NUMBER.get(status.code, code)
    error.message = status.message or error.message
    for detail in status.details:
        _unpack_detail(detail, error)
    return error


def _unpack_detail(detail, error: TunewireError) -> None:
    if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
        bad = error_details_pb2.BadRequest()
        detail.Unpack(bad)
        error.violations += [Violation(v.field, v.description) for v in bad.field_violations]
    elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
        info = error_details_pb2.ErrorInfo()
        detail.Unpack(info)
        error.reason = info.reason
    elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
        info = error_details_pb2.ResourceInfo()
        detail.Unpack(info)
        error.resource_type, error.resource_name = info.resource_type, info.resource_name
    elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
        info = error_details_pb2.RetryInfo()
        detail.Unpack(info)
        error.retry_after = info.retry_delay.seconds + info.retry_delay.nanos / 1e9


def _clean(debug: str) -> str:
    # grpc's debug strings repeat themselves in nested braces; one line is enough.
    return re.sub(r"\s+", " ", debug).strip()
