"""Properties over generated and mutated files: no exception escapes, every issue has a line,
chunk boundaries change nothing, and valid records all reach the normalized file."""

import gzip
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewire.datasets.api import (
    Layout,
    ValidationOptions,
    iter_canonical,
    normalize_file,
    validate_bytes,
)
from tunewire.datasets.json_array import read_json_array
from tunewire.datasets.jsonl import read_jsonl
from tunewire.datasets.source import open_source

pytestmark = pytest.mark.timeout(240)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(codec="utf-8"), max_size=30)
nonblank = text.filter(lambda s: s.strip())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)

alpaca = st.fixed_dictionaries(
    {"instruction": nonblank, "output": nonblank},
    optional={
        "input": text,
        "system": text,
        "history": st.lists(st.tuples(nonblank, nonblank).map(list), max_size=2),
    },
)


@st.composite
def conversation(draw, role_key, content_key, user, assistant, system):
    turns = [{role_key: system, content_key: draw(nonblank)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        turns += [
            {role_key: user, content_key: draw(nonblank)},
            {role_key: assistant, content_key: draw(nonblank)},
        ]
    return turns


sharegpt = conversation("from", "value", "human", "gpt", "system").map(
    lambda t: {"conversations": t}
)
chat = conversation("role", "content", "user", "assistant", "system").map(lambda t: {"messages": t})
valid_records = st.one_of(
    st.lists(alpaca, min_size=1, max_size=6),
    st.lists(sharegpt, min_size=1, max_size=6),
    st.lists(chat, min_size=1, max_size=6),
)
# Records that are anything at all: right-looking keys with any values, or any JSON.
any_records = st.lists(
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(
                [
                    "instruction",
                    "input",
                    "output",
                    "system",
                    "history",
                    "conversations",
                    "messages",
                    "tools",
                    "from",
                    "value",
                    "role",
                    "content",
                ]
            ),
            json_values,
            max_size=5,
        ),
        alpaca,
        sharegpt,
        chat,
    ),
    max_size=8,
)


def serialize(records, layout: str, ascii_only: bool) -> bytes:
    if layout == "array":
        return json.dumps(records, indent=1, ensure_ascii=ascii_only).encode(
            "utf-8", "surrogatepass"
        )
    return "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records).encode(
        "utf-8", "surrogatepass"
    )


def check_report(report, data: bytes):
    lines = data.count(b"\n") + 1
    for issue in report.errors + report.warnings:
        assert 1 <= issue.line <= lines, str(issue)
        assert issue.code and issue.message
    assert report.error_count >= len(report.errors) and report.warning_count >= len(report.warnings)
    assert sum(report.issue_counts.values()) == report.error_count + report.warning_count
    assert report.valid == (report.error_count == 0 and report.valid_samples > 0)
    assert report.valid_samples <= report.total_samples


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data):
    check_report(validate_bytes(data), data)
    check_report(validate_bytes(gzip.compress(data)), data)


@FAST
@given(any_records, st.sampled_from(["array", "jsonl"]), st.booleans(), st.integers(20, 400))
def test_arbitrary_records_never_raise(records, layout, ascii_only, limit):
    data = serialize(records, layout, ascii_only)
    check_report(validate_bytes(data, ValidationOptions(max_line_bytes=limit)), data)


@st.composite
def mutated(draw):
    data = bytearray(
        serialize(
            draw(valid_records), draw(st.sampled_from(["array", "jsonl"])), draw(st.booleans())
        )
    )
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["delete", "insert", "flip", "truncate", "repeat"]))
        if kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b"{",
                        b"}",
                        b"[",
                        b"]",
                        b'"',
                        b"\\",
                        b",",
                        b"\n",
                        b"\x00",
                        b"\xff",
                        b"\xe2\x82",
                        b"null",
                        b"1e999",
                        b"[" * 2000,
                    ]
                )
            )
        elif kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[max(0, at - 30) : at]
    return bytes(data)


@FAST
@given(mutated())
def test_mutated_files_never_raise(data):
    check_report(validate_bytes(data), data)


def read_all(data: bytes, chunk: int):
    opened = open_source(io.BytesIO(data), chunk_bytes=chunk)
    if opened.layout is None:
        return []
    reader = read_jsonl if opened.layout is Layout.JSONL else read_json_array
    return [
        (line, value, issue)
        for line, value, issue, _ in reader(opened.chunks, opened.first_line, 1 << 20)
    ]


@FAST
@given(
    st.one_of(mutated(), valid_records.map(lambda r: serialize(r, "array", False))),
    st.integers(1, 64),
)
def test_chunk_boundaries_change_nothing(data, chunk):
    assert read_all(data, chunk) == read_all(data, 1 << 20)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(valid_records, st.sampled_from(["array", "jsonl"]), st.booleans())
def test_valid_files_normalize_every_record(tmp_path, records, layout, ascii_only):
    data = serialize(records, layout, ascii_only)
    report = validate_bytes(data)
    assert report.valid and report.error_count == 0 and report.valid_samples == len(records)
    source = tmp_path / "data"
    source.write_bytes(data)
    result = normalize_file(source, tmp_path / "out")
    written = list(iter_canonical(result.train_path))
    assert len(written) == report.valid_samples == result.statistics.train_records
    for record, canonical in zip(records, written):
        trained = [m["content"] for m in canonical["messages"] if m["trainable"]]
        if "output" in record:
            assert trained[-1] == record["output"]
        else:
            turns = record.get("conversations") or record["messages"]
            key = "value" if "conversations" in record else "content"
            assert [m["content"] for m in canonical["messages"]] == [t[key] for t in turns]
