"""Shared-memory slots through which tokenizer processes hand their blocks to the parent, unpickled.

Returning a tokenized block through the pool's pipe pickles its token arrays, writes them through the pipe,
reads them back and unpickles them into fresh memory: on two cores that cost the parent a third of a core
(docs/benchmarks/data_prep.md). Instead the parent makes one anonymous shared mapping before the workers
fork; a task carries the number of a free slot, the worker copies its columns into that slot and returns only
their sizes, and the parent reads the columns in place. A slot is handed out again only after the parent is
done with the block, so each slot's pages are touched once and reused.

Slot layout, per column in order: ``n`` int32 token values (padded to 8 bytes), then ``rows`` int64 lengths.
A block that does not fit its slot (far more tokens than bytes) comes back through the pipe as before.
"""

from __future__ import annotations

import mmap

import numpy as np

Columns = dict[str, tuple[np.ndarray, np.ndarray]]
Layout = list[tuple[str, int, int]]  # (column name, values, rows)


def _values_bytes(n: int) -> int:
    return (4 * n + 7) // 8 * 8


class ResultSlots:
    """``count`` slots of ``slot_bytes`` bytes each in one MAP_SHARED anonymous mapping (create before forking)."""

    def __init__(self, count: int, slot_bytes: int) -> None:
        if count < 1 or slot_bytes < 8:
            raise ValueError(f"need at least one slot of 8 bytes, got {count} x {slot_bytes}")
        self.count = count
        self.slot_bytes = slot_bytes // 8 * 8
        self._memory = mmap.mmap(-1, count * self.slot_bytes)  # shared with processes forked after this
        self._free = list(range(count - 1, -1, -1))

    # ------------------------------------------------------------------ parent side
    def acquire(self) -> int:
        if not self._free:
            raise RuntimeError("no free result slot: more blocks in flight than slots")
        return self._free.pop()

    def release(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def free(self) -> int:
        return len(self._free)

    def load(self, slot: int, layout: Layout) -> Columns:
        """Views of the columns a worker stored in ``slot`` (valid until the slot is released)."""
        columns, offset = {}, 0
        for name, n, rows in layout:
            values = self._array(slot, offset, np.int32, n)
            offset += _values_bytes(n)
            columns[name] = (values, self._array(slot, offset, np.int64, rows))
            offset += 8 * rows
        return columns

    # ------------------------------------------------------------------ worker side
    def store(self, slot: int, columns: Columns) -> Layout | None:
        """Copy ``columns`` into ``slot``; their layout, or None when they do not fit (send them otherwise)."""
        need = sum(_values_bytes(len(values)) + 8 * len(lengths) for values, lengths in columns.values())
        if need > self.slot_bytes:
            return None
        layout, offset = [], 0
        for name, (values, lengths) in columns.items():
            self._array(slot, offset, np.int32, len(values))[:] = values
            offset += _values_bytes(len(values))
            self._array(slot, offset, np.int64, len(lengths))[:] = lengths
            offset += 8 * len(lengths)
            layout.append((name, len(values), len(lengths)))
        return layout

    def _array(self, slot: int, offset: int, dtype, n: int) -> np.ndarray:
        return np.frombuffer(self._memory, dtype=dtype, count=n, offset=slot * self.slot_bytes + offset)
