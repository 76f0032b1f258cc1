"""The fast paths: orjson reads lines and writes canonical records, each format's checks
take plain records in C-level passes; what they do must be what the detailed checks and
the standard library's reading do."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewire.datasets import alpaca, chat, sharegpt
from tunewire.datasets.api import ValidationOptions, iter_canonical, normalize_file, validate_bytes
from tunewire.datasets.formats import FORMATS, detect
from tunewire.datasets.turns import RecordContext

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = 123456789012345678901234567890  # past 64 bits: orjson would read it as a float

texts = st.sampled_from(["Hi.", "Yes, it is.", "", " ", "\t\n", "café 🙂", "x" * 40])
values = st.one_of(texts, st.none(), st.integers(), st.booleans(), st.lists(texts, max_size=2))
roles = st.sampled_from(
    ["system", "user", "assistant", "tool", "human", "gpt", "function_call", "observation", "x"]
)


def turns(role_key: str, text_key: str):
    turn = st.fixed_dictionaries({role_key: roles, text_key: texts})
    odd = st.dictionaries(st.sampled_from([role_key, text_key, "name"]), values, max_size=3)
    return st.lists(st.one_of(turn, turn, turn, odd, values), max_size=5)


def records():
    fields = st.sampled_from(["instruction", "input", "output", "system", "history", "id"])
    pair = st.lists(texts, min_size=2, max_size=2)
    history = st.one_of(st.lists(st.one_of(pair, pair, values), max_size=3), values)
    alpaca_record = st.dictionaries(fields, st.one_of(texts, texts, values, history), max_size=6)
    sharegpt_record = st.fixed_dictionaries(
        {"conversations": turns("from", "value")},
        optional={"system": values, "tools": st.just([{"name": "f"}]), "id": values},
    )
    chat_record = st.fixed_dictionaries(
        {"messages": turns("role", "content")},
        optional={"tools": st.just([{"name": "f"}]), "conversations": values},
    )
    return st.one_of(alpaca_record, sharegpt_record, chat_record)


@FAST
@given(records())
def test_a_record_the_fast_path_takes_is_valid_with_the_same_messages(record):
    for fmt, module in FORMATS.items():
        messages = module.fast(record)
        if messages is None:
            continue
        assert detect(record) is fmt
        ctx = RecordContext()
        assert module.check(record, 1, ctx) == (messages, None)
        assert ctx.error_count == 0


@pytest.mark.parametrize(
    ("module", "record"),
    [
        (alpaca, {"instruction": "Add.", "output": "Two.", "history": [["Hi.", "Hello."]]}),
        (alpaca, {"instruction": "Add.", "input": " ", "output": "Two.", "system": ""}),
        (
            sharegpt,
            {"conversations": [{"from": "human", "value": "Hi."}, {"from": "gpt", "value": "Yo."}]},
        ),
        (
            sharegpt,
            {
                "system": "Be brief.",
                "conversations": [
                    {"from": "user", "value": "Hi."},
                    {"from": "assistant", "value": "Yo."},
                ],
            },
        ),
        (
            chat,
            {
                "messages": [
                    {"role": "user", "content": "Hi."},
                    {"role": "assistant", "content": "Yo."},
                ]
            },
        ),
        (
            chat,
            {
                "messages": [
                    {"role": "system", "content": "S."},
                    {"role": "user", "content": "Q?"},
                    {
                        "role": "assistant",
                        "content": "A.",
                    },
                    {"role": "tool", "content": "7"},
                    {"role": "assistant", "content": "B."},
                ]
            },
        ),
    ],
)
def test_plain_records_take_the_fast_path(module, record):
    assert module.fast(record) == module.check(record, 1, RecordContext())[0]


def test_numbers_are_reported_as_written_not_as_orjson_reads_them():
    report = validate_bytes(
        json.dumps({"instruction": BIG, "output": "Yes."}).encode() + b"\n",
        ValidationOptions(workers=1),
    )
    (issue,) = report.errors
    assert issue.code == "WRONG_TYPE" and f"number {BIG}" in issue.message


def test_tools_are_written_with_their_numbers_exactly(tmp_path):
    tools = [{"name": "pick", "parameters": {"maximum": BIG, "step": 0.1, "nan": float("nan")}}]
    record = {
        "messages": [{"role": "user", "content": "Pick."}, {"role": "assistant", "content": "7"}],
        "tools": tools,
    }
    source = tmp_path / "tools.jsonl"
    source.write_text(json.dumps(record) + "\n", encoding="utf-8")
    (written,) = iter_canonical(normalize_file(source, tmp_path / "out").train_path)
    parameters = written["tools"][0]["parameters"]
    assert parameters["maximum"] == BIG and type(parameters["maximum"]) is int
    assert parameters["step"] == 0.1 and parameters["nan"] != parameters["nan"]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("depth", "codes"),
    [
        (600, ["UNKNOWN_FIELD"]),  # both parsers read it
        (1010, ["TOO_DEEP"]),  # orjson reads it (to 1,024 levels), the standard library does not
        (2000, ["TOO_DEEP"]),  # neither does
    ],
)
def test_nesting_is_too_deep_where_the_standard_library_stops(depth, codes):
    line = '{"instruction": "Name one.", "output": "Blue.", "deep": ' + _nested(depth) + "}\n"
    report = validate_bytes(line.encode(), ValidationOptions(workers=1))
    assert [i.code for i in report.errors + report.warnings] == codes
    assert report.valid_samples == (1 if codes == ["UNKNOWN_FIELD"] else 0)


def test_lines_orjson_refuses_are_read_the_standard_librarys_way():
    lines = [
        b'{"instruction": "A?", "output": "Yes.", "score": NaN}',  # NaN: stdlib reads it
        b'{"instruction": "B\\ud800?", "output": "Yes."}',  # a lone surrogate
        b'{"instruction": "C?", "output": "Yes."}\x0c',  # trailing whitespace by str.isspace
        b'{"instruction": "D?", "output": "Yes."} x',
        b'{"instruction": "E?", "output": "\xff"}',
    ]
    report = validate_bytes(b"\n".join(lines) + b"\n", ValidationOptions(workers=1))
    assert report.valid_samples == 3
    assert [(i.line, i.code, i.column) for i in report.errors] == [
        (4, "INVALID_JSON", 41),
        (5, "INVALID_ENCODING", 34),
    ]
    assert report.sample_preview[1].conversation["messages"][0]["content"] == "B\ud800?"
