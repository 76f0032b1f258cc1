"""Reading files: layouts, line numbers, compression, encodings, and input that is not a dataset."""

import gzip
import json
import resource

import pytest

from tunewire.datasets.api import Layout, ValidationOptions, validate_bytes, validate_file

pytestmark = pytest.mark.timeout(120)

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def codes(report):
    return [(i.line, i.code) for i in report.errors]


def test_a_json_array_reports_the_line_where_each_record_starts():
    records = [
        GOOD,
        {"instruction": "x"},
        GOOD | {"output": "Red."},
        {"instruction": "y", "output": 7},
    ]
    data = json.dumps(records, indent=2).encode()
    report = validate_bytes(data)
    assert report.layout is Layout.JSON_ARRAY and report.total_samples == 4
    starts = [i + 1 for i, text in enumerate(data.decode().splitlines()) if text == "  {"]
    assert codes(report) == [(starts[1], "MISSING_FIELD"), (starts[3], "WRONG_TYPE")]


def test_a_json_array_is_read_in_chunks_across_record_boundaries():
    records = [GOOD | {"output": f"Answer number {i}."} for i in range(400)]
    data = json.dumps(records).encode()  # one line, many chunks of 1 KiB below
    import io

    from tunewire.datasets.json_array import read_json_array
    from tunewire.datasets.source import open_source

    opened = open_source(io.BytesIO(data), chunk_bytes=1024)
    values = [
        value for _, value, issue, _ in read_json_array(opened.chunks, 1, 1 << 20) if issue is None
    ]
    assert values == records


def test_broken_records_in_a_json_array_do_not_stop_the_rest():
    data = (
        b'[\n  {"instruction": "a", "output": "one!"},\n'
        b'  {"instruction": "b", "output": "two!",,},\n'
        b'  {"instruction": "c", "output": "three"}\n]\n'
    )
    report = validate_bytes(data)
    assert report.valid_samples == 2 and report.total_samples == 3
    (issue,) = report.errors
    assert (issue.line, issue.code, issue.column) == (3, "INVALID_JSON", 41)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", [(1, "EMPTY_FILE")]),
        (b"\n \n\t\n", [(1, "EMPTY_FILE")]),
        (b"[]", [(1, "NO_RECORDS")]),
        (b"42", [(1, "NOT_AN_OBJECT")]),
        (b'"just a string"\n', [(1, "NOT_AN_OBJECT")]),
        (b"null", [(1, "NOT_AN_OBJECT")]),
        (b'[1, "two", null]', [(1, "NOT_AN_OBJECT")] * 3),
        (b'{"instruction": "x", "output": "ye', [(1, "INVALID_JSON")]),
        (b'[{"instruction": "x", "output": "yes"}', [(1, "INVALID_JSON")]),
        (b'[{"instruction": "x", "output": "yes"}] extra', [(1, "INVALID_JSON")]),
        (b'[{"instruction": "x", "output": "yes"},]', [(1, "INVALID_JSON")]),
    ],
)
def test_files_that_are_not_datasets_end_as_issues_with_lines(data, expected):
    report = validate_bytes(data)
    assert codes(report) == expected and not report.valid


def test_invalid_json_gives_the_column():
    report = validate_bytes(json.dumps(GOOD).encode() + b'\n{"instruction": "x" "output": "y"}\n')
    (issue,) = report.errors
    assert (issue.line, issue.column, issue.code) == (2, 21, "INVALID_JSON")
    assert "column 21" in issue.message


def test_invalid_utf8_is_an_encoding_error_on_its_line_in_both_layouts():
    bad = b'{"instruction": "caf\xe9", "output": "yes!"}'
    jsonl = (
        json.dumps(GOOD).encode()
        + b"\n"
        + bad
        + b"\n"
        + json.dumps(GOOD | {"output": "Red."}).encode()
    )
    report = validate_bytes(jsonl)
    assert [(i.line, i.code, i.column) for i in report.errors] == [(2, "INVALID_ENCODING", 21)]
    assert report.valid_samples == 2
    array = b"[\n" + json.dumps(GOOD).encode() + b",\n" + bad + b"\n]"
    report = validate_bytes(array)
    assert [(i.line, i.code) for i in report.errors] == [(3, "INVALID_ENCODING")]
    assert "0xe9" in report.errors[0].message and report.valid_samples == 1


def test_nul_bytes_are_reported_not_swallowed():
    report = validate_bytes(
        b'{"instruction": "a\x00b", "output": "yes!"}\n' + json.dumps(GOOD).encode()
    )
    (issue,) = report.errors
    assert (issue.line, issue.code) == (1, "INVALID_JSON") and "NUL" in issue.message
    assert report.valid_samples == 1


def test_a_binary_file_is_invalid_line_by_line_without_crashing():
    data = bytes(range(256)) * 64
    report = validate_bytes(data)
    assert not report.valid and report.valid_samples == 0
    assert report.error_count == report.total_samples > 0
    assert all(i.line >= 1 for i in report.errors)


def test_nesting_100000_deep_is_too_deep_and_the_next_line_is_still_read():
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    report = validate_bytes(deep + b"\n" + json.dumps(GOOD).encode())
    assert codes(report) == [(1, "TOO_DEEP")] and report.valid_samples == 1
    deep_array = b"[" + b"[" * 100_000 + b"]" * 100_000 + b",\n" + json.dumps(GOOD).encode() + b"]"
    report = validate_bytes(deep_array)
    assert codes(report) == [(1, "TOO_DEEP")] and report.valid_samples == 1


def test_a_50_mb_line_is_skipped_without_holding_it(tmp_path):
    path = tmp_path / "long.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps(GOOD).encode() + b"\n")
        f.write(b'{"instruction": "' + b"x" * (50 << 20) + b'", "output": "y"}\n')
        f.write(json.dumps(GOOD | {"output": "Red."}).encode() + b"\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = validate_file(path, ValidationOptions(workers=1))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert codes(report) == [(2, "LINE_TOO_LONG")] and report.valid_samples == 2
    assert "16,777,216" in report.errors[0].message
    assert grown_mb < 40  # the 16 MiB limit, not the 50 MB line


def test_the_line_limit_applies_to_json_array_records_too():
    records = [GOOD, GOOD | {"output": "y" * 5000}, GOOD | {"output": "Red."}]
    report = validate_bytes(
        json.dumps(records, indent=1).encode(), ValidationOptions(max_line_bytes=2000)
    )
    assert [i.code for i in report.errors] == ["LINE_TOO_LONG"]
    assert report.valid_samples == 2


def test_gzip_is_detected_by_its_bytes_not_the_name(tmp_path):
    path = tmp_path / "data.json"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(json.dumps([GOOD]).encode()))
    report = validate_file(path)
    assert report.valid and report.layout is Layout.JSON_ARRAY
    assert report.size_bytes == path.stat().st_size


def test_a_truncated_gzip_stream_is_an_issue():
    data = gzip.compress((json.dumps(GOOD) + "\n").encode() * 2000)
    report = validate_bytes(data[: len(data) // 2])
    assert report.errors[-1].code == "INVALID_ENCODING" and "gzip" in report.errors[-1].message


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b""])
def test_a_utf8_bom_is_accepted_in_both_layouts(prefix):
    assert validate_bytes(prefix + json.dumps(GOOD).encode()).valid
    assert validate_bytes(prefix + json.dumps([GOOD]).encode()).valid


@pytest.mark.parametrize(
    "data, word",
    [(b"\xff\xfe[\x00", "UTF-16"), (b"PK\x03\x04rest", "zip"), (b"(\xb5/\xfdrest", "zstd")],
)
def test_other_encodings_and_archives_are_named(data, word):
    report = validate_bytes(data)
    (issue,) = report.errors
    assert issue.code == "INVALID_ENCODING" and word in issue.message and issue.line == 1


def test_blank_lines_count_as_lines():
    report = validate_bytes(b"\n\n" + json.dumps(GOOD).encode() + b"\n\n" + b'{"instruction": 1}\n')
    assert (report.errors[0].line, report.errors[0].code) == (5, "WRONG_TYPE")
    assert report.total_samples == 2


def test_a_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        validate_file(tmp_path / "nope.jsonl")


def test_the_library_imports_without_heavy_or_rpc_packages():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import tunewire.datasets.validate, tunewire.datasets.normalize\n"
        "import tunewire.datasets.masking, tunewire.datasets.api\n"
        "import tunewire.datasets.canonical, tunewire.datasets.tokens\n"
        "heavy = ('transformers', 'grpc', 'google.protobuf', 'numpy', 'mlx', 'datasets')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
