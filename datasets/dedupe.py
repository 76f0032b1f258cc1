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
        self._mask = (1 << 12) - 1  # capacity - 1; the capacity is a power of two
        self._hashes = array("q", bytes(8 * (self._mask + 1)))  # 0 marks an empty slot
        self._lines = array(_UINT32, bytes(4 * (self._mask + 1)))

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def first_line(self, key: int, line: int) -> int:
        """The line where a record with this hash was first seen; 0 (and remember it) if new."""
        key = key or 1
        mask = self._mask
        hashes = self._hashes
        i = key & mask
        found = hashes[i]
        while found:
            if found == key:
                return self._lines[i]
            i = (i + 1) & mask
            found = hashes[i]
        if self.size >= self.limit:
            return 0
        hashes[i] = key
        self._lines[i] = min(line, 4294967295)
        self.size += 1
        if self.size * 3 > mask * 2:
            self._grow()
        return 0

    def tables(self) -> tuple[bytes, bytes]:
        """The raw slots (int64 hash, 0 if empty; uint32 first line), to merge across processes."""
        return self._hashes.tobytes(), self._lines.tobytes()

    def _grow(self) -> None:
        """Twice the slots, filled with numpy: a Python loop over millions of slots takes seconds.

        Linear probing puts each key at the first free slot from its home
        (hash & mask) on; placing keys in order of home does that at once: a
        key's slot is the larger of its home and the slot after the previous
        key's. The few pushed past the end wrap to the start, placed one by one.
        """
        import numpy as np

        keys = np.frombuffer(self._hashes, dtype=np.int64)
        lines = np.frombuffer(self._lines, dtype=np.uint32)
        used = keys != 0
        keys, lines = keys[used], lines[used]
        capacity = 2 * (self._mask + 1)
        mask = capacity - 1
        home = keys & mask
        order = np.argsort(home, kind="stable")
        keys, lines, home = keys[order], lines[order], home[order]
        rank = np.arange(len(keys), dtype=np.int64)
        slots = np.maximum.accumulate(home - rank) + rank
        inside = slots < capacity
        hashes = np.zeros(capacity, dtype=np.int64)
        firsts = np.zeros(capacity, dtype=np.uint32)
        hashes[slots[inside]] = keys[inside]
        firsts[slots[inside]] = lines[inside]
        for key, line in zip(keys[~inside].tolist(), lines[~inside].tolist()):
            i = 0
            while hashes[i]:
                i += 1
            hashes[i] = key
            firsts[i] = line
        self._hashes = array("q", hashes.tobytes())
        self._lines = array(_UINT32, firsts.tobytes())
        self._mask = mask


_UINT32 = "L" if array("L").itemsize == 4 else "I"
