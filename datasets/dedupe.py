"""Remembering records by a 64-bit hash, in 12 bytes per slot, to report duplicates.

A Python set of ints costs about 80 bytes per record; this open-addressing
table of two flat arrays (hash, first line) costs 12 bytes per slot at most
twice the records. Past `limit` distinct records it stops remembering new ones
(they are still compared with those remembered), so memory stays bounded on
any file: the default 4 million records stay under ~100 MB.
"""

from __future__ import annotations

from array import array

_MASK64 = (1 << 64) - 1


class SeenRecords:
    def __init__(self, limit: int = 4_000_000) -> None:
        self.limit = limit
        self.size = 0
        self._capacity = 1 << 12
        self._hashes = array("q", bytes(8 * self._capacity))  # 0 marks an empty slot
        self._lines = array("L" if array("L").itemsize == 4 else "I", bytes(4 * self._capacity))

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def first_line(self, key: int, line: int) -> int:
        """The line where a record with this hash was first seen; 0 (and remember it) if new."""
        key = key or 1
        mask = self._capacity - 1
        hashes = self._hashes
        i = key & mask
        while True:
            found = hashes[i]
            if found == key:
                return self._lines[i]
            if found == 0:
                break
            i = (i + 1) & mask
        if self.size >= self.limit:
            return 0
        hashes[i] = key
        self._lines[i] = min(line, 4294967295)
        self.size += 1
        if self.size * 3 > self._capacity * 2:
            self._grow()
        return 0

    def tables(self) -> tuple[bytes, bytes]:
        """The raw slots (int64 hash, 0 if empty; uint32 first line), to merge across processes."""
        return self._hashes.tobytes(), self._lines.tobytes()

    def _grow(self) -> None:
        old_hashes, old_lines = self._hashes, self._lines
        self._capacity *= 2
        mask = self._capacity - 1
        hashes = array("q", bytes(8 * self._capacity))
        lines = array(old_lines.typecode, bytes(4 * self._capacity))
        for key, line in zip(old_hashes, old_lines):
            if key:
                i = key & mask
                while hashes[i]:
                    i = (i + 1) & mask
                hashes[i] = key
                lines[i] = line
        self._hashes, self._lines = hashes, lines
