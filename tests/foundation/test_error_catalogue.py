"""The reason catalogue: one Python owner (tunewire.reasons), documented in the proto,
and the one google.rpc.Status builder every transport uses."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from google.rpc import code_pb2, error_details_pb2

from tunewire.errors import ERROR_DOMAIN, FieldViolation, ServiceError, build_status
from tunewire.reasons import Reason
from tunewire.v1 import errors_pb2 as errors_pb

ERRORS_PROTO = Path(__file__).resolve().parents[2] / "protos" / "tunewire" / "v1" / "errors.proto"


def details(status) -> dict[str, object]:
    found = {}
    for any_ in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
        ):
            if any_.Is(kind.DESCRIPTOR):
                message = kind()
                any_.Unpack(message)
                found[kind.__name__] = message
    return found


def test_the_python_catalogue_and_the_proto_enum_name_the_same_reasons():
    proto_names = [n for n in errors_pb.ErrorReason.keys() if n != "ERROR_REASON_UNSPECIFIED"]
    assert [r.value for r in Reason] == proto_names  # same names, same order
    assert all(r.name == r.value for r in Reason)


def comment_above(lines: list[str], name: str) -> str:
    """The `//` lines right above the enum value `name` (none between: '')."""
    index = next(i for i, line in enumerate(lines) if re.match(rf"\s*{name} = \d+;", line))
    comment: list[str] = []
    while index > 0 and lines[index - 1].strip().startswith("//"):
        index -= 1
        comment.insert(0, lines[index].strip().removeprefix("//").strip())
    return " ".join(comment)


def test_every_reason_is_documented_in_the_proto_with_its_code():
    lines = ERRORS_PROTO.read_text().splitlines()
    codes = set(code_pb2.Code.keys())
    for reason in Reason:
        comment = comment_above(lines, reason.value)
        assert len(comment) > 20, f"{reason.value} is not documented in {ERRORS_PROTO.name}"
        code = re.match(r"[A-Z_]+", comment)
        assert code and code.group() in codes, f"{reason.value}: say its gRPC code first"


def test_the_status_builder_always_sets_the_domain_and_reason():
    status = build_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", Reason.RATE_LIMITED)
    info = details(status)["ErrorInfo"]
    assert status.code == code_pb2.RESOURCE_EXHAUSTED and status.message == "slow down"
    assert (info.domain, info.reason) == (ERROR_DOMAIN, "RATE_LIMITED")
    # google.rpc.Code numbers work as well as grpc.StatusCode.
    assert build_status(code_pb2.INTERNAL, "x", Reason.WORKER_CRASHED).code == code_pb2.INTERNAL


def test_a_service_error_becomes_a_status_with_every_detail():
    error = ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad rank",
        Reason.INVALID_ARGUMENT,
        violations=[FieldViolation("spec.lora.rank", "must be at least 1, got 0")],
        resource_type="job",
        resource_name="j1",
        retry_after_seconds=1.5,
        metadata={"limit": "1"},
    )
    found = details(error.to_status())
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT" and found["ErrorInfo"].metadata == {
        "limit": "1"
    }
    assert found["BadRequest"].field_violations[0].field == "spec.lora.rank"
    assert found["ResourceInfo"].resource_name == "j1"
    delay = found["RetryInfo"].retry_delay
    assert (delay.seconds, delay.nanos) == (1, 500_000_000)


def reason_literals(root: Path) -> list[str]:
    """Every string constant in the production code (outside the catalogue) that spells a
    catalogue reason: code must name `Reason.X`, so a renamed or removed reason fails at
    import instead of drifting silently."""
    import ast

    names = {r.value for r in Reason}
    found = []
    for folder in ("trainer", "gateway", "tunewire", "datasets"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.name == "reasons.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return found


def test_code_names_reasons_through_the_catalogue_never_as_bare_strings():
    root = ERRORS_PROTO.parents[3]
    assert reason_literals(root) == []
