"""The FIFO daemon: owner of the segment and semaphores (the lab's ``fifo.ko``).

The daemon is not in the data path: clients put and get through shared memory directly. It
creates the FIFO (or adopts one whose previous daemon died), watches the clients' leases,
runs a recovery when one dies, and on a stop tells producers to stop, lets consumers drain,
then removes every POSIX name (or keeps them, on request, for a later daemon to adopt).

A Python program can run it in-process::

    with shmfifo.serve("lab", capacity=64) as daemon:
        ...                          # other processes attach to "lab" here

``shmfifo fifo`` is a thin wrapper around :class:`FifoDaemon`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterator

from . import layout, lease, log as logs, names, table
from .errors import CorruptSegment, FifoExists, UsageError
from .notify import Notifier
from .layout import (CORRUPT, DRAINING, FREE, GETTING, H_BLOCKER, H_CREATED, H_DAEMON_PID,
                     H_DAEMON_START, H_DISCARDED, H_EPOCH, H_HEAD, H_MAGIC, H_RECOVERIES,
                     H_STATE, H_TAIL, PUTTING, RETURNED, ROLE_PRODUCER, RUNNING, STOPPED)
from .recovery import (Corrupt, Recovery, dead_entries, init_free_list, process_state,
                       ring_problem)
from .status import rate_text
from .table import Entry, process_start_ms
from .segment import Segment
from .sizes import parse_size

__all__ = ["FifoDaemon", "StopReport", "serve", "DEFAULTS", "forked", "geometry_for"]

DEFAULTS = {"capacity": 32, "item_size": 128, "max_clients": 32}
# A lock is held for microseconds; one seen taken on every look for this long is held by a
# client that does not run.
LOCK_REPORT_AFTER = 1.0
# The in-flight record of each entry holds this many slot numbers at most (a word each), so
# it is capped for large rings.
MAX_DEFAULT_BATCH = 64
# How often the STATUS= line for a service manager is brought up to date, at most.
STATUS_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class StopReport:
    """What a stopped daemon leaves behind."""

    name: str
    discarded: int        # items still queued when the names were removed
    kept: int             # items left in place for a later daemon (keep=True)
    unlinked: bool
    recoveries: int


class FifoDaemon:
    """Create or adopt a FIFO and keep it consistent until stopped.

    ``start()`` makes the FIFO usable (clients can attach as soon as it returns);
    ``serve_forever()`` watches the clients until ``request_stop()`` (thread- and
    signal-safe), then stops gracefully and returns a :class:`StopReport`.

    The FIFO (None: the default, or when adopting, what the existing FIFO has):

    capacity: items it holds (default 32; ``shmfifo fifo --size``).
    item_size: the largest item in bytes, after encoding (default 128): a number, or a string
        with a suffix K, M or G (powers of 1024) such as "64K" or "1M".
    max_clients: producers and consumers attached at once (default 32).
    batch_max: the largest ``get_many`` batch (default the capacity, at most 64).
    split_locks: separate put and take locks instead of the lab's single mutex.
    in_flight: how many items consumers may hold taken and not yet acknowledged, all
        together; each keeps its slot, so the pool has capacity + in_flight slots (default:
        every client a full batch, within a quarter of the queue's bytes or 1 MiB).
    mode: permissions of its POSIX objects (default 0o600, owner only; 0o660 shares them
        with the group).

    The daemon:

    keep: on stop, leave the FIFO with its items for a later daemon to adopt, instead of
        draining it and removing its names.
    drain_timeout: on stop, seconds consumers may take to drain what is left.
    detach_timeout: on stop, seconds clients may take to detach once told.
    kill_stopped: SIGKILL a stopped (SIGSTOP) client that blocks a recovery or holds a lock
        for this many seconds (default None: only report it).
    recovery: repair the FIFO when a client dies (False only for tests).
    poll: seconds between looks at the clients' leases.
    log: the logger to report to (default: shmfifo's ``fifo`` logger).
    notify: a :class:`~shmfifo.notify.Notifier` to tell a service manager (systemd) when the
        FIFO is ready, what it holds, that the daemon lives and when it stops; None: no one.
    """

    def __init__(self, name: str = names.DEFAULT_NAME, *, capacity: int | None = None,
                 item_size: int | str | None = None, max_clients: int | None = None,
                 batch_max: int | None = None, split_locks: bool | None = None,
                 in_flight: int | None = None,
                 mode: int = 0o600, keep: bool = False, drain_timeout: float = 5.0,
                 detach_timeout: float = 3.0, kill_stopped: float | None = None,
                 recovery: bool = True, poll: float = 0.05,
                 log: logging.Logger | None = None,
                 notify: Notifier | None = None) -> None:
        self.name = names.validate(name)
        if item_size is not None:
            item_size = parse_size(item_size)
        self._requested: dict = {"capacity": capacity, "item_size": item_size,
                                 "max_clients": max_clients, "batch_max": batch_max,
                                 "split_locks": split_locks, "in_flight": in_flight}
        for arg, value in (("size", capacity), ("item-size", item_size),
                           ("max-clients", max_clients), ("batch", batch_max),
                           ("in-flight", in_flight)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise UsageError(arg, value, "use a whole number")
        if not isinstance(mode, int) or not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
            raise UsageError("mode", f"{mode:o}" if isinstance(mode, int) else mode,
                             "use octal permissions that let the owner read and write, such "
                             "as 600 or 660")
        self.mode = mode
        self.keep = keep
        self.drain_timeout = drain_timeout
        self.detach_timeout = detach_timeout
        self.kill_stopped = kill_stopped
        self.recovery = recovery
        self.poll = poll
        self.log = log or logs.get("fifo")
        self.seg = None
        self.adopted = False
        self.report: StopReport | None = None    # serve() sets it when its block ends
        # A plain flag, not a threading.Event: request_stop() runs in signal handlers, and an
        # Event's lock may be held by the very thread the handler interrupted.
        self._stop = False
        self._known = {}          # entry index -> (pid, attached time, text), for the log
        self.corrupt = None       # what contradicted the geometry, once found
        self._suspect = None      # a contradiction seen on the last look only
        self._locked_since = None  # when a lock was first seen taken on every look since
        self._lock_reported = set()
        # A service manager to tell about readiness, status, liveness and stopping
        # (notify.Notifier), or None.
        self.notify = notify
        self._status_text = None
        self._next_status = self._next_watchdog = 0.0
        _daemons.add(self)

    # -- start ------------------------------------------------------------------------------

    def start(self) -> FifoDaemon:
        """Create the FIFO, or adopt an existing one whose daemon is dead."""
        geometry = geometry_for(**self._requested)
        seg = Segment.create(self.name, geometry, self.mode)
        if seg is not None:
            self.seg = seg
            # Another daemon starting at the same instant may hold the lease for a moment
            # (it finds no MAGIC yet and gives up): wait it out.
            deadline = time.monotonic() + 2.0
            while not lease.try_lock(seg.fd, lease.DAEMON_BYTE):
                if time.monotonic() > deadline:
                    seg.unlink()
                    self.close()
                    raise FifoExists(self.name)
                time.sleep(0.005)
            w = seg.words
            init_free_list(seg)
            w[H_CREATED] = time.time_ns()
            self._claim_daemon_words()
            w[H_MAGIC] = layout.MAGIC     # last: from here on the segment is valid
            return self
        self._adopt()
        return self

    def _adopt(self):
        # Only this user's objects, no wider than --mode: a FIFO that another user created
        # (or pre-created, to be adopted) is refused, never taken over.
        seg = self.seg = Segment.adopt(self.name, self.mode)
        if not lease.try_lock(seg.fd, lease.DAEMON_BYTE):
            pid = None
            try:
                probe = Segment.open(self.name, writable=False)
                pid = probe.words[H_DAEMON_PID]
                probe.close()
            except Exception:
                pass
            self.close()
            raise FifoExists(self.name, pid)
        try:
            seg.validate_for_adoption(self.mode)
            # A FIFO whose words contradict each other is refused, not repaired from them.
            problem = ("its previous daemon marked it corrupt"
                       if seg.words[H_STATE] == CORRUPT else ring_problem(seg))
            if problem:
                raise CorruptSegment(self.name, problem)
        except BaseException:
            self.close()
            raise
        g = seg.geometry
        self._check_requested_geometry(g)
        self.adopted = True
        items = seg.words[H_HEAD] - seg.words[H_TAIL]
        self.log.info("adopting FIFO %r left by a previous daemon: %d slots of %d bytes, "
                      "%d item(s) queued", self.name, g.capacity, g.item_size, items)
        self._claim_daemon_words()
        seg.words[H_STATE] = RUNNING
        self._recover(dead_entries(seg), adopting=True)

    def _check_requested_geometry(self, g):
        r = self._requested
        for key, arg, actual in (("capacity", "size", g.capacity),
                                 ("item_size", "item-size", g.item_size),
                                 ("max_clients", "max-clients", g.max_clients),
                                 ("batch_max", "batch", g.batch_max),
                                 ("split_locks", "split-locks", g.split_locks),
                                 ("in_flight", "in-flight", g.in_flight)):
            wanted = r[key]
            if wanted is not None and wanted != actual and not (key == "split_locks"
                                                                and not wanted):
                self.close()
                raise UsageError(arg, wanted,
                                 f"FIFO {self.name!r} already exists with {arg} {actual}: start "
                                 f"without --{arg} to adopt it, or remove it first with "
                                 f"shmfifo clean {self.name}")

    def _claim_daemon_words(self):
        w = self.seg.words
        pid = os.getpid()
        w[H_DAEMON_PID] = pid
        w[H_DAEMON_START] = process_start_ms(pid)
        w[H_STATE] = RUNNING

    @property
    def geometry(self) -> layout.Geometry:
        return self.seg.geometry

    @property
    def locking(self) -> str:
        return "split put/take locks" if self.seg.geometry.split_locks else "single mutex"

    # -- serving ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask serve_forever to stop gracefully. Safe from a signal handler or a thread."""
        self._stop = True

    def stopping(self) -> bool:
        return self._stop

    def check_clients(self) -> list[int]:
        """Run a recovery if a client has died. Returns the entries freed (maybe none).

        A client that died between operations holding nothing (a process that exited
        without closing its handle: ``os._exit``, a pool worker) needs no repair: its entry
        is freed and logged as a detach."""
        seg = self.seg
        if self.corrupt:
            return []            # nothing is repaired from contradicting words
        problem = ring_problem(seg)
        if problem and self._suspect:       # on two looks in a row: not a torn read
            self._mark_corrupt(problem)
            return []
        self._suspect = problem
        dead = dead_entries(seg)
        if not dead and seg.words[H_EPOCH] & 1:
            # Odd with no recovery of ours running (a word overwritten, or a recovery a
            # previous daemon left): clients park on it, so finish one.
            self.log.warning("the epoch is odd with no recovery running; reconciling")
            return self._recover([])
        detached = []
        if dead and self.recovery:
            for entry in [Entry(seg, i) for i in dead]:
                if entry.holds_nothing():
                    role, pid = entry.role_name, entry.pid
                    entry.free()
                    dead.remove(entry.index)
                    detached.append(entry.index)
                    self.log.info("%s pid %d exited holding nothing; detached", role, pid)
        freed = self._recover(dead) if dead else []
        self._log_attachments(freed + detached)
        self._check_locks()
        return freed + detached

    def _check_locks(self):
        """A lock taken on every look for LOCK_REPORT_AFTER seconds is held by a client that
        does not run: a stopped one (a dead one loses its lease and is recovered). Name it
        in the log and in status (the blocker word), and with --kill-stopped kill it once it
        has held the lock that long; the recovery that follows frees the lock."""
        seg, w = self.seg, self.seg.words
        locks = [seg.put_lock] + ([seg.take_lock] if seg.take_lock is not seg.put_lock else [])
        now = time.monotonic()
        if all(lock.value for lock in locks):
            if self._locked_since is not None and self._lock_reported:
                w[H_BLOCKER] = 0
            self._locked_since = None
            self._lock_reported = set()
            return
        if self._locked_since is None:
            self._locked_since = now
            return
        held = now - self._locked_since
        if held < LOCK_REPORT_AFTER:
            return
        for entry in table.active(seg):
            if entry.phase not in (PUTTING, GETTING):
                continue
            pid = entry.pid
            if process_state(pid, entry.start) != "stopped":
                continue
            w[H_BLOCKER] = pid
            if pid not in self._lock_reported:
                self._lock_reported.add(pid)
                hint = "" if self.kill_stopped is not None else \
                    " (resume it with kill -CONT, or start the daemon with --kill-stopped SECONDS)"
                self.log.warning("a lock has been held for %.1f s, and client pid %d, in the "
                                 "middle of an operation, is stopped%s", held, pid, hint)
            if self.kill_stopped is not None and held >= self.kill_stopped:
                self.log.warning("killing stopped client pid %d, which holds a lock", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _log_attachments(self, freed):
        """Log clients that attached or detached since the last look, like dmesg does."""
        seen = {}
        for entry in table.active(self.seg):
            index = entry.index
            key = (entry.pid, entry.attached)
            known = self._known.get(index)
            if known is not None and known[:2] == key:
                seen[index] = known
                continue
            item, rate = entry.param, entry.rate
            params = []
            if item:
                params.append(f"item={item!r}")
            if rate:
                params.append(f"rate={rate_text(None if math.isinf(rate) else rate)}")
            text = f"{entry.role_name} pid {key[0]}"
            seen[index] = key + (text,)
            self.log.info("%s attached%s", text, f" ({', '.join(params)})" if params else "")
        for index, known in self._known.items():
            if index not in seen and index not in freed:
                self.log.info("%s detached", known[2])
        self._known = seen

    def _recover(self, dead, adopting=False):
        seg = self.seg
        if not self.recovery:
            # Only for showing what happens without reconciliation (tests with teeth):
            # the dead entries are freed and nothing else is repaired.
            for index in dead:
                Entry(seg, index).state = FREE
            return dead
        died = [Entry(seg, i) for i in dead]
        returned = [e for e in died if e.state == RETURNED]
        if returned:
            self.log.info("%s gave back what %s had not acknowledged; re-queuing",
                          ", ".join(f"{e.role_name} pid {e.pid}" for e in returned),
                          "it" if len(returned) == 1 else "they")
        died = [e for e in died if e.state != RETURNED]
        if died:
            self.log.warning("client(s) died: %s; recovering",
                             ", ".join(f"pid {e.pid}" for e in died))
        recovery = Recovery(seg, self.log, kill_stopped=self.kill_stopped,
                            should_stop=self.stopping, tick=self._beat)
        try:
            freed = recovery.run(dead)
        except Corrupt as corrupt:
            self._mark_corrupt(str(corrupt))
            return []
        if freed is None:
            self.log.warning("recovery abandoned: stop requested while clients were stopped")
            return []
        w = seg.words
        self.log.info("recovery %d done: %d entr%s freed, %d item(s) re-queued, %d queued",
                      w[H_RECOVERIES], len(freed), "y" if len(freed) == 1 else "ies",
                      recovery.requeued, w[H_HEAD] - w[H_TAIL])
        return freed

    def _mark_corrupt(self, problem):
        """Stop every client of a FIFO whose words contradict each other: they raise
        CorruptSegment. The daemon keeps running, so that a SIGTERM stops it as usual."""
        self.corrupt = problem
        self.seg.words[H_STATE] = CORRUPT
        self.log.error("FIFO %r is corrupt: %s; its clients are stopped (stop this daemon and "
                       "remove it: shmfifo clean %s --force)", self.name, problem, self.name)

    def serve_forever(self) -> StopReport | None:
        """Watch the clients until request_stop(); then stop gracefully. Returns a StopReport."""
        if self.seg is None:
            self.start()
        try:
            self._tell(ready=1, status=self.summary())
            while not self._stop:
                self.check_clients()
                self._beat()
                time.sleep(self.poll)
            self._tell(stopping=1, status="stopping")
            return self._shutdown()
        finally:
            self.close()

    # -- telling a service manager (notify.py) ----------------------------------------------

    def summary(self):
        """One line on what the FIFO holds and who uses it, for STATUS=."""
        w, g = self.seg.words, self.seg.geometry
        roles = {}
        for entry in table.active(self.seg):
            roles[entry.role_name] = roles.get(entry.role_name, 0) + 1
        clients = ", ".join(f"{n} {role}{'s' if n != 1 else ''}"
                            for role, n in sorted(roles.items())) or "no clients"
        state = "corrupt, " if self.corrupt else ""
        return (f"{state}{w[H_HEAD] - w[H_TAIL]}/{g.capacity} items, {clients}, "
                f"{w[H_RECOVERIES]} recoveries")

    def _tell(self, **fields):
        notify = self.notify
        if notify is None or not notify.enabled:
            return
        failed = notify.error
        if not notify.send(**fields) and failed is None:
            self.log.warning("cannot notify the service manager at %s: %s",
                             notify.address.replace("\0", "@"), notify.error)

    def _beat(self):
        """WATCHDOG=1 at half the watchdog interval and STATUS= when it changed (checked
        once a second): from the loop that watches clients and from a recovery's waits, so
        that a daemon whose loop stops turning is restarted, and only then."""
        notify = self.notify
        if notify is None or not notify.enabled or self.seg is None:
            return
        now = time.monotonic()
        if notify.watchdog_s and now >= self._next_watchdog:
            self._next_watchdog = now + notify.watchdog_s / 2
            self._tell(watchdog=1)
        if now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL
            text = self.summary()
            if text != self._status_text:
                self._status_text = text
                self._tell(status=text)

    def _clients(self, role=None):
        return [entry.index for entry in table.active(self.seg, role)]

    def _wait_until(self, done, timeout):
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.check_clients()
            time.sleep(0.01)
        return done()

    def _count(self):
        w = self.seg.words
        return w[H_HEAD] - w[H_TAIL]

    def _shutdown(self):
        w = self.seg.words
        if self.corrupt:
            # Clients are refused already; nothing is drained from a corrupt ring.
            self._wait_until(lambda: not self._clients(), self.detach_timeout)
            if not self.keep:
                self.seg.unlink()
            self.log.info("stopped; %s corrupt FIFO %r", "kept" if self.keep else "removed",
                          self.name)
            return StopReport(self.name, 0, 0, not self.keep, w[H_RECOVERIES])
        if self.keep:
            w[H_STATE] = STOPPED
            self._wait_until(lambda: not self._clients(), self.detach_timeout)
            kept = self._count()
            self.log.info("stopped; kept FIFO %r with %d item(s) for a later daemon "
                          "(start it again with: shmfifo fifo --name %s)",
                          self.name, kept, self.name)
            return StopReport(self.name, 0, kept, False, w[H_RECOVERIES])
        if w[H_EPOCH] & 1:
            # A recovery was abandoned (a stopped client blocked it): clients are parked and
            # cannot drain; they leave when they see STOPPED.
            self.drain_timeout = 0
        w[H_STATE] = DRAINING
        self.log.info("stopping: producers stop, consumers drain %d item(s) (up to %.1f s)",
                      self._count(), self.drain_timeout)

        def drained():
            if self._clients(ROLE_PRODUCER):
                return False
            return self._count() == 0 or not self._clients()

        self._wait_until(drained, self.drain_timeout)
        w[H_STATE] = STOPPED
        self._wait_until(lambda: not self._clients(), self.detach_timeout)
        left = self._clients()
        if left:
            self.log.warning("%d client(s) still attached; removing the names anyway",
                             len(left))
        discarded = max(0, self._count())
        w[H_DISCARDED] = discarded
        recoveries = w[H_RECOVERIES]
        self.seg.unlink()
        if discarded:
            self.log.warning("stopped; discarded %d item(s) still queued", discarded)
        else:
            self.log.info("stopped; no item discarded")
        return StopReport(self.name, discarded, 0, True, recoveries)

    def close(self) -> None:
        """Release the daemon's handle without removing anything. Idempotent."""
        if self.seg is not None:
            self.seg.close()
            self.seg = None


def geometry_for(capacity: int | None = None, item_size: int | str | None = None,
                 max_clients: int | None = None, batch_max: int | None = None,
                 split_locks: bool | None = None,
                 in_flight: int | None = None) -> layout.Geometry:
    """The geometry a daemon creates for these options (None: the default), or UsageError
    naming the first one out of range. ``shmfifo doctor`` sizes /dev/shm with it."""
    capacity = capacity if capacity is not None else DEFAULTS["capacity"]
    if item_size is not None:
        item_size = parse_size(item_size)
    item_size = item_size if item_size is not None else DEFAULTS["item_size"]
    max_clients = max_clients if max_clients is not None else DEFAULTS["max_clients"]
    if batch_max is None:
        batch_max = max(1, min(capacity, MAX_DEFAULT_BATCH)) if capacity >= 1 else 1
    if in_flight is None:
        in_flight = layout.default_in_flight(capacity, item_size, max_clients, batch_max)
    geometry = layout.Geometry(
        capacity=capacity, item_size=item_size, max_clients=max_clients,
        batch_max=batch_max, split_locks=bool(split_locks), in_flight=in_flight)
    problems = geometry.problems()
    if problems:
        arg, allowed = problems[0]
        given = {"size": geometry.capacity, "item-size": geometry.item_size,
                 "max-clients": geometry.max_clients, "batch": geometry.batch_max,
                 "in-flight": geometry.in_flight}[arg]
        raise UsageError(arg, given, allowed)
    return geometry


_daemons = weakref.WeakSet()


def forked():
    """After fork(), in the child: a daemon's segment is the parent's. Close its descriptor
    here, so that the daemon's lease lives and dies with the parent alone."""
    for daemon in list(_daemons):
        daemon._stop = True
        seg, daemon.seg = daemon.seg, None
        if seg is not None:
            seg.close()


@contextlib.contextmanager
def serve(name: str = names.DEFAULT_NAME, *, capacity: int | None = None,
          item_size: int | str | None = None, max_clients: int | None = None,
          batch_max: int | None = None, split_locks: bool | None = None,
          in_flight: int | None = None, mode: int = 0o600,
          keep: bool = False, drain_timeout: float = 5.0, detach_timeout: float = 3.0,
          kill_stopped: float | None = None, recovery: bool = True, poll: float = 0.05,
          log: logging.Logger | None = None) -> Iterator[FifoDaemon]:
    """Run a FIFO daemon in a background thread of this process for the ``with`` block.

    The FIFO is ready when the block starts; when it ends the daemon stops as on SIGTERM
    (producers stop, consumers drain, the names are removed unless ``keep``) and its
    :class:`StopReport` is left in the daemon's ``report``. The options are
    :class:`FifoDaemon`'s: the FIFO's capacity, item_size, max_clients, batch_max,
    split_locks, in_flight and mode; the daemon's keep, drain_timeout, detach_timeout, kill_stopped,
    recovery, poll and log.
    """
    daemon = FifoDaemon(name, capacity=capacity, item_size=item_size, max_clients=max_clients,
                        batch_max=batch_max, split_locks=split_locks, in_flight=in_flight,
                        mode=mode, keep=keep,
                        drain_timeout=drain_timeout, detach_timeout=detach_timeout,
                        kill_stopped=kill_stopped, recovery=recovery, poll=poll, log=log)
    daemon.start()
    report = {}
    thread = threading.Thread(target=lambda: report.setdefault("r", daemon.serve_forever()),
                              name=f"shmfifo-daemon-{name}", daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        thread.join()
        daemon.report = report.get("r")
