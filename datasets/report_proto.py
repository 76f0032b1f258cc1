"""Conversions between the library's report types and the `tunewire.v1` dataset messages.

The only module of the library that imports protobuf (generated code, no
grpc); reached through api.py, which loads it on first use. Request options
are converted by the trainer (trainer/datasets/options.py), which knows the
service's limits.
"""

from __future__ import annotations

import json

from tunewire.datasets.issues import Issue, Severity, severity_of
from tunewire.datasets.report import DatasetFormat, RecordPreview, Statistics, ValidationReport
from tunewire.datasets.source import Layout
from tunewire.v1 import dataset_pb2 as dataset_pb

# The proto's enum values carry the library's names: DatasetFormat.ALPACA is DATASET_FORMAT_ALPACA.
FORMATS = {
    None: dataset_pb.DATASET_FORMAT_UNSPECIFIED,
    **{
        found: dataset_pb.DatasetFormat.Value(f"DATASET_FORMAT_{found.name}")
        for found in DatasetFormat
    },
}
LAYOUTS = {
    None: dataset_pb.FILE_LAYOUT_UNSPECIFIED,
    Layout.JSON_ARRAY: dataset_pb.FILE_LAYOUT_JSON_ARRAY,
    Layout.JSONL: dataset_pb.FILE_LAYOUT_JSONL,
}
SEVERITIES = {
    Severity.ERROR: dataset_pb.ISSUE_SEVERITY_ERROR,
    Severity.WARNING: dataset_pb.ISSUE_SEVERITY_WARNING,
}


def issue_to_proto(issue: Issue) -> dataset_pb.DatasetIssue:
    return dataset_pb.DatasetIssue(
        line=issue.line,
        column=issue.column,
        field=issue.field,
        code=issue.code,
        message=issue.message,
        severity=SEVERITIES[issue.severity],
    )


def conversation_to_proto(record: dict) -> dataset_pb.CanonicalConversation:
    """A canonical record (as written by normalize_file) as a CanonicalConversation."""
    tools = record.get("tools")
    rejected = record.get("rejected")
    return dataset_pb.CanonicalConversation(
        rejected=dataset_pb.CanonicalMessage(
            role=rejected["role"], content=rejected["content"], trainable=True
        )
        if rejected
        else None,
        messages=[
            dataset_pb.CanonicalMessage(
                role=m["role"], content=m["content"], trainable=bool(m.get("trainable"))
            )
            for m in record["messages"]
        ],
        line=record.get("line", 0),
        tools_json=json.dumps(tools) if tools else "",
    )


def preview_to_proto(preview: RecordPreview) -> dataset_pb.RecordPreview:
    return dataset_pb.RecordPreview(
        conversation=conversation_to_proto(preview.conversation),
        rendered=preview.rendered,
        tokens=preview.tokens,
        trained_tokens=preview.trained_tokens,
    )


def statistics_to_proto(statistics: Statistics) -> dataset_pb.DatasetStatistics:
    return dataset_pb.DatasetStatistics(
        records=statistics.records,
        turns=statistics.turns,
        characters=statistics.characters,
        tokens=statistics.tokens,
        train_records=statistics.train_records,
        validation_records=statistics.validation_records,
    )


def report_to_proto(report: ValidationReport) -> dataset_pb.ValidationReport:
    return dataset_pb.ValidationReport(
        valid=report.valid,
        format=FORMATS[report.format],
        layout=LAYOUTS[report.layout],
        total_samples=report.total_samples,
        valid_samples=report.valid_samples,
        error_count=report.error_count,
        warning_count=report.warning_count,
        errors=[issue_to_proto(issue) for issue in report.errors],
        warnings=[issue_to_proto(issue) for issue in report.warnings],
        issue_counts=[
            dataset_pb.IssueCount(code=code, count=count, severity=SEVERITIES[severity_of(code)])
            for code, count in sorted(report.issue_counts.items())
        ],
        sample_preview=[preview_to_proto(p) for p in report.sample_preview],
        statistics=statistics_to_proto(report.statistics),
        size_bytes=report.size_bytes,
    )
