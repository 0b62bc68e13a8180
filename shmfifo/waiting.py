"""Waiting apart from storing: how a client's operation waits, parks and gives up.

As in CPython's queue.py, the operations in ring.py touch the ring only with the right tokens
held; everything about *getting* those tokens when they are not there at once lives here: the
timed slices of a blocking wait (during which a waiter notices a stop, a shutdown or a
recovery), spinning before sleeping, parking through a recovery holding nothing, deadlines, and
the asyncio watchers' wait for a token that is given straight back.

:class:`Waiting` is the base of ring.Client and uses its words (``_w``, ``_e``), semaphores
and flags; it writes only the client's own phase and ack words.
"""

import os
import random
import threading
import time

import posix_ipc

from .errors import CorruptSegment, Empty, FifoClosed, Full, HandleClosed, Stopped, UsageError
from .layout import (BLOCKED_EMPTY, BLOCKED_FULL, BLOCKED_IN_FLIGHT, CORRUPT, DRAINING, E_ACK,
                     E_PHASE, GETTING, H_EPOCH, H_HEAD, H_STATE, H_TAIL, IDLE, PARKED, PUTTING,
                     RUNNING, STOPPED)

__all__ = ["Waiting", "Park", "WAIT_SLICE", "fence", "fence_acquire", "fence_release"]

# Longest single blocking wait: how quickly a waiter notices a stop, a shutdown or a recovery.
WAIT_SLICE = 0.05
# A waiter whose slice ends re-queues behind the others on the semaphore; with equal slices,
# two producers blocked on a full FIFO fall into a fixed phase and one of them wins nearly
# every freed slot (measured: 60 to 3). Random slice lengths make the winner random.
_slice = random.Random().uniform
SLICE_MIN, SLICE_MAX = 0.5 * WAIT_SLICE, 1.5 * WAIT_SLICE
# Polls of a semaphore's value before a blocking wait (about 0.05 us each).
SPIN = int(os.environ.get("SHMFIFO_SPIN", "400"))
# How often a parked client looks at the epoch again.
PARK_POLL = 0.001

_fence_lock = threading.Lock()
fence_acquire, fence_release = _fence_lock.acquire, _fence_lock.release


def fence():
    """A full memory barrier: acquiring a lock executes an atomic read-modify-write.
    (The hot paths inline these two calls.)"""
    fence_acquire()
    fence_release()


class Park(Exception):
    """Internal: a recovery started while this operation waited; it holds nothing now."""


class Waiting:
    """The waiting half of a client (see the module docstring)."""

    def request_stop(self):
        """Make a blocked or future operation of this client raise Stopped. Signal-safe."""
        self._stop = True

    def _stopped(self):
        """What ends an operation that was asked to stop: the handle's close, or a stop."""
        if self.closed:
            return HandleClosed(self.name)
        return Stopped(f"handle on FIFO {self.name!r} was asked to stop")

    def _refuse(self, for_put):
        """An operation may not start: say why (after going back to IDLE)."""
        self._w[self._e + E_PHASE] = IDLE
        if self._stop:
            raise self._stopped()
        raise self._closed()

    def _closed(self):
        """What the daemon's state word says when it lets no operation run."""
        state = self._w[H_STATE]
        if state in (RUNNING, DRAINING, STOPPED):
            return FifoClosed(self.name)
        if state == CORRUPT:
            return CorruptSegment(self.name, "its daemon marked it corrupt, its words "
                                             "contradicting each other (see the daemon's log)")
        return CorruptSegment(self.name, f"its state word holds {state}, which means nothing: "
                                         f"corrupt")

    def _idle(self):
        self._w[self._e + E_PHASE] = IDLE

    def _check_waiting(self, deadline, for_put):
        """Between two timed waits: raise what ends the wait, or return the next slice."""
        w = self._w
        if self._stop:
            raise self._stopped()
        if w[H_EPOCH] & 1:
            raise Park
        state = w[H_STATE]
        if state != RUNNING:
            if for_put or state != DRAINING or w[H_HEAD] == w[H_TAIL]:
                raise self._closed()
        slice_ = _slice(SLICE_MIN, SLICE_MAX)
        if deadline is None:
            return slice_
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return 0.0
        return min(remaining, slice_)

    def _wait_token(self, sem, deadline, blocked_phase, for_put):
        """Take one token of ``empty`` or ``fill`` after a failed try. If none comes by the
        deadline, or the wait ends otherwise (a stop, a recovery, a shutdown), leave the
        operation (phase IDLE) and raise Full / Empty or what ended it."""
        try:
            if self._await_token(sem, deadline, blocked_phase, for_put):
                return
        except BaseException:
            self._idle()
            raise
        self._idle()
        if for_put:   # (called while handling the failed try's BusyError: not its cause)
            raise Full(f"FIFO {self.name!r} is full ({self.capacity} items)") from None
        raise Empty(f"FIFO {self.name!r} is empty") from None

    def _await_token(self, sem, deadline, blocked_phase, for_put):
        """The waiting of _wait_token: True once a token is taken, False at the deadline."""
        if deadline is not None and deadline <= 0:
            return False                      # block=False: never wait
        # Spin briefly before sleeping: when the other side is running on another core, a
        # token usually arrives within microseconds, and a futex sleep plus wake-up costs
        # tens of them (and makes the releaser pay a wake-up system call).
        for _ in range(SPIN):
            if sem.value:
                try:
                    sem.acquire(0)
                    return True
                except posix_ipc.BusyError:
                    pass
        w = self._w
        phase = w[self._e + E_PHASE]
        w[self._e + E_PHASE] = blocked_phase
        started = time.monotonic()
        try:
            while True:
                timeout = self._check_waiting(deadline, for_put)
                if timeout <= 0:
                    return False
                try:
                    sem.acquire(timeout)
                    return True
                except (posix_ipc.BusyError, posix_ipc.SignalError):
                    pass
        finally:
            w[self._e + E_PHASE] = phase
            self.blocked_s += time.monotonic() - started

    def _wait_lock(self, lock, sem, held):
        """Take a lock after a failed try, holding ``held`` tokens of ``sem``.

        Nobody blocks while holding a lock, so this waits only on a dead holder, which a
        recovery will resolve: the wait ends by parking (or a stop), not by a deadline, and
        then the tokens are given back and the operation left.
        """
        try:
            for _ in range(SPIN):        # a lock is held for about a microsecond: spin first
                if lock.value:
                    try:
                        lock.acquire(0)
                        return
                    except posix_ipc.BusyError:
                        pass
            while True:
                if self._stop:
                    raise self._stopped()
                if self._w[H_EPOCH] & 1:
                    raise Park
                try:
                    lock.acquire(WAIT_SLICE)
                    return
                except (posix_ipc.BusyError, posix_ipc.SignalError):
                    pass
        except BaseException:
            for _ in range(held):
                sem.release()
            self._idle()
            raise

    def _park(self, deadline):
        """Hold nothing, acknowledge the recovery, and wait until it is over."""
        w, e = self._w, self._e
        epoch = w[H_EPOCH]
        if not epoch & 1:
            return True                 # the recovery ended before we got here
        w[e + E_ACK] = epoch
        w[e + E_PHASE] = PARKED
        started = time.monotonic()
        try:
            while w[H_EPOCH] == epoch:
                if self._stop:
                    raise self._stopped()
                if not RUNNING <= w[H_STATE] <= DRAINING:
                    raise self._closed()
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(PARK_POLL)
            return True
        finally:
            w[e + E_PHASE] = IDLE
            self.blocked_s += time.monotonic() - started

    def wait_ready(self, for_put, timeout, notify_fd):
        """Wait until a put (``for_put``) or a get would find a token, and hold nothing when
        returning: a token of ``empty``/``fill`` is taken by the protocol of an operation
        (phase, fence, epoch) and given straight back; then 8 bytes are written to
        ``notify_fd``. True if that happened within ``timeout`` seconds. For the asyncio
        watchers (aio.py). The C fast path waits without the GIL and writes the wake-up
        itself; a recovery or a state change is left to the Python code."""
        self._enter()
        try:
            fast = self._fast
            # A getter that must also find a ``loans`` token (an in-flight limit that can
            # bind) waits for it in Python, before the item: waking a coroutine for an item it
            # could not take would only make it wait again at once.
            if fast is not None and (for_put or not self._use_loans):
                deadline = time.monotonic() + timeout
                while not self._stop:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    done = fast.wait_ready(for_put, min(remaining, WAIT_SLICE), notify_fd)
                    if done:
                        return True
                    if done is None:
                        break                        # the Python code looks at why
                timeout = max(0.0, deadline - time.monotonic())
            if self._wait_ready(for_put, timeout):
                try:
                    os.write(notify_fd, b"\1\0\0\0\0\0\0\0")
                except (BlockingIOError, BrokenPipeError):
                    pass              # a wake-up is pending already, or the loop has gone
                return True
            return False
        finally:
            self._active.pop()

    def _wait_ready(self, for_put, timeout):
        """wait_ready's Python path: the same protocol, parking through a recovery."""
        w, e = self._w, self._e
        sems = [(self._empty, BLOCKED_FULL)] if for_put else (
            [(self._loans, BLOCKED_IN_FLIGHT)] if self._use_loans else []) + [
            (self._fill, BLOCKED_EMPTY)]
        deadline = time.monotonic() + timeout
        while True:
            w[e + E_PHASE] = PUTTING if for_put else GETTING
            fence_acquire()
            fence_release()
            try:
                if w[H_EPOCH] & 1:
                    raise Park
                state = w[H_STATE]
                if self._stop or not RUNNING <= state <= DRAINING or (for_put and
                                                                      state != RUNNING):
                    self._refuse(for_put)
                for sem, blocked in sems:      # each token taken, and given straight back
                    try:
                        sem.acquire(0)
                    except posix_ipc.BusyError:
                        if not self._await_token(sem, deadline, blocked, for_put):
                            self._idle()
                            return False
                    sem.release()
            except Park:
                self._idle()
                if not self._park(deadline):
                    return False
                continue
            except BaseException:
                self._idle()
                raise
            self._idle()
            return True

    @staticmethod
    def _deadline(block, timeout):
        if not block:
            return 0
        if timeout is None:
            return None
        if timeout < 0:
            raise UsageError("timeout", timeout, "use None, 0 or a positive number of seconds")
        return time.monotonic() + timeout
