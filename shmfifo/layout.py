"""The shared-memory layout of a FIFO, declared once.

A segment is a header, a table of client entries, a table of host names, the ring, the free
list and the pool of slots::

    0         HEADER_SIZE      hosts_offset  ring_offset     free_offset     pool_offset
    +---------+----------------+-------------+---------------+---------------+-----------------+
    | header  | entry 0 | ..   | host 1 | .. | ring: NSLOTS  | free: NSLOTS  | slot 0 | .. |   |
    |48 words | max_clients    | MAX_HOSTS   | slot numbers  | slot numbers  | NSLOTS slots    |
    +---------+----------------+-------------+---------------+---------------+-----------------+

An item lives in a slot of the pool from its put until its consumer acknowledges it; what
moves through the FIFO is the slot's number. The ring holds the numbers of the queued items
(positions ``tail .. head``), the free list the numbers of the free slots (positions
``free_tail .. free_head``), and a consumer's in-flight record the numbers it took and has
not acknowledged: every slot is in exactly one of the three (ring.py, the contract). The
pool has NSLOTS = CAPACITY + IN_FLIGHT slots: up to CAPACITY queued, and up to IN_FLIGHT
taken and not yet acknowledged (the ``loans`` semaphore counts what is left of that).

    header words (u64, index into the segment viewed as an array of words):
      0 MAGIC     written last at creation: a half-built segment is never valid
      1 VERSION  2 CAPACITY  3 IN_FLIGHT  4 NSLOTS  5 ITEM_SIZE  6 SLOT_SIZE
      7 MAX_CLIENTS  8 BATCH_MAX  9 ENTRY_SIZE  10 TOTAL_SIZE  11 FLAGS  12 CREATED (wall ns)
     16 HEAD      next ring position to put; only producers write it (own cache line)
     17 FREE_TAIL next free-list position to pop; only producers write it
     24 TAIL      next ring position to take; only consumers write it, and the daemon at
                  quiescence
     25 FREE_HEAD next free-list position to push; only consumers write it (acknowledging),
                  and the daemon at quiescence
     26 DEBT      items re-queued beyond the capacity, which no `empty` token stands for
     32 STATE     RUNNING, DRAINING or STOPPED: the daemon's word to every client
     33 EPOCH     odd while a recovery is in progress
     34 DAEMON_PID  35 DAEMON_START (ms)  36 JOURNAL_ENTRY (entry + 1, 0 = none)
     37 JOURNAL_TAIL  38 REQUEUED  39 RECOVERIES  40 BLOCKER (pid delaying a recovery)
     41 DISCARDED
     42 HOSTS     host table entries published (written last, under the put lock)

    client entry (ENTRY_WORDS words, then PARAM_BYTES of text, then the in-flight record):
      0 STATE (FREE/ACTIVE)  1 PID  2 START (process create time, ms)  3 ROLE  4 PHASE
      5 ACK (epoch this client parked for)
      6 RATE (float64 items/s, a writable parameter; 0 = not paced, inf = unlimited)
      7 PUTS  8 GETS  9 INFLIGHT (NONE/PREPARED/TAKEN/WRITING)  10 INFLIGHT_INDEX  11 INFLIGHT_N
     12 ATTACHED (wall ns)  13 RESENT (a bridge: items sent again, possible duplicates)
     14 LINK (a bridge: LINK_UP, LINK_DOWN or 0 before its first connection)  15 reserved
      param text at byte 128: the client's item, UTF-8, for status (a bridge: its peer)
      in-flight record at byte 192: BATCH_MAX words, the slot numbers taken (INFLIGHT_N
      of them) and not yet acknowledged

    host table entry (HOST_ENTRY_SIZE bytes): the name's length (u64), then the name, UTF-8,
      HOST_NAME_BYTES at most. Entries are only appended (by a bridge, under the put lock, the
      name before the count) and never change: a host number in a slot stays valid.

    slot (SLOT_SIZE bytes, a multiple of 64): SLOT_HEADER (length u32, type tag u16, host
          u16, producer pid u64, seq u64, put time u64 monotonic ns), then the payload,
          ITEM_SIZE bytes at most, encoded as its type tag says (items.py declares the payload
          headers). Host 0 is this machine: producer and seq are a local process's; host k is
          entry k of the host table: the item came over a bridge, and producer and seq are
          those of its producer on that host. HOST_UNKNOWN: a host the full table could not
          name.

Every word that another process reads while it may change is an aligned u64 read and written
through ``memoryview(mm).cast('Q')``, never with ``struct.pack_into`` (which zeroes the bytes
before it writes them, so a concurrent reader can see 0). Slot contents are only read after
the commit that publishes them, so they are packed with ``struct``.

Positions run free from BASE = 2**32: count = head - tail, word = ring[position % NSLOTS],
and a re-queue at the front (tail - n) never goes below zero; the free list likewise.
"""

import dataclasses
import struct

__all__ = ["MAGIC", "VERSION", "BASE", "HEADER_SIZE", "SLOT_HEADER", "Geometry"]

MAGIC = int.from_bytes(b"SHMFIFO1", "little")
# 2: items stay in a pool slot until acknowledged (no spare slots, no copy); 3: an item's
# origin host (slot header, host table)
VERSION = 3
BASE = 1 << 32
WORD = 8
HEADER_WORDS = 48
HEADER_SIZE = HEADER_WORDS * WORD

# header words
H_MAGIC, H_VERSION, H_CAPACITY, H_IN_FLIGHT, H_NSLOTS, H_ITEM_SIZE, H_SLOT_SIZE = range(7)
H_MAX_CLIENTS, H_BATCH_MAX, H_ENTRY_SIZE, H_TOTAL_SIZE, H_FLAGS, H_CREATED = range(7, 13)
H_HEAD, H_FREE_TAIL = 16, 17    # their own 64-byte line: producers write them, consumers never
H_TAIL, H_FREE_HEAD, H_DEBT = 24, 25, 26   # their own line: consumers (and the daemon)
H_STATE, H_EPOCH, H_DAEMON_PID, H_DAEMON_START = 32, 33, 34, 35
H_JOURNAL_ENTRY, H_JOURNAL_TAIL, H_REQUEUED, H_RECOVERIES, H_BLOCKER, H_DISCARDED = range(36, 42)
H_HOSTS = 42

FLAG_SPLIT_LOCKS = 1

# H_STATE values
# Ordered: RUNNING <= state <= DRAINING lets a take start; anything else refuses every
# operation (CORRUPT: the daemon found the words contradicting each other and stopped them).
RUNNING, DRAINING, STOPPED, CORRUPT = 1, 2, 3, 4
STATE_NAMES = {RUNNING: "running", DRAINING: "draining", STOPPED: "stopped", CORRUPT: "corrupt"}

# entry words
E_STATE, E_PID, E_START, E_ROLE, E_PHASE, E_ACK, E_RATE, E_PUTS, E_GETS = range(9)
E_INFLIGHT, E_INFLIGHT_INDEX, E_INFLIGHT_N, E_ATTACHED = range(9, 13)
# a bridge's words: items re-sent (possible duplicates downstream) and its link to the peer
E_RESENT, E_LINK = 13, 14
ENTRY_WORDS = 16
PARAM_OFFSET = ENTRY_WORDS * WORD
PARAM_BYTES = 64
INFLIGHT_OFFSET = PARAM_OFFSET + PARAM_BYTES

# E_STATE values. RETURNED: the client left without acknowledging what it took and gave up
# its lease, so that the daemon re-queues those items as it does a dead client's.
FREE, ACTIVE, RETURNED = 0, 1, 2

# E_ROLE values
ROLE_CLIENT, ROLE_PRODUCER, ROLE_CONSUMER, ROLE_BRIDGE = 0, 1, 2, 3
ROLE_NAMES = {ROLE_CLIENT: "client", ROLE_PRODUCER: "producer", ROLE_CONSUMER: "consumer",
              ROLE_BRIDGE: "bridge"}

# E_LINK values
LINK_UP, LINK_DOWN = 1, 2

# E_PHASE values. Only IDLE (holds nothing) and PARKED (acked the current epoch) are quiescent.
# BLOCKED_IN_FLIGHT: a consumer waits for others to acknowledge (every `loans` token is out).
IDLE, PUTTING, GETTING, BLOCKED_FULL, BLOCKED_EMPTY, PARKED, BLOCKED_IN_FLIGHT = range(7)
PHASE_NAMES = {IDLE: "running", PUTTING: "putting", GETTING: "getting",
               BLOCKED_FULL: "blocked on full", BLOCKED_EMPTY: "blocked on empty",
               PARKED: "parked", BLOCKED_IN_FLIGHT: "blocked on in-flight limit"}

# E_INFLIGHT values. PREPARED: a take in progress (INFLIGHT_INDEX = tail when it began);
# TAKEN: the slots named in the record are this client's until it acknowledges them;
# WRITING: the one slot named is lent to this client's put_view, not queued (yet).
NONE, PREPARED, TAKEN, WRITING = 0, 1, 2, 3

# length, type tag, origin host, producer pid, producer sequence number, put time (monotonic ns)
SLOT_HEADER = struct.Struct("<IHHQQQ")
SLOT_HEADER_SIZE = SLOT_HEADER.size
# The same header as u64 words, as the C fast path writes it and a reader may read it in one
# load: word 0 holds length | tag << TAG_SHIFT | host << HOST_SHIFT; then producer, seq and
# put time.
TAG_SHIFT = 32
HOST_SHIFT = 48
S_LENGTH_TAG, S_PRODUCER, S_SEQ, S_PUT_NS = range(4)
assert SLOT_HEADER.size == 4 * 8 and SLOT_HEADER.pack(5, 7, 3, 11, 13, 17) == struct.pack(
    "<4Q", 5 | 7 << TAG_SHIFT | 3 << HOST_SHIFT, 11, 13, 17), \
    "SLOT_HEADER and its word view disagree"

# The host table: names of the hosts that items came from over a bridge (host 0, this
# machine, has no entry). A name longer than HOST_NAME_BYTES is cut at a character boundary.
MAX_HOSTS = 64
HOST_ENTRY_SIZE = 64
HOST_NAME_BYTES = HOST_ENTRY_SIZE - WORD
HOST_LOCAL, HOST_UNKNOWN = 0, 0xFFFF


def slot_length(word0):
    """The payload length in a slot header's first word."""
    return word0 & ((1 << TAG_SHIFT) - 1)


def slot_tag(word0):
    """The type tag in a slot header's first word."""
    return word0 >> TAG_SHIFT & 0xFFFF


def slot_host(word0):
    """The origin host number in a slot header's first word (0: this machine)."""
    return word0 >> HOST_SHIFT

# item type tags: what a slot's payload is (items.py says how each is encoded)
TAG_BYTES, TAG_STR, TAG_INT, TAG_PICKLE = 1, 2, 3, 4
TAG_BYTEARRAY, TAG_MEMORYVIEW, TAG_ARRAY, TAG_NDARRAY, TAG_PICKLE5 = 5, 6, 7, 8, 9

# Limits that keep a corrupt header from making us map or index absurd sizes. An item's
# length is a u32 in its slot header; 2 GiB keeps every size a positive Py_ssize_t in C.
MAX_CAPACITY = 1 << 20
MAX_ITEM_SIZE = 1 << 31
MAX_CLIENTS = 1024
MAX_TOTAL_SIZE = 1 << 40
# Slots start on a cache line, so that payloads are 32-byte aligned (after the header) and
# two slots never share a line.
SLOT_ALIGN = 64


def default_in_flight(capacity, item_size, max_clients, batch_max):
    """How many items consumers may hold unacknowledged, all together, unless told: as many
    as they can ever take (every client a full batch), so that no consumer waits for
    another's acknowledgement, but at most what fits in a quarter of the queue's bytes (or 1
    MiB, if that is more): slots of large items are not reserved by the dozen."""
    slot = _round_up(SLOT_HEADER.size + item_size, SLOT_ALIGN)
    budget = max(capacity * slot // 4, 1 << 20) // slot
    return max(1, min(max_clients * batch_max, budget))


def _round_up(n, to):
    return (n + to - 1) // to * to


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The sizes of a FIFO and every offset derived from them.

    An item in flight (taken, not acknowledged) keeps its slot, so the pool has ``capacity``
    slots for what is queued and ``in_flight`` more for what consumers hold: queued + in
    flight + free = nslots. A recovery that re-queues a dead consumer's items at the front
    only moves their numbers back into the ring, which has nslots positions, so they always
    fit, even on a full ring. The segment is the pool plus two words per slot and a small
    table: ``total_size`` is about ``(capacity + in_flight) * (item_size + 32)`` rounded up
    to 64 bytes a slot (README, Memory).
    """

    capacity: int
    item_size: int
    max_clients: int
    batch_max: int
    split_locks: bool = False
    in_flight: int = 1

    @property
    def nslots(self):
        return self.capacity + self.in_flight

    @property
    def slot_size(self):
        return _round_up(SLOT_HEADER.size + self.item_size, SLOT_ALIGN)

    @property
    def entry_size(self):
        # each entry on its own cache lines: clients write their entries on every operation
        return _round_up(INFLIGHT_OFFSET + self.batch_max * WORD, 64)

    @property
    def table_offset(self):
        return HEADER_SIZE

    @property
    def hosts_offset(self):
        return HEADER_SIZE + self.max_clients * self.entry_size

    def host_offset(self, number):
        """Byte offset of host table entry ``number`` (1 .. MAX_HOSTS)."""
        return self.hosts_offset + (number - 1) * HOST_ENTRY_SIZE

    @property
    def ring_offset(self):
        return self.hosts_offset + MAX_HOSTS * HOST_ENTRY_SIZE

    @property
    def free_offset(self):
        return self.ring_offset + _round_up(self.nslots * WORD, 64)

    @property
    def pool_offset(self):
        return self.free_offset + _round_up(self.nslots * WORD, 64)

    @property
    def total_size(self):
        return self.pool_offset + self.nslots * self.slot_size

    def slot_offset(self, slot):
        """Byte offset of pool slot number ``slot``."""
        return self.pool_offset + slot * self.slot_size

    @property
    def flags(self):
        return FLAG_SPLIT_LOCKS if self.split_locks else 0

    def entry_offset(self, index):
        return HEADER_SIZE + index * self.entry_size

    def problems(self):
        """What is wrong with these numbers, as a list of (argument, allowed) pairs."""
        bad = []
        if not 1 <= self.capacity <= MAX_CAPACITY:
            bad.append(("size", f"a whole number of items from 1 to {MAX_CAPACITY}"))
        if not 1 <= self.item_size <= MAX_ITEM_SIZE:
            bad.append(("item-size", f"a whole number of bytes from 1 to {MAX_ITEM_SIZE}"))
        if not 1 <= self.max_clients <= MAX_CLIENTS:
            bad.append(("max-clients", f"a whole number from 1 to {MAX_CLIENTS}"))
        if not 1 <= self.batch_max <= max(1, self.capacity):
            bad.append(("batch", "a whole number from 1 to the FIFO's size"))
        if not 1 <= self.in_flight <= MAX_CAPACITY:
            bad.append(("in-flight", f"a whole number of items from 1 to {MAX_CAPACITY}"))
        if not bad and self.total_size > MAX_TOTAL_SIZE:
            bad.append(("size", f"a geometry whose segment stays under {MAX_TOTAL_SIZE} bytes"))
        return bad

    def write_header(self, words):
        """Store the geometry words (not MAGIC: the creator writes it last)."""
        words[H_VERSION] = VERSION
        words[H_CAPACITY] = self.capacity
        words[H_IN_FLIGHT] = self.in_flight
        words[H_NSLOTS] = self.nslots
        words[H_ITEM_SIZE] = self.item_size
        words[H_SLOT_SIZE] = self.slot_size
        words[H_MAX_CLIENTS] = self.max_clients
        words[H_BATCH_MAX] = self.batch_max
        words[H_ENTRY_SIZE] = self.entry_size
        words[H_TOTAL_SIZE] = self.total_size
        words[H_FLAGS] = self.flags

    @classmethod
    def read_header(cls, words, file_size):
        """The geometry a header describes, or a string saying why it is not a valid one.

        Everything derived is recomputed and compared, so a corrupt or foreign header can
        never send a reader past the end of the mapping.
        """
        if words[H_MAGIC] != MAGIC:
            if words[H_MAGIC] == 0:
                return "it has no magic number (not initialised, or not a shmfifo segment)"
            return "wrong magic number (not a shmfifo segment)"
        if words[H_VERSION] != VERSION:
            return (f"layout version {words[H_VERSION]}, but this shmfifo reads version "
                    f"{VERSION}")
        if words[H_FLAGS] & ~FLAG_SPLIT_LOCKS:
            return f"unknown flags {words[H_FLAGS]:#x}"
        geometry = cls(capacity=words[H_CAPACITY], item_size=words[H_ITEM_SIZE],
                       max_clients=words[H_MAX_CLIENTS], batch_max=words[H_BATCH_MAX],
                       split_locks=bool(words[H_FLAGS] & FLAG_SPLIT_LOCKS),
                       in_flight=words[H_IN_FLIGHT])
        if geometry.problems():
            return "its geometry is out of range"
        derived = ((H_NSLOTS, geometry.nslots),
                   (H_SLOT_SIZE, geometry.slot_size), (H_ENTRY_SIZE, geometry.entry_size),
                   (H_TOTAL_SIZE, geometry.total_size))
        for word, value in derived:
            if words[word] != value:
                return "its geometry words contradict each other"
        if file_size != geometry.total_size:
            return (f"it is {file_size} bytes but its header describes {geometry.total_size} "
                    f"(truncated or resized)")
        return geometry
