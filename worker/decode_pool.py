"""The decode pool: processes running :func:`framewatch.worker.decode.decode_segment`, supervised.

FFmpeg runs on hostile bytes, so a decode process may crash (a bug hit by an input, the OOM
killer) or hang (a decoder stuck in a loop, where the in-process time check between frames is
never reached). The supervisor's promises (docs/reliability.md):

- **Only the guilty message is blamed for a crash.** At most ``workers + 1`` jobs are handed to the
  executor at a time (the rest wait here), so a crash concerns only those. Each of them counts
  the crash; one that crashed twice is run again *alone*, and a job that crashes the pool while
  alone, having crashed before, is the culprit: it is reported as failed (``decoder-crash``),
  the others are decoded again. Two unrelated crashes (an operator's ``kill``) therefore cost a
  few messages a re-decode, never a dead letter of good ones.
- **A real time limit.** A job that has been executing for ``max_decode_seconds`` + ``kill_grace_s``
  has its pool's processes killed (SIGKILL: a stuck decoder ignores SIGTERM) and is reported as
  failed (``decode-timeout``); the others in the pool are decoded again, unblamed.
- **A broken pool never reaches the caller**: it is rebuilt, whether the crash shows in a result or
  at submission.
- :meth:`DecodePool.close` kills the processes, so a shutdown never waits on a stuck decoder.

Per-message state stays in memory: a worker restart starts the count again, which at-least-once
makes safe (the message is decoded again, and blamed again if it is guilty).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framewatch.worker.decode import DecodeError, DecodeRequest, DecodeResult, decode_segment

ERROR_CRASH = "decoder-crash"
ERROR_TIMEOUT = "decode-timeout"


@dataclass(eq=False)
class DecodeJob:
    request: DecodeRequest
    future: cf.Future[DecodeResult] | None = None
    crashes: int = 0
    solo_crashes: int = 0
    submitted_at: float | None = None
    started_at: float | None = None  # when a process took it (estimated: see DecodePool._mark_started)
    failure: DecodeError | None = None  # set by the supervisor: the job is over, and failed
    cancelled: bool = False

    @property
    def suspect(self) -> bool:
        return self.crashes >= 2

    def finished(self) -> bool:
        """Whether :meth:`outcome` has an answer (a result, a decode error, or the supervisor's verdict)."""
        if self.failure is not None:
            return True
        future = self.future
        if future is None or not future.done() or future.cancelled():
            return False
        return not isinstance(future.exception(), cf.process.BrokenProcessPool)

    def outcome(self) -> DecodeResult:
        """The decoded frames; raises the job's :class:`DecodeError`."""
        if self.failure is not None:
            raise self.failure
        assert self.future is not None
        return self.future.result()


def _decoder_process_init(max_memory_mb: int = 0) -> None:
    # Ctrl-C and SIGTERM reach the whole process group; decoders must outlive them so the parent
    # can drain, and the parent ends them itself (SIGKILL in DecodePool.close).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if max_memory_mb:
        import resource

        # A decompression bomb then fails its allocation (an FFmpeg error or MemoryError, hence a
        # dead letter) instead of taking the host's memory.
        limit = max_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class DecodePool:
    def __init__(self, workers: int, max_memory_mb: int = 0, max_decode_seconds: float = 20.0, kill_grace_s: float = 5.0,
                 fn: Callable[[DecodeRequest], DecodeResult] = decode_segment, clock: Callable[[], float] = time.monotonic,
                 on_event: Callable[..., None] | None = None, spawn_allowance_s: float = 5.0) -> None:
        self.workers = workers
        self.max_memory_mb = max_memory_mb
        self.time_limit = max_decode_seconds + kill_grace_s
        self.fn = fn
        self.clock = clock
        self.on_event = on_event or (lambda event, **fields: None)
        self.waiting: deque[DecodeJob] = deque()
        self.submitted: list[DecodeJob] = []  # in submission order
        self.crashes = 0
        self.timeouts = 0
        self._last_done_at = clock()
        self.closed = False
        # A new executor spawns its processes (importing PyAV) on first use: the first jobs'
        # clocks start once they can have started, not while Python starts.
        self.spawn_allowance_s = spawn_allowance_s
        self.executor = self._new_executor()

    def _new_executor(self) -> cf.ProcessPoolExecutor:
        self._ready_at = self.clock() + self.spawn_allowance_s
        return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_decoder_process_init, initargs=(self.max_memory_mb,))

    # --- the caller's side ---------------------------------------------------------------

    def add(self, job: DecodeJob) -> None:
        if self.closed:
            return
        self.waiting.append(job)
        self._feed()

    def cancel(self, job: DecodeJob) -> None:
        """The job's message is no longer ours (a revoked partition): forget it."""
        job.cancelled = True
        with contextlib.suppress(ValueError):
            self.waiting.remove(job)
        if job.future is not None:
            job.future.cancel()

    @property
    def in_flight(self) -> int:
        return len(self.waiting) + len(self.submitted)

    def pump(self) -> list[DecodeJob]:
        """Supervise and feed the executor; returns the jobs that failed by the supervisor's
        verdict (crash culprits, timeouts) since the last call, with ``failure`` set."""
        if self.closed:
            return []
        failed: list[DecodeJob] = []
        now = self.clock()
        still: list[DecodeJob] = []
        broken = False
        for job in self.submitted:
            future = job.future
            assert future is not None
            if job.cancelled:
                # A revoked message's decode that already runs still holds its process: it stays
                # counted (and watched) until it ends, but is never retried or blamed.
                if not future.done():
                    still.append(job)
                continue
            if future.done():
                if isinstance(future.exception(), cf.process.BrokenProcessPool):
                    broken = True
                    still.append(job)
                else:
                    self._last_done_at = max(self._last_done_at, now)
                continue
            still.append(job)
        self.submitted = still
        if broken:
            failed += self._crashed()
        else:
            self._mark_started(now)
            overdue = next((j for j in self.submitted if j.started_at is not None and now - j.started_at > self.time_limit), None)
            if overdue is not None:
                failed += self._timed_out(overdue)
        self._feed()
        return failed

    def close(self) -> None:
        """Stop at once: queued work is dropped and the processes are killed (a stuck decoder
        ignores SIGTERM, and joining it would hang the shutdown). Nothing is started after it."""
        self.closed = True
        self.waiting.clear()
        self._kill_executor()

    # --- supervision -------------------------------------------------------------------

    def _mark_started(self, now: float) -> None:
        # The executor runs jobs in submission order, one per process: the first `workers` jobs
        # not yet done are executing, since the later of their submission and the last completion.
        for job in self.submitted[: self.workers]:
            if job.started_at is None:
                job.started_at = max(job.submitted_at or now, self._last_done_at, self._ready_at)

    def _crashed(self) -> list[DecodeJob]:
        self.crashes += 1
        involved = self.submitted
        alone = len(involved) == 1
        self.submitted = []
        self._kill_executor()
        self.executor = self._new_executor()
        failed = []
        retry = []
        for job in involved:
            if job.cancelled:
                continue
            job.crashes += 1
            job.solo_crashes += int(alone)
            job.future = None
            job.started_at = None
            if alone and job.crashes >= 2:
                job.failure = DecodeError(ERROR_CRASH, f"the decoder process crashed {job.crashes} times on this message, "
                                                       "the last time decoding it alone")
                failed.append(job)
            else:
                retry.append(job)
        self.waiting.extendleft(reversed(retry))
        self.on_event("decoder crashed", involved=len(involved), alone=alone, blamed=len(failed))
        return failed

    def _timed_out(self, culprit: DecodeJob) -> list[DecodeJob]:
        self.timeouts += 1
        involved = self.submitted
        self.submitted = []
        self._kill_executor()
        self.executor = self._new_executor()
        retry = [job for job in involved if job is not culprit and not job.cancelled]
        for job in involved:
            job.future, job.started_at = None, None
        culprit.failure = DecodeError(ERROR_TIMEOUT, f"decoding ran past {self.time_limit:.0f} s (decode.max_decode_seconds "
                                                     "+ the kill grace); the decode process was killed")
        self.waiting.extendleft(reversed(retry))
        self.on_event("decode timed out: decode processes killed", retried=len(retry))
        return [culprit]

    def _feed(self) -> None:
        suspects = any(job.suspect for job in self.waiting) or any(job.suspect for job in self.submitted)
        while self.waiting:
            if suspects:
                # Isolation: a job that crashed twice runs alone, so a third crash has one culprit.
                if self.submitted:
                    return
                job = next((j for j in self.waiting if j.suspect), self.waiting[0])
                self.waiting.remove(job)
                self._submit(job)
                return
            if len(self.submitted) >= self.workers + 1:
                return
            self._submit(self.waiting.popleft())

    def _submit(self, job: DecodeJob) -> None:
        job.submitted_at, job.started_at = self.clock(), None
        self.submitted.append(job)
        try:
            job.future = self.executor.submit(self.fn, job.request)
        except (cf.process.BrokenProcessPool, RuntimeError):
            # The pool broke before this call saw it: a crash like any other, found next pump.
            broken: cf.Future[DecodeResult] = cf.Future()
            broken.set_exception(cf.process.BrokenProcessPool("the decode pool was broken at submission"))
            job.future = broken

    def _kill_executor(self) -> None:
        executor = self.executor
        processes: dict[int, Any] = dict(getattr(executor, "_processes", None) or {})
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            with contextlib.suppress(Exception):
                process.kill()
        for process in processes.values():
            with contextlib.suppress(Exception):
                process.join(timeout=5)
