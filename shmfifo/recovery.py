"""Crash recovery: reconciliation at quiescence, run by the daemon.

POSIX semaphores are not robust: a process killed while holding ``mutex`` blocks everyone,
and one killed between two steps of put or get loses a token or an item. shmfifo treats the
semaphore values as derived state and recomputes them from the ring after a client dies,
without stopping the survivors for longer than the repair:

1. make ``epoch`` odd and fence; every live client, at its next check, returns what it holds,
   parks and acknowledges the epoch (ring.py);
2. wait until every live entry is IDLE or has acknowledged (quiescence), noting new deaths;
3. finish a re-queue that a previous daemon journaled and did not complete;
4. resolve each dead consumer's PREPARED record: committed iff ``tail == index + n`` (a dead
   client's WRITING record, a put_view's lent slot, owns nothing: the ring names the slot if
   its put committed, and step 6 finds it free otherwise);
5. re-queue each dead consumer's TAKEN slot numbers at the front of the ring, journaled so
   that a daemon that dies half-way lets the next one finish without losing or duplicating
   anything;
6. rebuild the free list from what is owned (the ring's slots and every live record's,
   taken or lent to a put_view, whose reserved room counts as queued for ``empty`` and
   ``debt``),
   checking that no slot is named twice; set every lock to 1, ``fill`` = queued, ``empty``
   = max(0, capacity - queued), ``debt`` = max(0, queued - capacity) and ``loans`` =
   in_flight - what live records hold;
7. free the dead entries, count the recovery and make ``epoch`` even: clients resume.

Each step is idempotent given the words it leaves, so the whole procedure can simply be run
again by a daemon that adopts a segment whose previous daemon died in the middle of it.
"""

import os
import signal
import time

import posix_ipc

from . import crashpoints
from .layout import (ACTIVE, BASE, FREE, H_BLOCKER, H_DEBT, H_EPOCH, H_FREE_HEAD, H_FREE_TAIL,
                     H_HEAD,
                     H_JOURNAL_ENTRY, H_JOURNAL_TAIL, H_RECOVERIES, H_REQUEUED, H_STATE, H_TAIL,
                     IDLE, NONE, PARKED, PREPARED, STATE_NAMES, TAKEN, WRITING)
from .waiting import fence
from .table import Entry, entries

__all__ = ["dead_entries", "Recovery", "process_state", "Corrupt", "ring_problem",
           "record_problem", "init_free_list"]

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


def _pair(w, first, second):
    """``first, second`` read as ``first, second, first`` until the two reads of ``first``
    agree: ``tail`` and ``free_tail`` only grow between recoveries, so such a read is exact
    even while clients run."""
    for _ in range(100):
        a = w[first]
        b = w[second]
        if w[first] == a:
            break
    return a, b


def ring_problem(seg):
    """What in the ring's and the free list's own words contradicts the geometry, or None."""
    w, g = seg.words, seg.geometry
    tail, head = _pair(w, H_TAIL, H_HEAD)
    count = head - tail
    if not 0 <= count <= g.nslots:
        return f"head - tail is {count} (head {head}, tail {tail}), outside 0..{g.nslots}"
    ftail, fhead = _pair(w, H_FREE_TAIL, H_FREE_HEAD)
    free = fhead - ftail
    if not 0 <= free <= g.nslots:
        return (f"the free list holds {free} slots (free_head {fhead}, free_tail {ftail}), "
                f"outside 0..{g.nslots}")
    debt = w[H_DEBT]
    if debt > g.in_flight:
        return f"debt is {debt}, more than the {g.in_flight} items that may be in flight"
    journal = w[H_JOURNAL_ENTRY]
    if journal > g.max_clients:
        return f"the journal names entry {journal - 1} of a table of {g.max_clients}"
    state = w[H_STATE]
    if state not in STATE_NAMES:
        return f"the state word holds {state}"
    return None


def record_problem(entry):
    """What in an entry's in-flight record contradicts the geometry, or None."""
    inflight, n, g = entry.inflight, entry.inflight_n, entry.seg.geometry
    if inflight not in (NONE, PREPARED, TAKEN, WRITING):
        return f"entry {entry.index}'s record state holds {inflight}"
    if inflight != NONE and not 1 <= n <= g.batch_max:
        return f"entry {entry.index}'s record holds {n} items, not 1..{g.batch_max}"
    if inflight == WRITING and n != 1:
        return f"entry {entry.index}'s record lends {n} slots to a put_view, not 1"
    if inflight in (TAKEN, WRITING):
        bad = [slot for slot in entry.record_slots() if slot >= g.nslots]
        if bad:
            return (f"entry {entry.index}'s record names slot {bad[0]} of a pool of "
                    f"{g.nslots}")
    return None


_MASK = (1 << 64) - 1


def _add(w, word, n):
    """A counter word plus n, wrapping as C's do: a scribbled word (the epoch at 2**64 - 1)
    must not make the daemon fail with a traceback in the middle of a recovery."""
    w[word] = w[word] + n & _MASK


def init_free_list(seg):
    """A new FIFO: nothing queued, every slot free."""
    w, g = seg.words, seg.geometry
    w[H_HEAD] = w[H_TAIL] = BASE
    _write_free(seg, BASE, range(g.nslots))


def _write_free(seg, free_tail, slots):
    w, g = seg.words, seg.geometry
    base, cap = g.free_offset // 8, g.nslots
    n = 0
    for n, slot in enumerate(slots, 1):
        w[base + (free_tail + n - 1) % cap] = slot
    w[H_FREE_TAIL] = free_tail
    w[H_FREE_HEAD] = free_tail + n & _MASK


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
            _add(w, H_EPOCH, 1)          # odd: a recovery is in progress
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
        self._reset_semaphores(dead)
        if crash:
            crash("recovery.reset")
        for index in sorted(dead):
            self._free(index)
        if crash:
            crash("recovery.freed")
        _add(w, H_RECOVERIES, 1)
        w[H_BLOCKER] = 0
        _add(w, H_EPOCH, 1)              # even: clients resume
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
        """Write entry ``index``'s in-flight slot numbers into the ring from position
        ``first`` on (the items stay where they are, in their slots)."""
        seg = self.seg
        g, w = seg.geometry, seg.words
        ring = g.ring_offset // 8
        for k, slot in enumerate(self._entry(index).record_slots()):
            w[ring + (first + k) % g.nslots] = slot

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
                w[H_TAIL] = before - n & _MASK
            # Counted with the record's clearing, in this order, so that a daemon dying
            # between the two counts the re-queue again rather than never.
            entry.inflight = NONE
            _add(w, H_REQUEUED, n)
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
        g = self.seg.geometry
        if w[H_HEAD] - (before - n) > g.nslots:
            # queued + in flight never exceeds the pool: the words contradict each other.
            raise Corrupt(f"re-queuing {n} item(s) would queue {w[H_HEAD] - before + n}, "
                          f"more than the {g.nslots} slots of the pool")
        w[H_JOURNAL_TAIL] = before
        w[H_JOURNAL_ENTRY] = index + 1   # the journal is valid from this store on
        if crash:
            crash("recovery.journal")
        self._copy_record_to_ring(index, before - n)
        if crash:
            crash("recovery.copied")
        w[H_TAIL] = before - n & _MASK   # commit: the items are at the front again
        if crash:
            crash("recovery.tail")
        entry.inflight = NONE
        _add(w, H_REQUEUED, n)
        if crash:
            crash("recovery.record")
        w[H_JOURNAL_ENTRY] = 0
        self.log.info("re-queued %d item(s) taken by dead client pid %d", n, entry.pid)
        return n

    def _rebuild_free_list(self, dead):
        """Every slot that neither the ring nor a live record names is free: the free list is
        written anew from that, whatever a client dying in a lock section left in it. Returns
        how many slots the live records hold taken, and how many are lent to put_views."""
        seg, w = self.seg, self.seg.words
        g = seg.geometry
        owner = {}                   # slot -> who names it, to find a slot named twice
        ring = g.ring_offset // 8
        for position in range(w[H_TAIL], w[H_HEAD]):
            slot = w[ring + position % g.nslots]
            if slot >= g.nslots:
                raise Corrupt(f"ring position {position} names slot {slot} of a pool of "
                              f"{g.nslots}")
            self._own(owner, slot, f"ring position {position}")
        held = writing = 0
        for entry in entries(seg):
            if entry.index in dead or entry.inflight not in (TAKEN, WRITING):
                continue
            problem = record_problem(entry)
            if problem:
                raise Corrupt(problem)
            for slot in entry.record_slots():
                self._own(owner, slot, f"entry {entry.index}'s record")
            if entry.inflight == TAKEN:
                held += entry.inflight_n
            else:
                writing += 1
        if held > g.in_flight:
            raise Corrupt(f"live records hold {held} items, more than the in-flight limit of "
                          f"{g.in_flight}")
        _write_free(seg, w[H_FREE_TAIL], [s for s in range(g.nslots) if s not in owner])
        return held, writing

    @staticmethod
    def _own(owner, slot, who):
        if slot in owner:
            raise Corrupt(f"slot {slot} is named by {owner[slot]} and by {who}")
        owner[slot] = who

    def _reset_semaphores(self, dead=()):
        seg, w = self.seg, self.seg.words
        problem = ring_problem(seg)           # quiescent: an exact read
        if problem:
            raise Corrupt(problem)
        count = w[H_HEAD] - w[H_TAIL]
        g = seg.geometry
        held, writing = self._rebuild_free_list(set(dead))
        # A live put_view holds an empty token for the room its item will take: it is
        # counted as queued here, and its put then takes no token.
        count += writing
        w[H_DEBT] = max(0, count - g.capacity)
        bound = 2 * g.nslots
        set_semaphore(seg.put_lock, 1, bound)
        if seg.take_lock is not seg.put_lock:
            set_semaphore(seg.take_lock, 1, bound)
        set_semaphore(seg.fill, count - writing, bound)
        set_semaphore(seg.empty, max(0, g.capacity - count), bound)
        set_semaphore(seg.loans, g.in_flight - held, bound)

    def _free(self, index):
        self._entry(index).free()
