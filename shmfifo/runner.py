"""The paced, signal-aware loop that the producer and consumer commands share.

The lab runs each step as delayed work on a workqueue; here a process runs a loop with
absolute deadlines (pacing.py) and does every item due at each wake-up. SIGTERM and SIGINT
(the lab's rmmod) only set a flag and ask the handle to stop: a blocked put or get returns
within one wait slice holding nothing, the loop ends, the entry is freed and the process
prints its summary and exits 0.
"""

import signal
import time

from .errors import FifoClosed, Stopped
from .pacing import Pacer
from .status import rate_text

__all__ = ["Runner", "STOP_SIGNALS", "STOP_SIGNAL_NAMES"]

# What stops a producer or consumer cleanly: kill, Ctrl-C, and a closed terminal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_SIGNAL_NAMES = frozenset(signal.Signals(s).name for s in STOP_SIGNALS)
# How often the loop checks that the daemon is still there (one fcntl per check).
DAEMON_CHECK_INTERVAL = 1.0


class Runner:
    """Run ``step(fifo, n) -> done`` at the handle's configured rate until stopped.

    ``step`` does up to ``n`` items (blocking as needed) and returns how many it did.
    """

    def __init__(self, fifo, step, *, count=None, log, max_batch=None, waited=None):
        self.fifo = fifo
        # Seconds spent so far waiting for something other than the FIFO (input on stdin):
        # a stall too, after which the schedule restarts rather than bursts.
        self.waited = waited or (lambda: 0.0)
        self.step = step
        self.count = count
        self.log = log
        self.done = 0
        self.stop_reason = None
        self._stopping = False
        self._handlers_installed = False
        self.max_batch = max_batch or fifo.batch_max
        self.started = time.monotonic()

    def install_signal_handlers(self):
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        self._handlers_installed = True

    @property
    def stopping(self):
        return self._stopping

    def finish(self, reason):
        """End the loop after this step (from ``step``: its input has ended)."""
        if not self._stopping:
            self._stopping = True
            self.stop_reason = reason

    def _on_signal(self, signum, frame):
        # Never raise here: a handler that raises inside a semaphore wait leaks the token.
        self._stopping = True
        self.stop_reason = signal.Signals(signum).name
        self.fifo.request_stop()

    def run(self):
        fifo = self.fifo
        pacer = Pacer(fifo.rate, max_batch=self.max_batch,
                      stop=lambda: self._stopping or fifo.rate != pacer.rate)
        next_check = time.monotonic() + DAEMON_CHECK_INTERVAL
        daemon_gone = False
        while not self._stopping:
            if fifo.rate != pacer.rate:
                self.log.info("rate changed to %s", rate_text(fifo.rate))
                pacer.set_rate(fifo.rate)
            n = pacer.wait()
            if n == 0:
                continue
            if self.count is not None:
                n = min(n, self.count - self.done)
            blocked = fifo.blocked_s + self.waited()
            try:
                did = self.step(fifo, n)
            except Stopped as stop:
                # put_many may have committed part of a batch before it was stopped (the
                # error's ``put`` says how many): those are in the FIFO and count.
                self.done += getattr(stop, "put", 0)
                break
            except FifoClosed as closed:
                self.done += getattr(closed, "put", 0)
                self.stop_reason = "the FIFO is shutting down"
                break
            now = time.monotonic()
            # only waits for a slot or an item count as a stall, not lock contention
            pacer.done(did, stalled_for=fifo.blocked_s + self.waited() - blocked)
            self.done += did
            if self.count is not None and self.done >= self.count:
                self.stop_reason = f"count {self.count} reached"
                break
            if now >= next_check:
                next_check = now + DAEMON_CHECK_INTERVAL
                alive = fifo.daemon_alive()
                if not alive and not daemon_gone:
                    self.log.warning("the daemon of FIFO %r is gone; carrying on (restart it "
                                     "with: shmfifo fifo --name %s)", fifo.name, fifo.name)
                elif alive and daemon_gone:
                    self.log.info("a daemon of FIFO %r is running again", fifo.name)
                daemon_gone = not alive
        if self._handlers_installed:
            # The loop is over: a second SIGTERM must not kill the exit half-way (and Python
            # resets handlers other than SIG_IGN to the default while it shuts down).
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
        return self.done

    def elapsed(self):
        return time.monotonic() - self.started

