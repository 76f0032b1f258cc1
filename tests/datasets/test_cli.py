"""`tunewire validate` as a user runs it: a subprocess, its output and exit status."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "tunewire.cli.validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_valid_file_exits_0_with_a_short_report(tmp_path):
    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    result = run(path)
    assert result.returncode == 0, result.stderr
    assert f"{path}: valid (Alpaca, JSONL)" in result.stdout
    assert "1 read, 1 valid" in result.stdout


def test_an_invalid_file_exits_1_and_lists_each_error_with_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"instruction": "x", "output": 3}\n' + "{oops\n")
    result = run(path)
    assert result.returncode == 1
    assert "INVALID (Alpaca, JSONL)" in result.stdout
    assert "line 2 output WRONG_TYPE: 'output' must be a string, got number 3" in result.stdout
    assert "line 3:2 INVALID_JSON" in result.stdout
    assert "by code: INVALID_JSON 1, WRONG_TYPE 1" in result.stdout


def test_json_output_is_the_proto_json_form(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"instruction": "x"}\n')
    result = run(path, "--json", "--max-issues", "1")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["format"] == "DATASET_FORMAT_ALPACA"
    assert report["total_samples"] == "2" and report["error_count"] == "1"
    assert report["errors"] == [
        {
            "line": "2",
            "column": 0,
            "field": "output",
            "code": "MISSING_FIELD",
            "message": "'output' is missing",
            "severity": "ISSUE_SEVERITY_ERROR",
        }
    ]
    assert report["sample_preview"][0]["conversation"]["line"] == "1"


def test_a_missing_file_is_one_clear_line_and_exit_2(tmp_path):
    result = run(tmp_path / "nope.jsonl")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"tunewire validate: error: cannot read {tmp_path / 'nope.jsonl'}: "
        "No such file or directory"
    )
    assert "Traceback" not in result.stderr


def test_bad_arguments_exit_2(tmp_path):
    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps(GOOD))
    assert run(path, "--max-tokens", "10").returncode == 2  # needs --tokenizer
    assert run().returncode == 2
    result = run(path, "--tokenizer", tmp_path / "missing")
    assert result.returncode == 2 and "cannot load a tokenizer" in result.stderr


def test_the_preview_with_a_tokenizer_shows_the_trained_spans(tmp_path, tokenizer_dir):
    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    result = run(path, "--tokenizer", tokenizer_dir, "--preview", "1")
    assert result.returncode == 0, result.stderr
    assert "<<<Blue.<|im_end|>" in result.stdout and "tokens, " in result.stdout


def test_run_validate_is_importable_for_the_main_cli(tmp_path):
    from tunewire.cli.validate import run_validate

    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps(GOOD))
    assert run_validate([str(path)]) == 0
    assert run_validate([str(Path(tmp_path) / "missing")]) == 2
