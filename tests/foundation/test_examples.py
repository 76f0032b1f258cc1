"""The bundled example datasets have the shape the README and the demo promise."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_alpaca_example_has_five_records_one_with_a_system_prompt():
    records = json.loads((EXAMPLES / "alpaca_example.json").read_text(encoding="utf-8"))
    assert len(records) == 5
    for record in records:
        assert set(record) in (
            {"instruction", "input", "output"},
            {"system", "instruction", "input", "output"},
        )
        assert record["instruction"].strip() and record["output"].strip()
        assert isinstance(record["input"], str)
    assert sum("system" in record for record in records) == 1
    inputs = [record["input"] for record in records]
    assert "" in inputs and any(inputs)  # sometimes empty, sometimes not


def test_sharegpt_example_has_three_conversations_of_system_then_alternating_turns():
    conversations = json.loads((EXAMPLES / "sharegpt_example.json").read_text(encoding="utf-8"))
    assert len(conversations) == 3
    for conversation in conversations:
        turns = conversation["conversations"]
        assert 4 <= len(turns) - 1 <= 5  # turns after the system prompt
        roles = [turn["from"] for turn in turns]
        assert roles[0] == "system"
        assert roles[1:] == ["human", "gpt"] * ((len(roles) - 1) // 2)
        assert roles[-1] == "gpt"
        assert all(set(turn) == {"from", "value"} and turn["value"].strip() for turn in turns)
