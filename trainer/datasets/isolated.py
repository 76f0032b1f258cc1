"""Whole-file dataset operations, runnable in this process or in a child process of their own.

Each takes plain arguments and returns a JSON-able dict (reports as
serialized protos), so library.py can run it in a thread for a small file or
in `python -m tunewire.trainer.datasets.isolated` for a large one: what a
large file costs in memory (the duplicate table, the merge of worker results,
a tokenizer) then belongs to a process that exits, and the daemon's memory
stays where it was.

Protocol of the child: one JSON request on stdin ({"op": ..., arguments});
one JSON answer on stdout: the operation's dict, or {"error": {...}} with the
errno, message and file of an OSError, or the message of a ValueError.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import asdict

from tunewire.datasets import api as library


def _bytes(message) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def validate(path: str, options: dict) -> dict:
    report = library.validate_file(path, library.ValidationOptions(**options))
    return {"report": _bytes(library.report_to_proto(report))}


def validate_bytes(data: bytes, options: library.ValidationOptions) -> dict:
    """Inline content (in this process only: bytes do not travel as JSON)."""
    return {"report": _bytes(library.report_to_proto(library.validate_bytes(data, options)))}


def normalize(path: str, out_dir: str, fraction: float, seed: int, options: dict) -> dict:
    result = library.normalize_file(
        path, out_dir, fraction, seed, library.ValidationOptions(**options)
    )
    return {
        "report": _bytes(library.report_to_proto(result.report)),
        "statistics": _bytes(library.statistics_to_proto(result.statistics)),
        "train_path": str(result.train_path),
        "validation_path": str(result.validation_path) if result.validation_path else None,
    }


def split(path: str, out_dir: str, fraction: float, seed: int) -> dict:
    result = library.split_canonical(path, out_dir, fraction, seed)
    return {
        "train_path": str(result.train_path),
        "validation_path": str(result.validation_path) if result.validation_path else None,
        "train_records": result.train_records,
        "validation_records": result.validation_records,
    }


OPERATIONS = {"validate": validate, "normalize": normalize, "split": split}


def options_dict(options: library.ValidationOptions) -> dict:
    """Options as a request carries them (the trainer gives a tokenizer as its directory)."""
    return asdict(options)


def run(request: dict) -> dict:
    """Runs one operation; failures come back as {"error": ...} the parent raises again."""
    request = dict(request)
    operation = OPERATIONS[request.pop("op")]
    try:
        return operation(**request)
    except OSError as exc:
        return {
            "error": {
                "errno": exc.errno,
                "strerror": exc.strerror or str(exc),
                "filename": os.fspath(exc.filename) if exc.filename is not None else None,
            }
        }
    except ValueError as exc:
        return {"error": {"value": str(exc)}}


def raise_error(error: dict) -> None:
    """Raises what `run` caught, in the caller's process."""
    if "value" in error:
        raise ValueError(error["value"])
    raise OSError(error["errno"], error["strerror"], error["filename"])


def main() -> int:
    answer = run(json.loads(sys.stdin.readline()))
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
