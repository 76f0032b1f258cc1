"""The report as tunewire.v1 messages, every field filled."""

import json

import pytest
from google.protobuf import json_format

from tunewire.datasets.api import report_to_proto, validate_bytes
from tunewire.v1 import dataset_pb2 as dataset_pb

pytestmark = pytest.mark.timeout(60)


def test_the_report_converts_with_issues_counts_preview_and_statistics():
    data = "\n".join(
        [
            json.dumps(
                {
                    "conversations": [
                        {"from": "human", "value": "Hi?"},
                        {"from": "gpt", "value": "Hello."},
                    ],
                    "tools": [{"name": "lookup"}],
                }
            ),
            '{"conversations": [{"from": "human", "value": "Hi?"}, {"from": "bot", "value": "x"}]}',
            '{"conversations": [{"from": "human" "value": "Hi?"}]}',
            json.dumps(
                {
                    "conversations": [
                        {"from": "human", "value": "Hi?"},
                        {"from": "gpt", "value": "Yo"},
                    ]
                }
            ),
        ]
    ).encode()
    message = report_to_proto(validate_bytes(data))
    assert message.valid is False
    assert (
        message.format == dataset_pb.DATASET_FORMAT_SHAREGPT
        and message.layout == dataset_pb.FILE_LAYOUT_JSONL
    )
    assert (
        message.total_samples,
        message.valid_samples,
        message.error_count,
        message.warning_count,
    ) == (4, 2, 2, 1)
    unknown_role, invalid_json = message.errors
    assert (unknown_role.line, unknown_role.field, unknown_role.code, unknown_role.severity) == (
        2,
        "conversations[1].from",
        "UNKNOWN_ROLE",
        dataset_pb.ISSUE_SEVERITY_ERROR,
    )
    assert (invalid_json.line, invalid_json.column, invalid_json.code) == (3, 37, "INVALID_JSON")
    assert [(w.code, w.severity) for w in message.warnings] == [
        ("SHORT_OUTPUT", dataset_pb.ISSUE_SEVERITY_WARNING)
    ]
    assert [(c.code, c.count, c.severity) for c in message.issue_counts] == [
        ("INVALID_JSON", 1, dataset_pb.ISSUE_SEVERITY_ERROR),
        ("SHORT_OUTPUT", 1, dataset_pb.ISSUE_SEVERITY_WARNING),
        ("UNKNOWN_ROLE", 1, dataset_pb.ISSUE_SEVERITY_ERROR),
    ]
    first = message.sample_preview[0].conversation
    assert [(m.role, m.content, m.trainable) for m in first.messages] == [
        ("user", "Hi?", False),
        ("assistant", "Hello.", True),
    ]
    assert first.line == 1 and json.loads(first.tools_json) == [{"name": "lookup"}]
    assert message.sample_preview[1].conversation.tools_json == ""
    assert (
        message.statistics.records,
        message.statistics.turns,
        message.statistics.characters,
    ) == (2, 4, 14)
    assert message.size_bytes == len(data)
    # The JSON form clients see keeps false and zero values.
    as_json = json.loads(
        json_format.MessageToJson(message, always_print_fields_with_no_presence=True)
    )
    assert as_json["valid"] is False and as_json["errors"][0]["field"] == "conversations[1].from"
