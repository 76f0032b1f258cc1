"""Work done a batch at a time must give what one record at a time gives: duplicate lookups,
warnings merged into the log in file order, the train/validation split."""

import io
import json
import random
from array import array

import pytest

from tunewire.datasets.api import Issue, ValidationOptions, validate_bytes
from tunewire.datasets.dedupe import SeenRecords
from tunewire.datasets.issues import IssueLog
from tunewire.datasets.output import SplitWriter

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("seed", range(6))
def test_batched_duplicate_lookups_answer_as_one_at_a_time(seed):
    rng = random.Random(seed)
    limit = rng.choice([10, 2000, 4_000_000])
    seen = SeenRecords(limit)
    first_line: dict[int, int] = {}  # what a plain dict remembers, up to the limit
    pool = [rng.getrandbits(64) - (1 << 63) for _ in range(rng.choice([300, 30_000]))]
    # Hashes 0 (the empty mark) and ones whose slots crowd at the ends of the table.
    pool += [0, 1, -1] + [(1 << 12) - 1 - i for i in range(30)] + [i << 12 for i in range(30)]
    line = 0
    for size in rng.sample([1, 7, 511, 512, 3000, 9000, 20_000], 5):  # both the loop and numpy
        keys, lines, expected = array("q"), array("q"), []
        for _ in range(size):
            line += rng.randint(1, 3)
            key = rng.choice(pool)
            keys.append(key)
            lines.append(line)
            key = key or 1
            if key in first_line:
                expected.append((line, first_line[key]))
            elif len(first_line) < limit:
                first_line[key] = line
        assert seen.first_lines(keys, lines) == expected
        assert seen.size == len(first_line)


def test_late_warnings_keep_the_first_n_in_file_order():
    log = IssueLog(max_issues=4)
    for line in (2, 5, 9):
        log.add(Issue(line, "UNKNOWN_FIELD", "x"))
    log.add_late([Issue(5, "DUPLICATE_RECORD", "d"), Issue(7, "DUPLICATE_RECORD", "d")])
    assert [(w.line, w.code) for w in log.warnings] == [
        (2, "UNKNOWN_FIELD"),
        (5, "UNKNOWN_FIELD"),
        (5, "DUPLICATE_RECORD"),  # after the line's other warnings
        (7, "DUPLICATE_RECORD"),
    ]
    assert log.warning_count == 5 and log.counts == {"UNKNOWN_FIELD": 3, "DUPLICATE_RECORD": 2}
    log.add_late([Issue(12, "DUPLICATE_RECORD", "d")])  # past the kept ones: only counted
    assert len(log.warnings) == 4 and log.counts["DUPLICATE_RECORD"] == 3


def test_duplicates_across_many_batches_name_the_first_copy_in_file_order():
    rng = random.Random(7)
    lines, first_of, expected = [], {}, []
    for line in range(1, 30_001):
        n = rng.randrange(12_000)
        if line % 1000 == 0:
            lines.append('{"instruction": "Short?", "output": "No"}')  # SHORT_OUTPUT, repeated
            n = -1
        else:
            extra = f', "id{n % 3}": 1' if n % 500 == 0 else ""
            lines.append(f'{{"instruction": "Question {n}?", "output": "Answer {n}."{extra}}}')
        if n in first_of:
            expected.append((line, first_of[n]))
        else:
            first_of[n] = line
    data = ("\n".join(lines) + "\n").encode()
    order = {"UNKNOWN_FIELD": 0, "SHORT_OUTPUT": 2, "DUPLICATE_RECORD": 3}
    everything = validate_bytes(data, ValidationOptions(workers=1, max_issues=1_000_000))
    duplicates = [w for w in everything.warnings if w.code == "DUPLICATE_RECORD"]
    assert [(w.line, w.message.rsplit(" ", 1)[1]) for w in duplicates] == [
        (line, str(first)) for line, first in expected
    ]
    # All warnings in file order; on one line, in the scanner's order.
    keys = [(w.line, order[w.code]) for w in everything.warnings]
    assert keys == sorted(keys) and {"UNKNOWN_FIELD", "SHORT_OUTPUT"} <= set(
        everything.issue_counts
    )
    first_50 = validate_bytes(data, ValidationOptions(workers=1, max_issues=50))
    assert first_50.warnings == everything.warnings[:50]
    assert first_50.issue_counts == everything.issue_counts


@pytest.mark.parametrize("records", [300, 20_000])  # decided in Python, and with numpy
def test_the_split_decided_a_window_at_a_time_is_the_per_line_hash(records):
    train, held_out = io.BytesIO(), io.BytesIO()

    class Sink:  # the writer's file: a stand-in that keeps the lines
        def __init__(self, out):
            self.writelines = lambda lines: out.write(b"".join(lines))

    writer = SplitWriter(Sink(train), Sink(held_out), 0.25, 11)
    rng = random.Random(3)
    lines, line = [], 0
    for _ in range(records):
        line += rng.choice([1, 1, 2, 70_000]) if rng.random() < 0.01 else 1
        lines.append(line)
    for start in range(0, records, 16):
        batch = lines[start : start + 16]
        writer.write_batch([{"messages": [], "line": n} for n in batch], array("q", batch))
    expected = [n for n in lines if writer.held_out(n)]
    written = [json.loads(text)["line"] for text in held_out.getvalue().splitlines()]
    assert written == expected and 0.2 < len(expected) / records < 0.3
    assert writer.counts == [records - len(expected), len(expected)]
