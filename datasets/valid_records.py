"""What becomes of valid records: statistics, warnings, duplicate hashes, previews, output.

The scanner appends each valid record to a small batch (its messages, line
and parsed record, and its tools when it has any) and `flush` handles the
batch with C-level passes (map over all its texts, hash, orjson): one Python
call for many records, while their text is still in the cache. Warnings found
here (SHORT_OUTPUT, and DUPLICATE_RECORD, looked up in larger batches) are
merged into the log in file order. With a tokenizer a batch is one record,
so its TEMPLATE_ERROR can drop it in turn. Where records may share a line
(a JSON array), each is handled in turn: warnings placed by line could not
keep the order of records on one line.
"""

from __future__ import annotations

import json
from array import array
from itertools import chain
from operator import itemgetter
from typing import Any

from tunewire.datasets import issues as codes
from tunewire.datasets.canonical import as_dict, canonical_line, record_of
from tunewire.datasets.dedupe import SeenRecords
from tunewire.datasets.formats import FORMATS
from tunewire.datasets.issues import Issue
from tunewire.datasets.output import SplitWriter
from tunewire.datasets.partial import Partial
from tunewire.datasets.report import DatasetFormat
from tunewire.datasets.tokens import count_tokens

BATCH = 16  # records per flush: a few tens of KB of text, still in the cache
_DUPLICATE_BATCH = 8192  # hashes per lookup in the duplicate table
_content = itemgetter(1)


class ValidRecords:
    def __init__(
        self,
        part: Partial,
        options: Any,
        writer: SplitWriter | None,
        tokenizer: Any,
        tracked_records: int,
        one_at_a_time: bool = False,
    ) -> None:
        self.part = part
        self.writer = writer
        self.tokenizer = tokenizer
        self.max_tokens = options.max_tokens
        self.short = options.short_output_chars
        # Only text this short can be short once whitespace is stripped.
        self.short_scan = options.short_output_chars + 16
        self.previews_left = max(0, options.preview_records - len(part.previews))
        self.seen = SeenRecords(tracked_records)
        # The batch the scanner fills: messages, lines, parsed records, and by place the
        # canonical fields besides messages (tools, a preference pair's rejected reply).
        self.messages: list[list] = []
        self.lines = array("q")
        self.values: list[dict] = []
        self.extras: dict[int, dict] = {}
        self.batch_size = 1 if tokenizer is not None or one_at_a_time else BATCH
        self._duplicate_batch = 1 if one_at_a_time else _DUPLICATE_BATCH
        self._keys = array("q")  # hashes waiting for the duplicate lookup, and their lines
        self._key_lines = array("q")

    def flush(self, file_format: DatasetFormat) -> None:
        batch, lines, values, extras = self.messages, self.lines, self.values, self.extras
        if not batch:
            return
        part, log = self.part, self.part.log
        if self.tokenizer is not None and not self._count_tokens(batch[0], lines[0], extras):
            self._clear()
            return
        lengths = list(map(len, map(_content, chain.from_iterable(batch))))
        if min(lengths) < self.short_scan:
            log.add_late(
                [
                    _short_output(line, file_format, value, messages, at, self.short)
                    for messages, line, value in zip(batch, lines, values)
                    if (at := _first_short(messages, self.short)) >= 0
                ]
            )
        hashes = list(map(hash, map(tuple, batch)))
        for i, extra in extras.items():
            hashes[i] = hash((tuple(batch[i]), json.dumps(extra, sort_keys=True)))
        self._keys.extend(hashes)
        self._key_lines.extend(lines)
        if len(self._keys) >= self._duplicate_batch:
            self._report_duplicates()
        part.valid += len(batch)
        part.turns += len(lengths)
        part.characters += sum(lengths)
        if self.previews_left:
            for i, messages in enumerate(batch[: self.previews_left]):
                part.previews.append(as_dict(messages, extras.get(i), lines[i]))
            self.previews_left = max(0, self.previews_left - len(batch))
        if self.writer is not None:
            records = list(map(record_of, batch, lines))
            for i, extra in extras.items():
                records[i] = canonical_line(batch[i], extra, lines[i])
            self.writer.write_batch(records, lines)
        self._clear()

    def finish(self, file_format: DatasetFormat | None) -> None:
        if file_format is not None:
            self.flush(file_format)
        self._report_duplicates()

    def _clear(self) -> None:
        self.messages.clear()
        del self.lines[:]
        self.values.clear()
        self.extras.clear()

    def _count_tokens(self, messages: list, line: int, extras: dict) -> bool:
        """Adds the record's tokens (and TOO_MANY_TOKENS); False after a TEMPLATE_ERROR.

        A preference pair counts both of its sequences (prompt + chosen, prompt +
        rejected); the longer one is held against max_tokens.
        """
        log = self.part.log
        extra = extras.get(0) or {}
        conversation = as_dict(messages, None, line)["messages"]
        sequences = [conversation]
        if "rejected" in extra:
            sequences.append([*conversation[:-1], extra["rejected"]])
        try:
            counts = [count_tokens(self.tokenizer, s, extra.get("tools")) for s in sequences]
        except Exception as exc:
            log.add(
                Issue(line, codes.TEMPLATE_ERROR, f"the tokenizer's chat template failed: {exc}")
            )
            return False
        self.part.tokens += sum(counts)
        if self.max_tokens and max(counts) > self.max_tokens:
            log.add(_too_many_tokens(line, max(counts), self.max_tokens, "rejected" in extra))
        return True

    def _report_duplicates(self) -> None:
        log, duplicate_of = self.part.log, self.part.duplicate_of
        found = self.seen.first_lines(self._keys, self._key_lines)
        del self._keys[:], self._key_lines[:]
        if found:
            log.add_late([duplicate_issue(line, earlier) for line, earlier in found])
            for line, earlier in found[: max(0, log.max_issues - len(duplicate_of))]:
                duplicate_of[line] = earlier


def duplicate_issue(line: int, earlier: int) -> Issue:
    return Issue(
        line, codes.DUPLICATE_RECORD, f"the same conversation as the record at line {earlier}"
    )


def _first_short(messages: list, short: int) -> int:
    """Index of the first trained message under `short` characters without whitespace, or -1."""
    for i, (_, content, trainable) in enumerate(messages):
        if trainable and len(content.strip()) < short:
            return i
    return -1


def _too_many_tokens(line: int, count: int, limit: int, pair: bool = False) -> Issue:
    # A pair is cut from the prompt's start, so both replies stay whole and comparable.
    how = "training drops the prompt's first tokens" if pair else "training truncates it"
    return Issue(
        line,
        codes.TOO_MANY_TOKENS,
        f"{count:,} tokens after the chat template, over max_tokens {limit:,}; {how}",
    )


def _short_output(line, file_format, record, messages, index, short) -> Issue:
    size = len(messages[index][1].strip())
    return Issue(
        line,
        codes.SHORT_OUTPUT,
        f"the trained text is only {size} character{'s' if size != 1 else ''} "
        f"(under short_output_chars, {short})",
        FORMATS[file_format].trained_field(record, messages, index),
    )
