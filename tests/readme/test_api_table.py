"""The README's API table says what the protos say: every RPC of the public
services with its `google.api.http` route, and which calls stream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.api import annotations_pb2

from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb

pytestmark = pytest.mark.timeout(30)

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(\w+)/(\w+)`(?: \(([^)]*)\))? \| `(GET|POST|PUT|PATCH|DELETE) ([^`]+)`")


def readme_rows() -> dict[str, tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("<!-- api-table -->") :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines():
        match = ROW.match(line)
        if match:
            service, method, note, verb, path = match.groups()
            rows[f"{service}/{method}"] = (f"{verb} {path}", note or "")
    return rows


def proto_routes() -> dict[str, tuple[str, str]]:
    routes = {}
    for module in (training_service_pb, dataset_service_pb, webhook_service_pb):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                kind = (
                    "client stream"
                    if method.client_streaming
                    else "stream"
                    if method.server_streaming
                    else ""
                )
                routes[f"{service.name}/{method.name}"] = (
                    f"{verb.upper()} {getattr(rule, verb)}",
                    kind,
                )
    return routes


def test_the_api_table_lists_every_rpc_with_its_annotated_route():
    rows, routes = readme_rows(), proto_routes()
    assert len(routes) >= 18  # the protos were read (more RPCs only add rows)
    assert {name: route for name, (route, _) in rows.items()} == {
        name: route for name, (route, _) in routes.items()
    }


def test_the_api_table_marks_the_streaming_calls():
    rows, routes = readme_rows(), proto_routes()
    for name, (_, kind) in routes.items():
        note = rows[name][1]
        assert (kind in note) if kind else ("stream" not in note), (
            f"{name}: README says {note!r}, proto says {kind!r}"
        )
