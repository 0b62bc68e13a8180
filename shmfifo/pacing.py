"""Rate control for the producer and consumer loops: when is the next item due?

A producer started with ``rate=5`` must put five items per second, over an hour as over a second.
Three things make the obvious ``put(); sleep(1 / rate)`` loop wrong, and shape this module:

Drift.
    Every sleep oversleeps a little (timer slack, scheduling), and the work between sleeps takes
    time too; with relative sleeps those errors add up, so the achieved rate is always below the
    target and the gap grows with the run. Here the k-th item after a (re)start is due at the
    absolute time ``start + k / rate`` on the monotonic clock, and each sleep aims at the next
    deadline: a late wake-up is made up at the next one, and the long-run rate is exact.

Wake-up cost.
    Each timer wake-up costs tens of microseconds of CPU on these machines, so at 10,000 items/s
    one sleep per item would spend most of a core on waking up. A sleep therefore lasts at least
    ``min_sleep`` (about a millisecond), and ``wait()`` then reports *every* item that is due (a
    batch). At low rates, where a period is longer than ``min_sleep``, it sleeps exactly to the
    next deadline and the batch is one item.

Burst.
    Absolute deadlines have a trap: after the queue was full (or empty) for ten seconds, every
    item of those ten seconds is "due" at once, and the loop would fire them back to back. The
    kernel module this re-creates re-queues its work after each item, so its rate is an upper
    bound, never a promise to catch up. So after a stall longer than one period (and longer than
    ``slack``, so that ordinary jitter is still caught up rather than dropped) the schedule
    restarts from now. The caller reports how long its operation blocked (``done(n,
    stalled_for=...)``): count the waits for space or for an item (``empty``/``fill``), not a
    wait for a lock. A pause it cannot see, such as SIGSTOP, is found by ``wait()`` waking up
    more than ``max_lateness`` (0.1 s) late, and handled the same way. Preemption on a loaded
    machine (measured here: 10-30 ms with two CPUs busy) is shorter and is caught up; with the
    2 ms bound there as well, the achieved rate fell 5-7 % under load.

Usage, with the rate read from the client's entry in shared memory (the status tool may rewrite it
at any time, like a writable module parameter)::

    pacer = Pacer(rate, stop=lambda: stopping or entry.rate != pacer.rate)
    while not stopping:
        if entry.rate != pacer.rate:
            pacer.set_rate(entry.rate)
        n = pacer.wait()              # 0: interrupted by stop(); re-check and wait again
        if n:
            t0 = time.monotonic()
            done = fifo.put_many(items[:n])        # may block on a full queue
            pacer.done(done, stalled_for=time.monotonic() - t0)

The ``stop`` callable is polled before and during every sleep (in slices of at most
``STOP_POLL_INTERVAL``), so a loop at 0.01 items/s still exits, or picks up a new rate, within
0.1 s. Without ``stop`` a sleep is not sliced.

A Pacer belongs to one loop: it is not thread-safe. Time is injected (``clock``, ``sleep``) so the
scheduling can be tested with a fake clock, without real seconds.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

from .errors import UsageError

__all__ = [
    "Pacer",
    "parse_rate",
    "MIN_SLEEP",
    "STALL_SLACK",
    "MAX_LATENESS",
    "MAX_BATCH",
    "STOP_POLL_INTERVAL",
]

# A timer wake-up costs tens of µs of CPU; at one per millisecond that is a few percent of a core
# at any rate, and the batch lateness it adds (1 ms) is below what a user can see.
MIN_SLEEP = 0.001

# A reported block (queue full or empty) up to this long is jitter and is caught up; a longer one
# restarts the schedule (see "Burst" above). Well above the usual oversleep of a Linux timer
# (measured: 0.07 ms median, 0.15 ms p99) and below a stall anyone would notice.
STALL_SLACK = 0.002

# A wake-up up to this much later than batching intends is preemption and is caught up; a later
# one is an unreported pause (SIGSTOP) and restarts the schedule. Above the 10-30 ms preemptions
# measured on a busy two-CPU machine, and still short: at most 0.1 s of items come back to back.
MAX_LATENESS = 0.1

# Items one wait() may report, and what it reports in unlimited mode: large enough that a batch
# amortises a lock section and a wake-up, small enough that an item's in-flight record stays small.
MAX_BATCH = 64

# How long a sleep may go without polling stop(): the responsiveness of a slow loop to SIGTERM or
# to a new rate. Ten wake-ups a second cost nothing.
STOP_POLL_INTERVAL = 0.1

# The monotonic clock's resolution. A deadline this close counts as reached, so that a clock
# landing a float rounding error short of it does not ask for sleeps too short to advance it.
_EPSILON = 1e-9

_RATE_TEXT_ALLOWED = "use a positive number of items per second, or 'max' for unlimited"
_RATE_ALLOWED = "use a positive number of items per second, or None or math.inf for unlimited"
_SECONDS_ALLOWED = "use a finite number of seconds, 0 or more"


def parse_rate(text: str) -> Optional[float]:
    """Parse a command-line rate: ``"5"``, ``"0.5"``, ``"1e3"`` -> float; ``"max"`` -> None.

    None means unlimited (for benchmarks). Zero, negative numbers, nan, inf and anything that is
    not a number raise UsageError (a ValueError) saying what is allowed.
    """
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise UsageError("rate", text, _RATE_TEXT_ALLOWED)
    return value


def _check_rate(rate: Optional[float]) -> Optional[float]:
    """Return a valid rate as float, or None for unlimited (None or math.inf)."""
    if rate is None or rate == math.inf:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise UsageError("rate", rate, _RATE_ALLOWED)
    return float(rate)


class Pacer:
    """Says how many items are due, sleeping until at least one is.

    ``rate`` is items per second (a positive float, fractions allowed), or None / math.inf for
    unlimited. The schedule starts at the first ``wait()``: item 0 is due at once, item k at
    ``start + k / rate``.

    ``stop``, if given, is polled before and during each sleep; ``wait()`` returns 0 as soon as it
    returns true. ``min_sleep``: the shortest sleep, so that at high rates one wake-up serves a
    batch. ``slack``: how long a block reported to ``done()`` may last and still be caught up.
    ``max_lateness``: how late beyond ``min_sleep`` a ``wait()`` may be and still be caught up.
    Either limit is at least one period (see the module docstring). ``max_batch``: the most items
    one ``wait()`` reports, and what it reports at once, without sleeping, when the rate is
    unlimited.
    """

    def __init__(
        self,
        rate: Optional[float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        stop: Optional[Callable[[], bool]] = None,
        min_sleep: float = MIN_SLEEP,
        slack: float = STALL_SLACK,
        max_lateness: float = MAX_LATENESS,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise UsageError("max_batch", max_batch, "use a whole number of items, 1 or more")
        for argument, seconds in [
            ("min_sleep", min_sleep), ("slack", slack), ("max_lateness", max_lateness)
        ]:
            if not (seconds >= 0 and math.isfinite(seconds)):
                raise UsageError(argument, seconds, _SECONDS_ALLOWED)
        self._clock = clock
        self._sleep = sleep
        self._stop = stop
        self._min_sleep = float(min_sleep)
        self._slack = float(slack)
        self._max_lateness = float(max_lateness)
        self._max_batch = max_batch
        self._rate: Optional[float] = None
        self._count = 0
        # The schedule: item k of it (counted from 0) is due at _start + k / _rate, and _k items
        # of it are done. None until the first wait(), so time spent attaching is not a backlog.
        self._start: Optional[float] = None
        self._k = 0
        self._apply_rate(_check_rate(rate))

    @property
    def rate(self) -> Optional[float]:
        """Items per second, or None when unlimited."""
        return self._rate

    @property
    def count(self) -> int:
        """Items reported by done() since construction; rate changes and restarts keep it."""
        return self._count

    def set_rate(self, rate: Optional[float]) -> None:
        """Change the rate from now on, without a burst and without a long gap.

        The schedule restarts at the moment of the change: the next item is due at its old
        deadline or one new period from now, whichever is sooner, but not in the past (items
        overdue at the change are not made up). So slowing down takes effect after the item
        already scheduled, and speeding up from 0.01/s does not wait out the old 100 s period.
        Setting the current rate again changes nothing.
        """
        new = _check_rate(rate)
        old = self._rate
        if new == old:
            return
        if self._start is not None and new is not None:
            now = self._clock()
            next_due = now if old is None else max(now, self._start + self._k / old)
            self._start = min(next_due, now + 1.0 / new)
            self._k = 0
        self._apply_rate(new)

    def wait(self) -> int:
        """Sleep until at least one item is due; return how many are due now (1..max_batch).

        Returns 0, possibly before the deadline, if ``stop()`` returned true; the schedule is
        unchanged, so calling again resumes it. Unlimited rate: returns max_batch at once.
        Items reported but not passed to done() stay due.
        """
        rate = self._rate
        if rate is None:
            return self._max_batch
        now = self._clock()
        if self._start is None:
            self._start, self._k = now, 0
        due_at = self._start + self._k / rate
        if due_at > now + _EPSILON:
            # At high rates the next item is due within microseconds: sleep min_sleep anyway
            # and report everything due by then, one wake-up per batch rather than per item.
            wake = max(due_at, now + self._min_sleep)
            while wake - now > _EPSILON:
                nap = wake - now
                if self._stop is not None:
                    if self._stop():
                        return 0
                    nap = min(nap, STOP_POLL_INTERVAL)
                self._sleep(nap)
                now = self._clock()
        if now - due_at > self._late_limit:
            # Woken (or called) far too late: a pause nobody reported. Start again from now
            # instead of firing the missed items back to back.
            self._start, self._k = now, 0
            return 1
        due = int((now + _EPSILON - self._start) * rate) + 1 - self._k
        return min(max(due, 1), self._max_batch)

    def done(self, n: int, *, stalled_for: float = 0.0) -> None:
        """Report n items done; ``stalled_for``: seconds the operation spent blocked.

        A block longer than one period and longer than ``slack`` (queue full or empty) is a
        stall: the schedule restarts so that the next item is due one period from now, instead
        of a burst of catch-up items. Shorter blocks are jitter and are caught up.
        """
        if n < 0:
            raise UsageError("n", n, "use a number of items done, 0 or more")
        self._count += n
        self._k += n
        if self._rate is not None and stalled_for > self._stall_limit:
            self._start, self._k = self._clock() + 1.0 / self._rate, 0

    def _apply_rate(self, rate: Optional[float]) -> None:
        self._rate = rate
        if rate is None:
            return
        period = 1.0 / rate
        self._stall_limit = max(period, self._slack)
        # At high rates each batch starts up to min_sleep late by design; only lateness beyond
        # that (and beyond one period) can be a pause rather than preemption.
        self._late_limit = max(period, self._min_sleep + self._max_lateness)
