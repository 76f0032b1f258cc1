"""Remembering records by a 64-bit hash, in 12 bytes per slot, to report duplicates.

A Python set of ints costs about 80 bytes per record; this open-addressing
table of two flat arrays (hash, first line) costs 12 bytes per slot at most
twice the records. Past `limit` distinct records it stops remembering new ones
(they are still compared with those remembered), so memory stays bounded on
any file: the default 4 million records stay under ~100 MB.

Records are looked up in batches: a duplicate is only a warning, so the
scanner can hand over thousands of hashes at once, and numpy probes the table
for all of them in a few passes instead of a Python loop per record. Small
batches (a small file) take the Python loop and spare importing numpy.
"""

from __future__ import annotations

from array import array

_UINT32 = "L" if array("L").itemsize == 4 else "I"
_MAX_LINE = 4294967295  # lines are kept as uint32
_NUMPY_BATCH = 512  # batches at least this large are probed with numpy
_WINDOW = 8  # slots numpy looks at per key and pass
_REHASH_BATCH = 1 << 16  # old slots moved to a grown table per numpy pass


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

    def first_lines(self, keys: array, lines: array) -> list[tuple[int, int]]:
        """(line, first line) for each record whose hash was seen before, in order.

        The same as looking each (key, line) up one after another: a new hash
        is remembered with its line while there is room, so a later record
        with it, in this batch or a later one, is its duplicate. `keys` and
        `lines` are int64 arrays.
        """
        if len(keys) < _NUMPY_BATCH:
            return [
                (line, earlier)
                for key, line in zip(keys, lines)
                if (earlier := self._first_line(key, line))
            ]
        return self._first_lines_numpy(keys, lines)

    def save_sorted(self, keys_path: str, lines_path: str) -> None:
        """The remembered hashes in ascending order (int64) and their first lines (uint32), as
        two raw files: what parallel.py merges across processes (12 bytes a record)."""
        import numpy as np

        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        used = np.flatnonzero(hashes)
        keys = hashes[used]
        order = np.argsort(keys)
        keys[order].tofile(keys_path)
        del keys
        np.frombuffer(self._lines, dtype=np.uint32)[used[order]].tofile(lines_path)

    def _first_line(self, key: int, line: int) -> int:
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
        self._lines[i] = min(line, _MAX_LINE)
        self.size += 1
        if self.size * 3 > self._mask * 2:
            self._grow(1)
        return 0

    def _first_lines_numpy(self, keys: array, lines: array) -> list[tuple[int, int]]:
        import numpy as np

        keys = np.frombuffer(keys, dtype=np.int64).copy()
        keys[keys == 0] = 1  # 0 marks an empty slot
        lines = np.frombuffer(lines, dtype=np.int64)
        earlier = self._lookup(keys)
        new = np.flatnonzero(earlier == 0)
        if len(new) <= self.limit - self.size:
            earlier[new] = self._insert(keys[new], lines[new])
        else:
            # Near the limit: only the first new hashes (by place in the batch) are kept.
            unique, first, inverse = np.unique(keys[new], return_index=True, return_inverse=True)
            kept = np.argsort(first, kind="stable")[: max(0, self.limit - self.size)]
            is_kept = np.zeros(len(unique), dtype=bool)
            is_kept[kept] = True
            # A later copy in the batch of a kept hash is a duplicate of its first place.
            again = is_kept[inverse] & (np.arange(len(new)) != first[inverse])
            earlier[new[again]] = lines[new[first[inverse[again]]]]
            kept_places = new[first[kept]]
            self._insert(keys[kept_places], lines[kept_places])
        found = np.flatnonzero(earlier)
        return list(zip(lines[found].tolist(), earlier[found].tolist()))

    def _lookup(self, keys):
        """The first line remembered for each key, 0 where none: linear probing, all keys at once.

        Each pass looks at the next _WINDOW slots of every key still probing,
        so a batch takes a few passes however long its longest probe is.
        """
        import numpy as np

        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        firsts = np.frombuffer(self._lines, dtype=np.uint32)
        result = np.zeros(len(keys), dtype=np.int64)
        pending = np.arange(len(keys))
        slots = keys & self._mask
        steps = np.arange(_WINDOW)
        while len(pending):
            window = (slots[:, None] + steps) & self._mask
            held = hashes[window]
            hit = held == keys[pending][:, None]
            stop = hit | (held == 0)  # the key, or an empty slot: it is not there
            rows = np.flatnonzero(stop.any(axis=1))
            at = stop[rows].argmax(axis=1)
            found = hit[rows, at]
            result[pending[rows[found]]] = firsts[window[rows[found], at[found]]]
            going_on = np.ones(len(pending), dtype=bool)
            going_on[rows] = False
            pending = pending[going_on]
            slots = (slots[going_on] + _WINDOW) & self._mask
        return result

    def _insert(self, keys, lines):
        """Adds keys not in the table, each at its first free slot; a later copy of a key in
        `keys` is not added. Returns, per key, 0, or for a copy the line of its first.
        """
        import numpy as np

        if (self.size + len(keys)) * 3 > self._mask * 2:
            self._grow(-(-(self.size + len(keys)) * 3 // 2))
        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        firsts = np.frombuffer(self._lines, dtype=np.uint32)
        lines = np.minimum(lines, _MAX_LINE).astype(np.uint32)
        earlier, placed = _place(hashes, firsts, self._mask, keys, lines)
        self.size += placed
        return earlier

    def _grow(self, slots_needed: int) -> None:
        """At least twice the slots (and more than `slots_needed`), filled with numpy.

        The old table's keys move over a batch at a time, so what growing
        costs beyond the old and the new table is one batch: at the 4-million
        record limit the table is 96 MB, and growing to it needs 144 MB.
        """
        import numpy as np

        capacity = 2 * (self._mask + 1)
        while capacity <= slots_needed:
            capacity *= 2
        old_hashes = np.frombuffer(self._hashes, dtype=np.int64)
        old_firsts = np.frombuffer(self._lines, dtype=np.uint32)
        # `array * n` allocates the zeros once (no temporary bytes object of the same size).
        self._hashes = array("q", [0]) * capacity
        self._lines = array(_UINT32, [0]) * capacity
        self._mask = capacity - 1
        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        firsts = np.frombuffer(self._lines, dtype=np.uint32)
        for start in range(0, len(old_hashes), _REHASH_BATCH):
            keys = old_hashes[start : start + _REHASH_BATCH]
            used = np.flatnonzero(keys)
            if len(used):
                batch_firsts = old_firsts[start : start + _REHASH_BATCH][used]
                _place(hashes, firsts, self._mask, keys[used], batch_firsts)


def _place(hashes, firsts, mask: int, keys, lines):
    """Linear probing for a batch of keys at once: each key not in the table goes to its first
    free slot (a later copy of a key in `keys` is not added). Returns, per key, 0 or, for a key
    found, its first line; and how many keys were placed.
    """
    import numpy as np

    earlier = np.zeros(len(keys), dtype=np.int64)
    placed = 0
    pending = np.arange(len(keys))
    slots = keys & mask
    steps = np.arange(_WINDOW)
    while len(pending):
        window = (slots[:, None] + steps) & mask
        held = hashes[window]
        same = held == keys[pending][:, None]  # a copy placed before
        stop = same | (held == 0)
        rows = np.flatnonzero(stop.any(axis=1))
        at = stop[rows].argmax(axis=1)
        chosen = window[rows, at]
        copy = same[rows, at]
        earlier[pending[rows[copy]]] = firsts[chosen[copy]]
        # Keys that reach the same free slot: written last to first, so the first stays.
        free_rows, free_slots = rows[~copy], chosen[~copy]
        hashes[free_slots[::-1]] = keys[pending[free_rows[::-1]]]
        firsts[free_slots[::-1]] = lines[pending[free_rows[::-1]]]
        won = (hashes[free_slots] == keys[pending[free_rows]]) & (
            firsts[free_slots] == lines[pending[free_rows]]
        )
        placed += int(won.sum())
        # The others probe on: from the slot they lost (now taken), or past the window.
        slots = slots + _WINDOW
        slots[rows] = chosen
        going_on = np.ones(len(pending), dtype=bool)
        going_on[rows[copy]] = False
        going_on[free_rows[won]] = False
        pending = pending[going_on]
        slots = slots[going_on] & mask
    return earlier, placed
