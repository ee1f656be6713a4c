"""Per-partition offset bookkeeping for at-least-once delivery.

A message is *done* when every one of its sampled frames is written to Redis (or it went to
the dead-letter topic, or it had nothing to score). The committable offset of a partition is
one past the highest offset below which every polled message is done, so a commit never
passes unwritten work, whatever order the pipeline finishes messages in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class PartitionOffsets:
    pending: deque[int] = field(default_factory=deque)  # polled, in offset order
    done: set[int] = field(default_factory=set)
    committed: int | None = None  # the next offset to read, as last committed

    def add(self, offset: int) -> None:
        if self.pending and offset <= self.pending[-1]:
            raise ValueError(f"offset {offset} polled out of order (after {self.pending[-1]})")
        self.pending.append(offset)

    def mark_done(self, offset: int) -> None:
        self.done.add(offset)

    def ready(self) -> int | None:
        """The offset to commit (one past the done prefix), or None if nothing new is done."""
        last = None
        for offset in self.pending:
            if offset not in self.done:
                break
            last = offset
        return None if last is None else last + 1

    def acknowledge(self, committed: int) -> None:
        """The broker accepted ``committed``: forget everything below it."""
        while self.pending and self.pending[0] < committed:
            self.done.discard(self.pending.popleft())
        self.committed = committed

    @property
    def in_flight(self) -> int:
        return len(self.pending)


class OffsetTracker:
    """Offsets of every assigned partition; keys are (topic, partition)."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionOffsets] = {}

    def add(self, topic: str, partition: int, offset: int) -> None:
        self.partitions.setdefault((topic, partition), PartitionOffsets()).add(offset)

    def mark_done(self, topic: str, partition: int, offset: int) -> None:
        state = self.partitions.get((topic, partition))
        if state is not None:  # a revoked partition's late completion is ignored
            state.mark_done(offset)

    def committable(self) -> dict[tuple[str, int], int]:
        """Offsets ready to commit; call :meth:`acknowledge` once the commit succeeded."""
        ready = {}
        for key, state in self.partitions.items():
            offset = state.ready()
            if offset is not None:
                ready[key] = offset
        return ready

    def acknowledge(self, committed: dict[tuple[str, int], int]) -> None:
        for key, offset in committed.items():
            state = self.partitions.get(key)
            if state is not None:
                state.acknowledge(offset)

    def forget(self, topic: str, partition: int) -> None:
        self.partitions.pop((topic, partition), None)

    @property
    def in_flight(self) -> int:
        return sum(state.in_flight for state in self.partitions.values())
