"""Crash recovery: reconciliation at quiescence, run by the daemon.

POSIX semaphores are not robust: a process killed while holding ``mutex`` blocks everyone,
and one killed between two steps of put or get loses a token or an item. shmfifo treats the
semaphore values as derived state and recomputes them from the ring after a client dies,
without stopping the survivors for longer than the repair:

1. make ``epoch`` odd and fence; every live client, at its next check, returns what it holds,
   parks and acknowledges the epoch (ring.py);
2. wait until every live entry is IDLE or has acknowledged (quiescence), noting new deaths;
3. finish a re-queue that a previous daemon journaled and did not complete;
4. resolve each dead consumer's PREPARED record: committed iff ``tail == index + n``;
5. re-queue each dead consumer's TAKEN items at the front, journaled so that a daemon that
   dies half-way lets the next one finish without losing or duplicating anything;
6. set every lock to 1, ``fill`` = count, ``empty`` = max(0, capacity - count),
   ``debt`` = max(0, count - capacity);
7. free the dead entries, count the recovery and make ``epoch`` even: clients resume.

Each step is idempotent given the words it leaves, so the whole procedure can simply be run
again by a daemon that adopts a segment whose previous daemon died in the middle of it.
"""

import os
import signal
import time

import posix_ipc

from . import crashpoints
from .layout import (ACTIVE, FREE, H_BLOCKER, H_DEBT, H_EPOCH, H_HEAD, H_JOURNAL_ENTRY,
                     H_JOURNAL_TAIL, H_RECOVERIES, H_REQUEUED, H_STATE, H_TAIL, IDLE, NONE,
                     PARKED, PREPARED, STATE_NAMES, TAKEN)
from .waiting import fence
from .table import Entry, entries

__all__ = ["dead_entries", "Recovery", "process_state", "Corrupt", "ring_problem",
           "record_problem"]

QUIESCENCE_POLL = 0.002


def dead_entries(seg):
    """Entries that are claimed but whose lease is gone: their process has died."""
    return [e.index for e in entries(seg) if e.state != FREE and not e.alive()]


def process_state(pid, start_ms):
    """'stopped', 'zombie', 'running', or 'gone' for a client's pid and create time."""
    try:
        import psutil
        proc = psutil.Process(pid)
        if start_ms and abs(int(proc.create_time() * 1000) - start_ms) > 1000:
            return "gone"                         # the pid was reused
        status = proc.status()
    except Exception:
        return "gone"
    if status in ("stopped", "tracing-stop"):
        return "stopped"
    if status == "zombie":
        return "zombie"
    return "running"


class Corrupt(Exception):
    """The words contradict the geometry: nothing may be repaired from them."""


def ring_problem(seg):
    """What in the ring's own words contradicts the geometry, or None. Reads that race with
    running clients are taken again until ``tail`` held still across the read of ``head``
    (tail only grows between recoveries, so such a read is exact)."""
    w, g = seg.words, seg.geometry
    for _ in range(100):
        tail = w[H_TAIL]
        head = w[H_HEAD]
        if w[H_TAIL] == tail:
            break
    count = head - tail
    if not 0 <= count <= g.nslots:
        return f"head - tail is {count} (head {head}, tail {tail}), outside 0..{g.nslots}"
    debt = w[H_DEBT]
    if debt > g.spare:
        return f"debt is {debt}, more than its {g.spare} spare slots"
    journal = w[H_JOURNAL_ENTRY]
    if journal > g.max_clients:
        return f"the journal names entry {journal - 1} of a table of {g.max_clients}"
    state = w[H_STATE]
    if state not in STATE_NAMES:
        return f"the state word holds {state}"
    return None


def record_problem(entry):
    """What in an entry's in-flight record contradicts the geometry, or None."""
    inflight, n = entry.inflight, entry.inflight_n
    if inflight not in (NONE, PREPARED, TAKEN):
        return f"entry {entry.index}'s record state holds {inflight}"
    if inflight != NONE and not 1 <= n <= entry.seg.geometry.batch_max:
        return (f"entry {entry.index}'s record holds {n} items, not 1.."
                f"{entry.seg.geometry.batch_max}")
    return None


def set_semaphore(sem, value, bound):
    """Set a semaphore to ``value``: drain it, then release. Only at quiescence. A value above
    ``bound`` (more tokens than the ring could ever account for) is Corrupt: draining it
    could take for ever."""
    if sem.value > bound:
        raise Corrupt(f"semaphore {sem.name} holds {sem.value} tokens, more than the {bound} "
                      f"the ring can account for")
    for _ in range(bound + 1):
        try:
            sem.acquire(0)
        except posix_ipc.BusyError:
            break
    for _ in range(value):
        sem.release()


class Recovery:
    """One reconciliation of a segment. ``run`` returns the entries it freed."""

    def __init__(self, seg, log, *, kill_stopped=None, report_after=1.0, should_stop=None,
                 tick=None):
        self.seg = seg
        self.log = log
        self.kill_stopped = kill_stopped
        self.report_after = report_after
        self.should_stop = should_stop or (lambda: False)
        self.tick = tick or (lambda: None)     # called at each look while waiting
        self._crash = crashpoints.hook()

    def _entry(self, index):
        return Entry(self.seg, index)

    def run(self, dead):
        w, crash = self.seg.words, self._crash
        dead = set(dead)
        if not w[H_EPOCH] & 1:
            w[H_EPOCH] += 1              # odd: a recovery is in progress
        fence()                          # the epoch is visible before we read any phase
        if crash:
            crash("recovery.epoch")
        dead = self._wait_quiescent(dead)
        if dead is None:
            return None
        if crash:
            crash("recovery.quiescent")
        # Nothing is repaired from words that contradict the geometry (Corrupt).
        problem = ring_problem(self.seg) or next(
            filter(None, (record_problem(self._entry(i)) for i in sorted(dead))), None)
        if problem:
            raise Corrupt(problem)
        self._finish_journal()
        for index in sorted(dead):
            self._resolve_prepared(index)
        requeued = 0
        for index in sorted(dead):
            requeued += self._requeue(index)
        self._reset_semaphores()
        if crash:
            crash("recovery.reset")
        for index in sorted(dead):
            self._free(index)
        if crash:
            crash("recovery.freed")
        w[H_RECOVERIES] += 1
        w[H_BLOCKER] = 0
        w[H_EPOCH] += 1                  # even: clients resume
        self.requeued = requeued
        return sorted(dead)

    def _wait_quiescent(self, dead):
        seg, w = self.seg, self.seg.words
        epoch = w[H_EPOCH]
        started = time.monotonic()
        reported = set()
        while True:
            blockers = []
            for entry in entries(seg):
                if entry.index in dead or entry.state != ACTIVE:
                    continue
                if not entry.alive():
                    dead.add(entry.index)
                    continue
                phase = entry.phase
                if phase == IDLE or (phase == PARKED and entry.ack == epoch):
                    continue
                blockers.append(entry.index)
            if not blockers:
                return dead
            waited = time.monotonic() - started
            if waited >= self.report_after:
                self._report_blockers(blockers, waited, reported)
            if self.should_stop() and waited >= self.report_after:
                return None
            self.tick()
            time.sleep(QUIESCENCE_POLL)

    def _report_blockers(self, blockers, waited, reported):
        w = self.seg.words
        for index in blockers:
            entry = self._entry(index)
            pid, start = entry.pid, entry.start
            state = process_state(pid, start)
            w[H_BLOCKER] = pid
            if pid not in reported:
                reported.add(pid)
                hint = "" if self.kill_stopped is not None else \
                    " (resume it with kill -CONT, or start the daemon with --kill-stopped SECONDS)"
                self.log.warning("recovery waits for client pid %d, which is %s%s",
                                 pid, state, hint)
            if (state == "stopped" and self.kill_stopped is not None
                    and waited >= self.kill_stopped):
                self.log.warning("killing stopped client pid %d after %.1f s", pid, waited)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _copy_record_to_ring(self, index, first):
        """Copy entry ``index``'s in-flight items into the slots from ring index ``first``."""
        seg = self.seg
        g, b = seg.geometry, seg.buf
        entry = self._entry(index)
        n, record = entry.inflight_n, entry.record_offset
        for k in range(n):
            off = g.slots_offset + (first + k) % g.nslots * g.slot_size
            b[off:off + g.slot_size] = b[record + k * g.slot_size:record + (k + 1) * g.slot_size]

    def _finish_journal(self):
        w = self.seg.words
        journaled = w[H_JOURNAL_ENTRY]
        if not journaled:
            return
        index = journaled - 1
        entry = self._entry(index)
        problem = record_problem(entry)
        if problem:
            raise Corrupt(f"the journaled re-queue: {problem}")
        before = w[H_JOURNAL_TAIL]
        n = entry.inflight_n
        if entry.inflight == TAKEN:
            if w[H_TAIL] == before:          # the copy may be partial: redo it and commit
                self._copy_record_to_ring(index, before - n)
                w[H_TAIL] = before - n
            w[H_REQUEUED] += n
            entry.inflight = NONE
        w[H_JOURNAL_ENTRY] = 0
        self.log.info("finished the re-queue of %d item(s) that a previous daemon started", n)

    def _resolve_prepared(self, index):
        entry = self._entry(index)
        if entry.inflight != PREPARED:
            return
        # The dead consumer held take_lock from PREPARED on, so nobody has moved tail since.
        committed = self.seg.words[H_TAIL] == entry.inflight_index + entry.inflight_n
        entry.inflight = TAKEN if committed else NONE

    def _requeue(self, index):
        w, crash = self.seg.words, self._crash
        entry = self._entry(index)
        if entry.inflight != TAKEN:
            return 0
        n = entry.inflight_n
        before = w[H_TAIL]
        w[H_JOURNAL_TAIL] = before
        w[H_JOURNAL_ENTRY] = index + 1   # the journal is valid from this store on
        if crash:
            crash("recovery.journal")
        self._copy_record_to_ring(index, before - n)
        if crash:
            crash("recovery.copied")
        w[H_TAIL] = before - n           # commit: the items are at the front again
        if crash:
            crash("recovery.tail")
        w[H_REQUEUED] += n
        entry.inflight = NONE
        if crash:
            crash("recovery.record")
        w[H_JOURNAL_ENTRY] = 0
        self.log.info("re-queued %d item(s) taken by dead client pid %d", n, entry.pid)
        return n

    def _reset_semaphores(self):
        seg, w = self.seg, self.seg.words
        problem = ring_problem(seg)           # quiescent: an exact read
        if problem:
            raise Corrupt(problem)
        count = w[H_HEAD] - w[H_TAIL]
        g = seg.geometry
        w[H_DEBT] = max(0, count - g.capacity)
        bound = g.nslots + g.spare
        set_semaphore(seg.put_lock, 1, bound)
        if seg.take_lock is not seg.put_lock:
            set_semaphore(seg.take_lock, 1, bound)
        set_semaphore(seg.fill, count, bound)
        set_semaphore(seg.empty, max(0, g.capacity - count), bound)

    def _free(self, index):
        self._entry(index).free()
