"""A worker process of parallel.py: checks one byte range of a JSONL file.

Protocol on stdin/stdout, one line each: the job (JSON) comes in; the number
of newlines in the range goes out; the line number the range starts at comes
in; the result is written (pickled) to the job's result path, exit status 0.
Run as `python -m tunewire.datasets.range_worker`; not meant for people.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
from collections.abc import Iterator

from tunewire.datasets.jsonl import read_jsonl
from tunewire.datasets.options import ValidationOptions
from tunewire.datasets.output import SplitWriter, open_output
from tunewire.datasets.report import DatasetFormat
from tunewire.datasets.scanner import RecordScanner

_UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


def _chunks(path: str, start: int, end: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        remaining = end - start
        first = start == 0
        while remaining > 0:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            if first and chunk.startswith(_UTF8_BOM):
                chunk = chunk[len(_UTF8_BOM) :]
            first = False
            yield chunk


def main() -> int:
    job = json.loads(sys.stdin.readline())
    path, start, end = job["path"], job["start"], job["end"]
    print(sum(chunk.count(b"\n") for chunk in _chunks(path, start, end)), flush=True)
    first_line = int(sys.stdin.readline())

    options = ValidationOptions(**job["options"])
    with contextlib.ExitStack() as stack:
        writer = None
        if job["train"]:
            train = stack.enter_context(open_output(job["train"]))
            held_out = (
                stack.enter_context(open_output(job["validation"])) if job["validation"] else None
            )
            writer = SplitWriter(train, held_out, job["fraction"], job["seed"])
        scanner = RecordScanner(
            options,
            writer,
            None,
            DatasetFormat(job["file_format"]),
            job["format_line"],
            job["tracked_records"],
        )
        part = scanner.run(
            read_jsonl(_chunks(path, start, end), first_line, options.max_line_bytes)
        )
    scanner.seen.save_sorted(job["result"] + ".keys", job["result"] + ".lines")
    result = {"partial": part, "counts": writer.counts if writer else [0, 0]}
    with open(job["result"], "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
