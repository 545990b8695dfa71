"""Background prefetch of a deterministic producer: ``produce(state) -> (item, next_state)``.

A daemon thread runs the producer ahead from a private copy of the state and queues ``(item, next_state)``
pairs; the consumer adopts ``next_state`` only when it takes the item, so the consumer's state always
reflects the items handed out, never the ones prepared. An exception in the producer is re-raised by
:meth:`Prefetcher.get`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

S = TypeVar("S")


class Prefetcher(Generic[S]):
    def __init__(self, produce: Callable[[S], tuple[Any, S]], state: S, depth: int):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(produce, state), name="pretrain-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, produce: Callable[[S], tuple[Any, S]], state: S) -> None:
        while not self._stop.is_set():
            try:
                item, state = produce(state)
                entry = ("ok", item, state)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                entry = ("error", exc, None)
            while not self._stop.is_set():
                try:
                    self._queue.put(entry, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if entry[0] == "error":
                return

    def get(self) -> tuple[Any, S]:
        while True:
            try:
                kind, item, state = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the prefetch thread stopped without a result") from None
        if kind == "error":
            self.close()
            raise item
        return item, state

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)
