"""Where the seconds of a run go: named phases that add up to the wall time.

One :class:`PhaseTimer` per command (``train.py``, ``predict.py``, ``map.py``). Code marks a step in one line,
``with phase("filter"): ...``; the time goes to the innermost open phase (a phase inside another pauses the outer
one), and whatever runs inside no phase is ``other``. So the phases always add up to the wall time, and ``other``
says how much is not accounted for. ``phase`` does nothing when no timer is active (a library call, a test).

On a GPU the timer synchronises the device at each phase boundary (``sync``), so that queued kernels are counted
in the phase that queued them; phases are coarse (a few per epoch), so these synchronisations cost nothing that
matters.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

OTHER = "other"
#: the interpreter, the imports, Hydra's composition and the preflight: from the process's start to the command
LAUNCH = "launch"
T = TypeVar("T")


class PhaseTimer:
    """Seconds per named phase, exclusive (nested phases pause their parent); ``other`` takes the rest.

    Only the thread that created the timer records; calls from other threads (worker pools) are ignored."""

    def __init__(self, sync: Callable[[], None] | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.sync, self.clock = sync, clock
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # things counted beside the seconds (e.g. images through training steps)
        # (end, phase) of every stretch in order, on ``clock``: which phase ran when (e.g. to place GPU samples)
        self.timeline: list[tuple[float, str]] = []
        self._stack: list[str] = []
        self._owner = threading.get_ident()
        self._started = self._mark = clock()

    def _switch(self) -> None:
        if self.sync is not None:
            self.sync()
        now = self.clock()
        current = self._stack[-1] if self._stack else OTHER
        self.seconds[current] = self.seconds.get(current, 0.0) + now - self._mark
        if self.timeline and self.timeline[-1][1] == current:  # one stretch, however often it was switched
            self.timeline[-1] = (now, current)
        elif now > self._mark:  # an empty stretch places nothing
            self.timeline.append((now, current))
        self._mark = now

    def _mine(self) -> bool:
        return threading.get_ident() == self._owner

    def start(self, name: str) -> None:
        """Open phase ``name`` (inside the current one, which pauses)."""
        if self._mine():
            self._switch()
            self._stack.append(name)

    def stop(self, name: str) -> None:
        """Close phase ``name`` (and any phase opened inside it and left open)."""
        if not self._mine() or name not in self._stack:
            return
        self._switch()
        while self._stack and self._stack.pop() != name:
            pass

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to the count ``name`` (reported beside the phases: a rate is a count over a phase's seconds)."""
        if self._mine():
            self.counts[name] = self.counts.get(name, 0) + int(n)

    @property
    def current(self) -> str:
        return self._stack[-1] if self._stack else OTHER

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    @contextmanager
    def activate(self) -> Iterator[PhaseTimer]:
        """Make this the timer that :func:`phase` records into, for the duration of the block."""
        global _active
        previous, _active = _active, self
        try:
            yield self
        finally:
            _active = previous

    def add_before(self, name: str, seconds: float | None) -> None:
        """Count ``seconds`` that passed before this timer started (e.g. the process's launch) as phase ``name``,
        and in the wall time."""
        if seconds is not None and seconds > 0:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self._started -= seconds

    def wall(self) -> float:
        return self.clock() - self._started

    def report(self) -> dict[str, Any]:
        """``wall_seconds``, ``phases`` (seconds per phase, in the order they first ran, ``other`` last; they add up
        to the wall time) and ``counts`` (:meth:`count`)."""
        if self._mine():
            self._switch()
        phases = {k: round(v, 3) for k, v in self.seconds.items() if k != OTHER}
        phases[OTHER] = round(self.seconds.get(OTHER, 0.0), 3)
        return {"wall_seconds": round(self._mark - self._started, 3), "phases": phases, "counts": dict(self.counts)}


_active: PhaseTimer | None = None


def process_age() -> float | None:
    """Seconds since this process started (None where the system does not say). On Linux from ``/proc`` to the
    clock tick (the start time and the uptime both count from the boot); elsewhere from psutil, whose start time
    counts from a boot time rounded to the second."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
            age = float(uptime.read().split()[0]) - started / os.sysconf("SC_CLK_TCK")
        if age >= 0:  # a container's own uptime (LXCFS) does not count from the host's boot: psutil then
            return age
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # psutil missing or refused: the launch is not counted
        return None


def active_timer() -> PhaseTimer | None:
    """The timer :func:`phase` records into, if any."""
    return _active


def phase(name: str) -> Any:
    """``with phase("filter"): ...``: the block's seconds go to ``name`` in the active timer (no-op without one)."""
    return _active.phase(name) if _active is not None else nullcontext()


def timed(name: str, iterable: Iterable[T]) -> Iterator[T]:
    """``iterable``'s items, the seconds spent producing each (e.g. reading a scene's rows) in phase ``name``."""
    items = iter(iterable)
    while True:
        with phase(name):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


def timing_report() -> dict[str, Any] | None:
    """The active timer's :meth:`PhaseTimer.report` so far, or None without one."""
    return _active.report() if _active is not None else None


def add_phases(total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """Seconds per phase of two timings summed (e.g. the invocations of one resumed run)."""
    out = dict(total)
    for name, seconds in more.items():
        out[name] = round(out.get(name, 0.0) + seconds, 3)
    if OTHER in out:  # other stays last
        out[OTHER] = out.pop(OTHER)
    return out


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Two timings' counts (:meth:`PhaseTimer.count`) summed."""
    out = dict(total)
    for name, n in more.items():
        out[name] = out.get(name, 0) + n
    return out


def phase_table(phases: dict[str, float], wall: float) -> list[tuple[str, float, float]]:
    """(phase, seconds, share of the wall) rows, the largest first, ``other`` last."""
    rows = sorted(((k, v) for k, v in phases.items() if k != OTHER), key=lambda kv: -kv[1])
    rows.append((OTHER, phases.get(OTHER, 0.0)))
    return [(k, v, v / wall if wall > 0 else 0.0) for k, v in rows]
