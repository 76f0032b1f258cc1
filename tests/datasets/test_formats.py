"""Each format's records: what is valid, what each reason code catches, and the canonical form."""

import json

import pytest

from tunewire.datasets.api import DatasetFormat, Severity, ValidationOptions, validate_bytes

pytestmark = pytest.mark.timeout(60)


def jsonl(*records) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode() + b"\n"


def validate(*records, **options):
    return validate_bytes(jsonl(*records), ValidationOptions(**options))


def only_issue(report):
    issues = report.errors + report.warnings
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def messages_of(report, index=0):
    return [
        (m["role"], m["content"], m["trainable"])
        for m in report.sample_preview[index].conversation["messages"]
    ]


# --- Alpaca -------------------------------------------------------------------------------


def test_alpaca_instruction_and_input_join_with_a_blank_line_and_system_comes_first():
    report = validate(
        {
            "instruction": "Add the numbers.",
            "input": "2 and 3",
            "output": "Five.",
            "system": "Be terse.",
        }
    )
    assert report.valid and report.format is DatasetFormat.ALPACA
    assert messages_of(report) == [
        ("system", "Be terse.", False),
        ("user", "Add the numbers.\n\n2 and 3", False),
        ("assistant", "Five.", True),
    ]


def test_alpaca_empty_or_missing_input_leaves_only_the_instruction():
    report = validate(
        {"instruction": "Say hi.", "input": "", "output": "Hi there."},
        {"instruction": "Say bye.", "output": "Goodbye."},
    )
    assert report.valid and report.valid_samples == 2
    assert messages_of(report, 0)[0] == ("user", "Say hi.", False)
    assert messages_of(report, 1)[0] == ("user", "Say bye.", False)


def test_alpaca_history_pairs_become_earlier_turns():
    report = validate(
        {
            "instruction": "And 3+3?",
            "input": "",
            "output": "Six.",
            "history": [["1+1?", "Two."], ["2+2?", "Four."]],
        }
    )
    assert report.valid
    assert messages_of(report) == [
        ("user", "1+1?", False),
        ("assistant", "Two.", True),
        ("user", "2+2?", False),
        ("assistant", "Four.", True),
        ("user", "And 3+3?", False),
        ("assistant", "Six.", True),
    ]


@pytest.mark.parametrize(
    "record, code, field",
    [
        ({"instruction": "x"}, "MISSING_FIELD", "output"),
        ({"output": "Some answer."}, "MISSING_FIELD", "instruction"),
        ({"instruction": "x", "output": 42}, "WRONG_TYPE", "output"),
        ({"instruction": None, "output": "Some answer."}, "WRONG_TYPE", "instruction"),
        ({"instruction": {"text": "x"}, "output": "Some answer."}, "WRONG_TYPE", "instruction"),
        ({"instruction": "x", "input": 5, "output": "Some answer."}, "WRONG_TYPE", "input"),
        ({"instruction": "  ", "output": "Some answer."}, "EMPTY_VALUE", "instruction"),
        ({"instruction": "x", "output": ""}, "EMPTY_VALUE", "output"),
        ({"instruction": "x", "output": "ok!", "history": "no"}, "WRONG_TYPE", "history"),
        (
            {"instruction": "x", "output": "ok!", "history": [["only one"]]},
            "WRONG_TYPE",
            "history[0]",
        ),
        (
            {"instruction": "x", "output": "ok!", "history": [["q", ""]]},
            "EMPTY_VALUE",
            "history[0][1]",
        ),
    ],
)
def test_alpaca_errors_name_the_field(record, code, field):
    report = validate(record)
    issue = only_issue(report)
    assert (issue.code, issue.field, issue.line) == (code, field, 1)
    assert field.split("[")[0] in issue.message
    assert not report.valid


# --- ShareGPT -----------------------------------------------------------------------------


def turn(role, value):
    return {"from": role, "value": value}


def test_sharegpt_roles_map_to_canonical_roles_with_tool_calls_trained():
    record = {
        "conversations": [
            turn("system", "You can call tools."),
            turn("human", "Weather in Paris?"),
            turn("function_call", '{"name": "weather", "arguments": {"city": "Paris"}}'),
            turn("observation", '{"temp": 21}'),
            turn("gpt", "It is 21 degrees."),
        ],
        "tools": '[{"name": "weather", "parameters": {}}]',
    }
    report = validate(record)
    assert report.valid and report.format is DatasetFormat.SHAREGPT
    assert [m[0] for m in messages_of(report)] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert [m[2] for m in messages_of(report)] == [False, False, True, False, True]
    assert report.sample_preview[0].conversation["tools"] == [{"name": "weather", "parameters": {}}]


def test_sharegpt_aliases_and_top_level_system():
    record = {
        "system": "Be kind.",
        "conversations": [turn("user", "Hello?"), turn("assistant", "Hello!")],
    }
    report = validate(record)
    assert report.valid
    assert messages_of(report) == [
        ("system", "Be kind.", False),
        ("user", "Hello?", False),
        ("assistant", "Hello!", True),
    ]


@pytest.mark.parametrize(
    "turns, code, field",
    [
        ([turn("human", "hi"), turn("bot", "yo!")], "UNKNOWN_ROLE", "conversations[1].from"),
        ([turn("human", "hi"), turn("human", "again")], "NOT_ALTERNATING", "conversations[1].from"),
        ([turn("gpt", "I start"), turn("human", "ok")], "NOT_ALTERNATING", "conversations[0].from"),
        (
            [turn("human", "hi"), turn("gpt", "yo!"), turn("system", "late")],
            "SYSTEM_NOT_FIRST",
            "conversations[2].from",
        ),
        ([turn("human", "hi"), {"from": "gpt"}], "MISSING_FIELD", "conversations[1].value"),
        (
            [turn("human", "hi"), {"role": "gpt", "value": "yo!"}],
            "MISSING_FIELD",
            "conversations[1].from",
        ),
        ([turn("human", "hi"), turn("gpt", None)], "WRONG_TYPE", "conversations[1].value"),
        ([turn("human", "hi"), turn(7, "yo!")], "WRONG_TYPE", "conversations[1].from"),
        ([turn("human", "hi"), turn("gpt", "")], "EMPTY_VALUE", "conversations[1].value"),
        ([turn("human", "hi"), "gpt: yo!"], "WRONG_TYPE", "conversations[1]"),
        (
            [turn("human", "hi"), turn("observation", "{}")],
            "NOT_ALTERNATING",
            "conversations[1].from",
        ),
    ],
)
def test_sharegpt_errors_name_the_turn(turns, code, field):
    issues = validate({"conversations": turns}).errors
    assert (issues[0].code, issues[0].field) == (code, field), [str(i) for i in issues]


def test_sharegpt_a_conversation_without_an_assistant_turn_has_nothing_to_train():
    issue = only_issue(validate({"conversations": [turn("human", "Anyone there?")]}))
    assert issue.code == "NO_ASSISTANT_TURN"


def test_sharegpt_conversations_must_be_a_non_empty_list():
    assert only_issue(validate({"conversations": []})).code == "EMPTY_VALUE"
    assert only_issue(validate({"conversations": "hi"})).code == "WRONG_TYPE"
    assert (
        only_issue(
            validate({"conversations": [turn("human", "hi"), turn("gpt", "yo!")], "tools": 3})
        ).code
        == "WRONG_TYPE"
    )


def test_sharegpt_system_given_twice_is_an_error():
    record = {
        "system": "One.",
        "conversations": [turn("system", "Two."), turn("human", "hi"), turn("gpt", "yo!")],
    }
    issue = only_issue(validate(record))
    assert (issue.code, issue.field) == ("SYSTEM_NOT_FIRST", "conversations[0].from")


# --- chat messages ------------------------------------------------------------------------


def message(role, content):
    return {"role": role, "content": content}


def test_messages_keep_roles_and_parallel_tool_results():
    record = {
        "messages": [
            message("user", "Two lookups please."),
            message("assistant", '{"calls": 2}'),
            message("tool", "first"),
            message("tool", "second"),
            message("assistant", "Both done."),
        ]
    }
    report = validate(record)
    assert report.valid and report.format is DatasetFormat.MESSAGES
    assert [m[0] for m in messages_of(report)] == ["user", "assistant", "tool", "tool", "assistant"]


def test_messages_trainable_flag_overrides_the_default():
    record = {
        "messages": [
            message("user", "Q?"),
            {"role": "assistant", "content": "Draft.", "trainable": False},
            message("user", "Better?"),
            message("assistant", "Final answer."),
        ]
    }
    report = validate(record)
    assert report.valid
    assert [m[2] for m in messages_of(report)] == [False, False, False, True]


@pytest.mark.parametrize(
    "items, code, field",
    [
        ([message("user", "hi"), message("gpt", "yo!")], "UNKNOWN_ROLE", "messages[1].role"),
        (
            [message("user", "hi"), message("user", "hi again")],
            "NOT_ALTERNATING",
            "messages[1].role",
        ),
        (
            [message("user", "hi"), {"role": "assistant", "content": None, "tool_calls": []}],
            "WRONG_TYPE",
            "messages[1].content",
        ),
        ([message("user", "hi"), {"role": "assistant"}], "MISSING_FIELD", "messages[1].content"),
        (
            [message("user", "hi"), message("assistant", "  \n")],
            "EMPTY_VALUE",
            "messages[1].content",
        ),
        (
            [message("user", "hi"), {"role": "assistant", "content": "ok!", "trainable": "yes"}],
            "WRONG_TYPE",
            "messages[1].trainable",
        ),
        (
            [message("user", "hi"), message("assistant", "yo!"), message("system", "late")],
            "SYSTEM_NOT_FIRST",
            "messages[2].role",
        ),
    ],
)
def test_messages_errors_name_the_message(items, code, field):
    issues = validate({"messages": items}).errors
    assert (issues[0].code, issues[0].field) == (code, field), [str(i) for i in issues]


# --- detection and warnings ----------------------------------------------------------------


def test_mixed_formats_name_the_first_line_of_each_format():
    alpaca = {"instruction": "x", "output": "yes!"}
    sharegpt = {"conversations": [turn("human", "hi"), turn("gpt", "yo!")]}
    report = validate(alpaca, alpaca | {"output": "other"}, sharegpt, sharegpt)
    mixed = [i for i in report.errors if i.code == "MIXED_FORMATS"]
    assert [i.line for i in mixed] == [3, 4]
    assert "line 1" in mixed[0].message and "line 3" in mixed[0].message
    assert report.format is DatasetFormat.ALPACA and report.valid_samples == 2


def test_a_record_of_no_known_format_lists_its_keys():
    issue = only_issue(validate({"prompt": "x", "completion": "y"}))
    assert issue.code == "UNKNOWN_FORMAT" and "'prompt'" in issue.message


def test_unknown_fields_warn_once_per_file_and_do_not_invalidate():
    record = {"instruction": "x", "output": "yes!", "id": 1}
    report = validate(
        record, record | {"id": 2, "output": "no!"}, record | {"id": 3, "output": "maybe"}
    )
    assert report.valid
    assert [(w.code, w.field, w.line) for w in report.warnings] == [("UNKNOWN_FIELD", "id", 1)]


def test_short_outputs_and_duplicates_are_warnings():
    report = validate(
        {"instruction": "Is it?", "output": "No"},
        {"instruction": "Say it.", "output": "It."},
        {"instruction": "Say it.", "output": "It."},
    )
    assert report.valid and report.valid_samples == 3
    assert [(w.code, w.line) for w in report.warnings] == [
        ("SHORT_OUTPUT", 1),
        ("DUPLICATE_RECORD", 3),
    ]
    assert all(w.severity is Severity.WARNING for w in report.warnings)
    assert "line 2" in report.warnings[1].message


def test_duplicates_compare_the_normalized_conversation():
    # Same conversation written in two formats of field order and whitespace.
    report = validate(
        '{"instruction": "Name a colour.", "input": "", "output": "Blue."}',
        '{"output":"Blue.","instruction":"Name a colour."}',
    )
    assert report.issue_counts == {"DUPLICATE_RECORD": 1}


def test_counts_cover_the_whole_file_while_lists_stop_at_max_issues():
    bad = [{"instruction": "x"} for _ in range(30)]
    report = validate(*bad, max_issues=5)
    assert report.error_count == 30 and report.issue_counts == {"MISSING_FIELD": 30}
    assert [e.line for e in report.errors] == [1, 2, 3, 4, 5]
