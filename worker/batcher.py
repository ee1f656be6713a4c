"""Cross-stream dynamic batching, with Triton's semantics: a batch leaves when it holds
``max_batch`` frames or ``max_delay_ms`` after its first frame arrived, whichever is first."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DynamicBatcher(Generic[T]):
    def __init__(self, max_batch: int, max_delay_ms: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self._items: deque[tuple[float, T]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._clock = clock

    def put(self, item: T) -> None:
        with self._cond:
            self._items.append((self._clock(), item))
            if len(self._items) >= self.max_batch or len(self._items) == 1:
                self._cond.notify_all()

    def close(self) -> None:
        """No more items: pending ones are still handed out, immediately."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def drop(self, predicate: Callable[[T], bool]) -> int:
        """Remove queued items (a revoked partition's); returns how many."""
        with self._cond:
            kept = deque(entry for entry in self._items if not predicate(entry[1]))
            dropped = len(self._items) - len(kept)
            self._items = kept
            return dropped

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def next_batch(self, timeout: float | None = None) -> list[T] | None:
        """Block until a batch is due; None when ``timeout`` passes with nothing queued or when closed and empty."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            first_at = self._items[0][0]
            while len(self._items) < self.max_batch and not self._closed:
                remaining = first_at + self.max_delay - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(self.max_batch, len(self._items))
            return [self._items.popleft()[1] for _ in range(count)]
