"""The client table: one view per entry, used by everything that reads or writes entries.

:class:`Entry` names the words of one entry of a mapped segment (layout.py declares where they
are). The daemon, the recovery, ``status``, ``set``, ``clean`` and a client claiming its entry
all go through it. Only the two lock sections of ring.py (and their C copy) address the words
directly, by offsets computed once per client, because they run for every item.
"""

import os
import time

from . import layout, lease
from .errors import NoFreeEntry
from .layout import (ACTIVE, E_ACK, E_ATTACHED, E_GETS, E_INFLIGHT, E_INFLIGHT_INDEX,
                     E_INFLIGHT_N, E_LINK, E_PHASE, E_PID, E_PUTS, E_RATE, E_RESENT, E_ROLE,
                     E_START, E_STATE,
                     ENTRY_WORDS, FREE, IDLE, INFLIGHT_OFFSET, NONE, PARAM_BYTES, PARAM_OFFSET)

__all__ = ["Entry", "entries", "active", "claim", "process_start_ms"]


def _word(word, doc):
    def get(self):
        return self.words[self.base + word]

    def put(self, value):
        self.words[self.base + word] = value
    return property(get, put, doc=doc)


class Entry:
    """Entry ``index`` of ``seg``'s client table."""

    __slots__ = ("seg", "words", "index", "offset", "base")

    def __init__(self, seg, index):
        self.seg = seg
        self.words = seg.words
        self.index = index
        self.offset = seg.geometry.entry_offset(index)     # in bytes
        self.base = self.offset // layout.WORD             # in words

    state = _word(E_STATE, "FREE, ACTIVE or RETURNED; written last when claiming, last "
                           "when freeing")
    pid = _word(E_PID, "the client's process")
    start = _word(E_START, "its process's create time, ms since the epoch")
    role = _word(E_ROLE, "ROLE_CLIENT, ROLE_PRODUCER, ROLE_CONSUMER or ROLE_BRIDGE")
    phase = _word(E_PHASE, "IDLE, PUTTING, GETTING, BLOCKED_*, PARKED")
    ack = _word(E_ACK, "the epoch this client parked for")
    puts = _word(E_PUTS, "sequence number of its last put")
    gets = _word(E_GETS, "items it took")
    inflight = _word(E_INFLIGHT, "NONE, PREPARED, TAKEN or WRITING: its in-flight record")
    inflight_index = _word(E_INFLIGHT_INDEX, "ring index of the first item in the record")
    inflight_n = _word(E_INFLIGHT_N, "items in the record")
    attached = _word(E_ATTACHED, "when it claimed the entry, wall ns")
    resent = _word(E_RESENT, "a bridge's items sent again: possible duplicates downstream")
    link = _word(E_LINK, "a bridge's link to its peer: LINK_UP, LINK_DOWN, 0 = not yet")

    @property
    def rate(self):
        """Configured items/s (a float64 word): 0 = not paced, inf = unlimited."""
        return self.seg.floats[self.base + E_RATE]

    @rate.setter
    def rate(self, value):
        self.seg.floats[self.base + E_RATE] = value

    @property
    def param(self):
        """The client's item, as text (for status)."""
        start = self.offset + PARAM_OFFSET
        raw = bytes(self.seg.buf[start:start + PARAM_BYTES]).rstrip(b"\0")
        return raw.decode("utf-8", "backslashreplace")

    @param.setter
    def param(self, text):
        raw = str(text).encode("utf-8", "backslashreplace")[:PARAM_BYTES]
        start = self.offset + PARAM_OFFSET
        self.seg.buf[start:start + PARAM_BYTES] = raw.ljust(PARAM_BYTES, b"\0")

    def record_slots(self):
        """The slot numbers in the in-flight record (INFLIGHT_N of them, at most batch_max:
        a bad count is record_problem's to report)."""
        first = (self.offset + INFLIGHT_OFFSET) // 8
        n = min(self.inflight_n, self.seg.geometry.batch_max)
        return [self.seg.words[first + k] for k in range(n)]

    @property
    def role_name(self):
        return layout.ROLE_NAMES.get(self.role, "client")

    @property
    def active(self):
        return self.state == ACTIVE

    def alive(self):
        """Its lease is held: the process that claimed it has not died."""
        return self.seg.entry_alive(self.index)

    def lease_byte(self):
        return lease.entry_byte(self.index)

    def holds_nothing(self):
        """Between operations (IDLE: no token) with nothing taken and unacknowledged: its
        death needs no repair, only freeing."""
        return self.phase == IDLE and self.inflight == NONE

    def claim(self, pid, start, role, attached, rate, param):
        """Fill a FREE entry whose lease the caller holds; ACTIVE is written last."""
        w, base = self.words, self.base
        for word in range(ENTRY_WORDS):
            w[base + word] = 0
        self.pid, self.start, self.role, self.attached = pid, start, role, attached
        self.rate = rate
        self.param = param
        self.state = ACTIVE

    def free(self):
        """Clear every word and mark it FREE (last: a claimer sees a clean entry)."""
        w, base = self.words, self.base
        for word in range(ENTRY_WORDS):
            if word != E_STATE:
                w[base + word] = 0
        self.param = ""
        self.state = FREE

    def __repr__(self):
        return f"<Entry {self.index} {self.role_name} pid {self.pid} state {self.state}>"


def entries(seg):
    """Every entry of the table, in order."""
    return [Entry(seg, index) for index in range(seg.geometry.max_clients)]


def active(seg, role=None):
    """The ACTIVE entries (of ``role``, if given)."""
    return [e for e in entries(seg) if e.state == ACTIVE and (role is None or e.role == role)]


def claim(seg, pid, role, param, rate):
    """Claim a FREE entry for a client of this process: take its lease through ``seg``'s
    descriptor and fill it. Callers in one process serialise their claims (a lease taken
    again through the same descriptor is not refused). NoFreeEntry if the table is full."""
    for entry in entries(seg):
        if entry.state != FREE:
            continue
        if not lease.try_lock(seg.fd, entry.lease_byte()):
            continue
        # The lease is ours; an entry that is not FREE under it belongs to a dead client
        # whose recovery has not run yet: claiming it would erase its in-flight items.
        if entry.state != FREE:
            lease.unlock(seg.fd, entry.lease_byte())
            continue
        entry.claim(pid, process_start_ms(pid), role, time.time_ns(),
                    float("inf") if rate is None else float(rate), param)
        return entry
    raise NoFreeEntry(seg.name, seg.geometry.max_clients)


def process_start_ms(pid):
    """A process's start time in ms since the epoch, as psutil's create_time() computes it
    (boot time + start ticks), read from /proc so that clients need not import psutil."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
        return int((boot + ticks / os.sysconf("SC_CLK_TCK")) * 1000)
    except (OSError, ValueError, IndexError, StopIteration):
        return 0
