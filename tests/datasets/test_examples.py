"""The bundled example datasets validate and normalize as the demo expects."""

from pathlib import Path

import pytest

from tunewire.datasets.api import DatasetFormat, iter_canonical, normalize_file, validate_file

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_alpaca_example_is_valid_and_normalizes_to_five_conversations(tmp_path):
    report = validate_file(EXAMPLES / "alpaca_example.json")
    assert report.valid and report.error_count == 0 and report.format is DatasetFormat.ALPACA
    assert report.total_samples == report.valid_samples == 5
    records = list(
        iter_canonical(normalize_file(EXAMPLES / "alpaca_example.json", tmp_path).train_path)
    )
    assert len(records) == 5
    assert sum(r["messages"][0]["role"] == "system" for r in records) == 1
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles[-2:] == ["user", "assistant"] and record["messages"][-1]["trainable"]


def test_the_sharegpt_example_is_valid_with_system_turns_first(tmp_path):
    report = validate_file(EXAMPLES / "sharegpt_example.json")
    assert report.valid and report.error_count == 0 and report.format is DatasetFormat.SHAREGPT
    assert report.total_samples == report.valid_samples == 3
    records = list(
        iter_canonical(normalize_file(EXAMPLES / "sharegpt_example.json", tmp_path).train_path)
    )
    assert len(records) == 3
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles[0] == "system" and 4 <= len(roles) <= 5
        assert roles[1:] == ["user", "assistant"] * ((len(roles) - 1) // 2)
