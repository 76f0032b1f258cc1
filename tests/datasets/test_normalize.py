"""Normalization: canonical JSONL of the valid records, a reproducible split, atomic files,
and the same result from worker processes as from one."""

import gzip
import json
import random

import pytest

from tunewire.datasets.api import ValidationOptions, iter_canonical, normalize_file, validate_file

pytestmark = pytest.mark.timeout(120)


def write_jsonl(path, records):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
        encoding="utf-8",
    )
    return path


def conversation(i: int) -> dict:
    return {
        "conversations": [
            {"from": "human", "value": f"Question {i}?"},
            {"from": "gpt", "value": f"Answer {i}."},
        ]
    }


def test_valid_records_become_canonical_lines_with_their_source_line(tmp_path):
    source = write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"instruction": "Add.", "input": "1 and 2", "output": "Three.", "system": "Be terse."},
            {"instruction": "broken"},
            {
                "instruction": 'Quote "this"\tand\\that',
                "input": "",
                "output": "Done: caf\u00e9 \U0001f642 \u2028.",
            },
        ],
    )
    result = normalize_file(source, tmp_path / "out")
    assert result.train_path == tmp_path / "out" / "train.jsonl" and result.validation_path is None
    records = list(iter_canonical(result.train_path))
    assert records == [
        {
            "messages": [
                {"role": "system", "content": "Be terse.", "trainable": False},
                {"role": "user", "content": "Add.\n\n1 and 2", "trainable": False},
                {"role": "assistant", "content": "Three.", "trainable": True},
            ],
            "line": 1,
        },
        {
            "messages": [
                {"role": "user", "content": 'Quote "this"\tand\\that', "trainable": False},
                {
                    "role": "assistant",
                    "content": "Done: caf\u00e9 \U0001f642 \u2028.",
                    "trainable": True,
                },
            ],
            "line": 3,
        },
    ]
    assert not result.report.valid and result.report.valid_samples == len(records)
    assert (result.statistics.train_records, result.statistics.validation_records) == (2, 0)


def test_text_reads_back_as_it_was_whichever_writer_wrote_it(tmp_path):
    """orjson writes most lines; a line with a lone surrogate (which only the standard
    library reads and writes) is written by the standard library: both read back the same."""
    rng = random.Random(1)
    alphabet = [
        "a",
        " ",
        '"',
        "\\",
        "\n",
        "\t",
        "\u00e9",
        "\U0001f642",
        "\x01",
        "/",
        "\ud800",
        "value",
        '"value":',
    ]
    records = []
    for i in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) + f" {i}"
        kind = i % 3
        if kind == 0:
            records.append(
                {"instruction": text, "input": text[::-1] if i % 2 else "", "output": text + "!"}
            )
        elif kind == 1:
            records.append(
                {
                    "messages": [
                        {"role": "user", "content": text},
                        {"role": "assistant", "content": text + "."},
                    ]
                }
            )
        else:
            records.append(
                {
                    "conversations": [
                        {"from": "human", "value": text},
                        {"from": "gpt", "value": "ok " + text},
                    ]
                }
            )
    for fmt in range(3):
        chosen = records[fmt::3]
        # Lone surrogates can only be written escaped (as UTF-8 bytes they are invalid).
        lines = [
            json.dumps(r, ensure_ascii=bool(i % 2) or "\ud800" in json.dumps(r, ensure_ascii=False))
            for i, r in enumerate(chosen)
        ]
        source = tmp_path / f"f{fmt}.jsonl"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = normalize_file(source, tmp_path / f"out{fmt}")
        assert result.report.valid_samples == len(chosen), [
            str(e) for e in result.report.errors[:3]
        ]
        written = list(iter_canonical(result.train_path))
        preview = result.report.sample_preview[0].conversation
        assert written[0] == preview
        for record, line in zip(written, range(1, len(chosen) + 1)):
            assert record["line"] == line
        for original, record in zip(chosen, written):
            contents = [m["content"] for m in record["messages"]]
            if "instruction" in original:
                user = original["instruction"] + (
                    "\n\n" + original["input"] if original["input"].strip() else ""
                )
                assert contents == [user, original["output"]]
            elif "messages" in original:
                assert contents == [m["content"] for m in original["messages"]]
            else:
                assert contents == [t["value"] for t in original["conversations"]]


def test_the_split_is_reproducible_and_follows_the_fraction(tmp_path):
    source = write_jsonl(tmp_path / "data.jsonl", [conversation(i) for i in range(2000)])
    first = normalize_file(source, tmp_path / "a", validation_fraction=0.2, seed=7)
    again = normalize_file(source, tmp_path / "b", validation_fraction=0.2, seed=7)
    other = normalize_file(source, tmp_path / "c", validation_fraction=0.2, seed=8)
    assert first.validation_path.read_bytes() == again.validation_path.read_bytes()
    assert first.validation_path.read_bytes() != other.validation_path.read_bytes()
    held_out = first.statistics.validation_records
    assert 300 < held_out < 500 and first.statistics.train_records + held_out == 2000
    lines = {r["line"] for r in iter_canonical(first.train_path)} | {
        r["line"] for r in iter_canonical(first.validation_path)
    }
    assert lines == set(range(1, 2001))


def test_files_appear_whole_and_no_temporary_file_is_left(tmp_path):
    source = write_jsonl(tmp_path / "data.jsonl", [conversation(i) for i in range(10)])
    out = tmp_path / "out"
    normalize_file(source, out, validation_fraction=0.3)
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl", "valid.jsonl"]


def test_a_failed_normalization_leaves_the_previous_output(tmp_path):
    source = write_jsonl(tmp_path / "data.jsonl", [conversation(i) for i in range(10)])
    out = tmp_path / "out"
    normalize_file(source, out)
    before = (out / "train.jsonl").read_bytes()
    with pytest.raises(ValueError):
        normalize_file(source, out, options=ValidationOptions(tokenizer=tmp_path / "no-model"))
    assert (out / "train.jsonl").read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["train.jsonl"]


def test_json_array_and_gzip_sources_normalize_too(tmp_path):
    records = [conversation(i) for i in range(5)]
    array = tmp_path / "data.json"
    array.write_text(json.dumps(records, indent=2))
    packed = tmp_path / "data.jsonl.gz"
    packed.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    from_array = [
        r["messages"] for r in iter_canonical(normalize_file(array, tmp_path / "a").train_path)
    ]
    from_gzip = [
        r["messages"] for r in iter_canonical(normalize_file(packed, tmp_path / "b").train_path)
    ]
    assert from_array == from_gzip and len(from_array) == 5


def test_validation_fraction_is_checked(tmp_path):
    with pytest.raises(ValueError, match="validation_fraction"):
        normalize_file(tmp_path / "x", tmp_path / "out", validation_fraction=1.5)


def mixed_file(path, rng):
    """A file with every kind of record and problem, in several thousand lines."""
    lines = [json.dumps(conversation(-1))]
    for i in range(6000):
        kind = rng.randrange(12)
        if kind == 0:
            lines.append('{"conversations": [{"from": "human", "value": "cut')
        elif kind == 1:
            lines.append(
                json.dumps(
                    {
                        "conversations": [
                            {"from": "human", "value": "x"},
                            {"from": "bot", "value": "y"},
                        ]
                    }
                )
            )
        elif kind == 2:
            lines.append(json.dumps(conversation(rng.randrange(50))))  # duplicates, near and far
        elif kind == 3:
            lines.append(json.dumps({"instruction": "other format", "output": "yes"}))
        elif kind == 4:
            lines.append(json.dumps(conversation(i) | {"note": i}))
        elif kind == 5:
            lines.append("")
        else:
            lines.append(json.dumps(conversation(i + 100)))
    # In a later range: the first of its unknown field, with a short answer, on one line.
    late = {"conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": "k"}]}
    lines.insert(4500, json.dumps(late | {"late_field": 1}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_worker_processes_give_the_same_report_and_files_as_one_process(tmp_path):
    source = mixed_file(tmp_path / "mixed.jsonl", random.Random(3))
    one = normalize_file(
        source, tmp_path / "one", 0.1, 5, ValidationOptions(workers=1, max_issues=4000)
    )
    many = normalize_file(
        source,
        tmp_path / "many",
        0.1,
        5,
        ValidationOptions(workers=3, parallel_min_bytes=1, max_issues=4000),
    )
    assert many.report == one.report
    assert many.train_path.read_bytes() == one.train_path.read_bytes()
    assert many.validation_path.read_bytes() == one.validation_path.read_bytes()
    assert {"MIXED_FORMATS", "DUPLICATE_RECORD", "UNKNOWN_FIELD", "INVALID_JSON"} <= set(
        one.report.issue_counts
    )
    alone = validate_file(source, ValidationOptions(workers=1, max_issues=40))
    assert (
        validate_file(source, ValidationOptions(workers=4, parallel_min_bytes=1, max_issues=40))
        == alone
    )
    assert alone.errors == one.report.errors[:40] and alone.warnings == one.report.warnings[:40]
