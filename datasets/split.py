"""Splitting a canonical JSONL file into training and validation files, without parsing it.

A dataset is validated and normalized once; every later split (a job's, a
NormalizeDataset call's) reads its canonical file. Each canonical line ends
with its source line, `"line":N}`, the one thing the split decides by (see
output.SplitWriter), so the lines are copied as bytes: the same split, and
the same lines, as normalizing the source with that fraction and seed.
"""

from __future__ import annotations

import os
import re
import shutil
from array import array
from dataclasses import dataclass
from pathlib import Path

from tunewire.datasets.normalize import TRAIN_FILE, VALIDATION_FILE
from tunewire.datasets.output import AtomicFile, SplitWriter

# The end of a canonical line. A '"' inside a JSON string is always escaped, so this
# matches only after a record's last key.
_LINE_END = re.compile(rb'"line":(\d+)}\n')
_BLOCK = 4 << 20


@dataclass
class SplitResult:
    train_path: Path
    validation_path: Path | None  # None when the fraction is 0
    train_records: int
    validation_records: int


def split_canonical(
    path: str | os.PathLike, out_dir: str | os.PathLike, fraction: float, seed: int = 0
) -> SplitResult:
    """Writes `out_dir`/train.jsonl (and valid.jsonl) from a canonical file by `normalize_file`.

    Raises ValueError for a line that is not a canonical record, OSError when
    a file cannot be read or written (nothing is left behind then).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = AtomicFile(out / TRAIN_FILE)
    held_out = AtomicFile(out / VALIDATION_FILE) if fraction > 0 else None
    try:
        counts = _split(Path(path), train, held_out, fraction, seed)
        train.commit()
        if held_out is not None:
            held_out.commit()
    except BaseException:
        for part in (train, held_out):
            if part is not None:
                part.discard()
        raise
    return SplitResult(train.path, held_out.path if held_out else None, *counts)


def _split(
    path: Path, train: AtomicFile, held_out: AtomicFile | None, fraction: float, seed: int
) -> tuple[int, int]:
    with open(path, "rb") as source, train.open() as train_file:
        if held_out is None:
            shutil.copyfileobj(source, train_file, _BLOCK)
            source.seek(0)
            return _count_lines(source), 0
        with held_out.open() as held_out_file:
            writer = SplitWriter(train_file, held_out_file, fraction, seed)
            rest, position = b"", 0
            while block := source.read(_BLOCK):
                data = rest + block if rest else block
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                _write_block(writer, data, cut, path, position)
                position += cut
            if rest:
                raise _not_canonical(path, position)
            return writer.counts[0], writer.counts[1]


def _write_block(writer: SplitWriter, data: bytes, cut: int, path: Path, position: int) -> None:
    """Splits the lines of data[:cut], which ends at the end of a line."""
    ends: list[int] = []
    lines = array("q")
    start = 0
    find = data.find
    for match in _LINE_END.finditer(data, 0, cut):
        if data[start : start + 1] != b"{" or find(b"\n", start, match.start()) >= 0:
            raise _not_canonical(path, position + start)
        start = match.end()
        ends.append(start)
        lines.append(int(match.group(1)))
    if start != cut:
        raise _not_canonical(path, position + start)
    writer.write_lines(memoryview(data)[:cut], ends, lines)


def _not_canonical(path: Path, offset: int) -> ValueError:
    return ValueError(f"{path}: the line at byte {offset:,} is not a canonical record")


def _count_lines(source) -> int:
    count = 0
    while block := source.read(_BLOCK):
        count += block.count(b"\n")
    return count
