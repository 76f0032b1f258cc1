"""The bundled example datasets validate and normalize as the demo expects."""

import json
from pathlib import Path

import pytest

from tunewire.cli import signoff
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


@pytest.mark.parametrize(("name", "records"), [("signoff_train", 40), ("signoff_heldout", 16)])
def test_the_demo_sign_off_chats_are_valid_and_every_answer_signs_off(name, records):
    report = validate_file(EXAMPLES / f"{name}.jsonl")
    assert report.valid and report.error_count == 0 and report.format is DatasetFormat.MESSAGES
    assert report.total_samples == report.valid_samples == records
    for line in (EXAMPLES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        user, assistant = json.loads(line)["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"].endswith("\n\n" + signoff.SIGN_OFF)
        assert signoff.signs_off(assistant["content"])
        assert not signoff.signs_off(assistant["content"].removesuffix(signoff.SIGN_OFF))


def test_the_held_out_questions_are_not_in_the_training_set():
    trained = {
        json.loads(line)["messages"][0]["content"]
        for line in signoff.TRAIN_FILE.read_text(encoding="utf-8").splitlines()
    }
    held_out = signoff.held_out_prompts()
    assert len(held_out) == len(set(held_out)) == 16
    assert not trained & set(held_out)
    assert not {q.lower().rstrip("?.") for q in trained} & {
        q.lower().rstrip("?.") for q in held_out
    }
