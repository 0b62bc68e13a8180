"""The ring and its protocol: one client of a FIFO (the lab's exported put/get).

The concurrency contract
------------------------
Semaphores (named, shared by every process of the FIFO):

* ``empty`` counts the room left in the queue (capacity - queued), ``fill`` the queued
  items: a producer holds an ``empty`` token for each item it is about to put, a consumer a
  ``fill`` token for each item it is about to take.
* ``loans`` counts what consumers may still take without acknowledging (in_flight - held):
  a consumer holds a ``loans`` token for each item it has taken and not acknowledged.
* ``put_lock`` excludes producers from each other, ``take_lock`` consumers from each other.
  In the lab's configuration (the default) both are the one ``mutex``; with split locks they
  are two semaphores.

Slots (layout.py): an item stays in its pool slot from its put until its consumer
acknowledges it, and only its slot *number* moves: through the free list to a producer,
through the ring to a consumer, into that consumer's in-flight record, and back to the free
list. Every slot number is in exactly one of the ring (positions ``tail..head``), the free
list (``free_tail..free_head``) or one in-flight record. The pool has capacity + in_flight
slots, so free = capacity - queued + in_flight - held >= the ``empty`` and ``loans``
tokens not yet used: a producer with a token always finds a free slot, and a consumer needs
no copy.

Words: producers write ``head`` and ``free_tail`` (under ``put_lock``); consumers write
``tail``, ``debt`` and ``free_head`` (under ``take_lock``) and their own entry's in-flight
record; each
client writes only its own entry; the daemon writes ``epoch``, ``state`` and, at quiescence
only, anything.

Put:  empty.acquire -> put_lock.acquire -> for each item: pop a slot number from the free
      list, write the item into that slot, write the number at ring[head + k] ->
      free_tail += n -> **head += n** (the commit: the items are written before the index
      that makes them visible) -> put_lock.release -> fill.release.
Get:  [acknowledge first, if the record is TAKEN: take_lock.acquire -> push the record's
      numbers onto the free list, **free_head += n** -> record NONE -> take_lock.release ->
      loans.release] -> loans.acquire -> fill.acquire -> take_lock.acquire -> record
      PREPARED at tail -> copy the numbers ring[tail..tail + n] into the record ->
      **tail += n** (the commit) -> record TAKEN -> pay ``debt`` -> take_lock.release ->
      empty.release for each item not paid as debt. The item is read straight from its
      slot, which is this consumer's until it acknowledges it: by the next get, ``ack`` or
      ``close``. The queue's room is given back at the take, as queue.Queue does; the slot
      and the ``loans`` token at the acknowledgement.
Put in place (put_view): [acknowledge first, as a get does] -> empty.acquire -> put_lock ->
      the free list's next number into the record, WRITING -> **free_tail += 1** ->
      put_lock.release; the caller writes the slot; then put_lock -> the number at
      ring[head] -> **head += 1** (the commit) -> record NONE -> put_lock.release ->
      fill.release. Not put (an exception, a stop): the record's number goes back as an
      acknowledgement does, and its room with it (to ``debt`` first, else ``empty``).

What a SIGKILL at each step leaves, and how the daemon repairs it at quiescence:
a token taken and not used (empty/fill/lock held) -> semaphores are recomputed from the
ring and the free list; slots written and not committed -> not in the ring, so free again
when the free list is rebuilt; a committed put -> queued; a PREPARED record -> committed iff
tail == index + n (the dead consumer still held take_lock, so nobody moved tail since); a
WRITING record -> cleared (the ring names its slot if the put committed, else it is free);
a TAKEN record -> its numbers re-queued at the front (at-least-once: the only duplicate is an
item handled but not yet acknowledged, or one whose acknowledgement died half-way). The free
list is rebuilt at every recovery from what the ring and the records hold, so a death
anywhere inside a lock section leaves nothing to undo.

Bound on positions: a re-queue at the front adds at most what was in flight, so queued <=
capacity + in_flight = nslots, the ring's length; ``debt`` (queued beyond the capacity, which
no ``empty`` token stands for) is paid by the next takes.

Quiescence: before taking any token an operation stores its phase, fences, then reads the
epoch (the daemon stores an odd epoch, fences, then reads phases), so either the daemon sees
the operation or the operation sees the recovery and parks without holding anything (a
TAKEN record is not "holding": the recovery counts its slots as that client's). Every wait
is timed (``WAIT_SLICE``); on each timeout or signal a waiter checks its stop flag, the
daemon's state and the epoch, and if a recovery is running it returns every token it holds,
marks itself PARKED with ``ack = epoch`` and waits for the epoch to turn even.

A :class:`Client` is one entry of the client table, with that entry's lease, phase and
in-flight record, used by one thread of one process: the handle (handle.py) gives each
thread of each process that uses it a client of its own, so no two threads ever share an
entry's words. This module holds the two lock sections (``_put_run``, ``_take_run``) and the
operations around them; how a client waits for a token, parks and gives up is in waiting.py,
how it claims its entry in table.py, how an item becomes bytes in items.py.

shmfifo/_fastpath.c, when built, repeats the non-blocking lock sections below in C for bytes
and str items (same steps, words, fence and crash points); whenever a step would wait it
undoes what it took and this code does the whole operation.
"""

import operator
import os
import sys
import time

import posix_ipc

from . import crashpoints, hosts, layout, lease, names, table
from .errors import (CorruptItem, CorruptSegment, Empty, FifoClosed, Full, HandleClosed,
                     ItemNotDecoded, ItemTooLarge, NumpyNotInstalled, Stopped, UntrustedItem,
                     UsageError, ViewInUse)
from .items import (PICKLE_TAGS, TYPE_NAMES, NeedsNumpy, decode, encode, payload_length,
                    write_payload)
from .layout import (BLOCKED_EMPTY, BLOCKED_FULL, BLOCKED_IN_FLIGHT, CORRUPT, E_GETS,
                     E_INFLIGHT, E_INFLIGHT_INDEX, E_INFLIGHT_N, E_PHASE, E_PUTS, E_RATE,
                     E_STATE, FREE, RETURNED, GETTING, H_DEBT, H_EPOCH, H_FREE_HEAD,
                     H_FREE_TAIL, H_HEAD, H_STATE, H_TAIL, IDLE, NONE, PREPARED, PUTTING,
                     RUNNING, S_PRODUCER, S_PUT_NS, S_SEQ, SLOT_HEADER, SLOT_HEADER_SIZE,
                     STOPPED, TAG_BYTES, TAG_SHIFT, TAG_STR, TAKEN, WRITING, slot_length,
                     slot_tag)
from .waiting import Park, Waiting, fence_acquire, fence_release

try:
    from . import _fastpath
except ImportError:             # built without a C compiler: the pure-Python path only
    _fastpath = None
# The C accelerator does the non-blocking put/get of bytes and str items, one or a batch (see
# _fastpath.c, which has the same steps and crash points); the Python code below stays the
# reference and does everything that waits and every other item type. SHMFIFO_PURE=1 runs the
# Python path alone.
USE_FASTPATH = _fastpath is not None and os.environ.get("SHMFIFO_PURE") != "1"
# Only without the fast path is the Python put/get the hot path, and only then are its crash
# points compiled out: the recompilation adds 3-7 ms to every client's start-up, while a kept
# crash point costs a test of a local (about 0.15 us per put+get pair, all of them together).
_hot_path = crashpoints.compiled_out if not USE_FASTPATH else (lambda func: func)

__all__ = ["Client", "Message", "accelerator"]

# How long close() waits for the take lock to acknowledge what its client took, before it
# leaves that to the daemon (RETURNED): a lock is held for microseconds unless its holder died.
CLOSE_ACK_WAIT = 0.5
# The tag C gives the raw tuple of a record that names a slot beyond the pool (no u16 type
# tag is this); its length field then holds the slot number.
BAD_SLOT = 1 << 16
# Sums written back to a word wrap as C's do: a scribbled word must not make a client raise
# OverflowError in the middle of a lock section; the daemon reports the wrapped value.
WORD_MASK = (1 << 64) - 1


def accelerator():
    """Which path runs put and get in this process: ``"C"`` or ``"none (pure Python)"``
    (the extension is not built, or ``SHMFIFO_PURE=1``). ``--version``, the daemon's ready
    line and ``shmfifo doctor`` say this."""
    return "C" if USE_FASTPATH else "none (pure Python)"


def _take_more(sem, held, limit):
    """With ``held`` tokens of ``sem``, take more without waiting, up to ``limit`` in all;
    return how many are held: the rest of a batch is never waited for (see put_many)."""
    try:
        while held < limit:
            sem.acquire(0)
            held += 1
    except posix_ipc.BusyError:
        pass
    return held


def _copy_words(w, src, src_at, dst, dst_at, cap, n):
    """Copy ``n`` words from list ``src`` (at index ``src_at``) to list ``dst`` (at
    ``dst_at``), each a ring of ``cap`` words starting at word ``src``/``dst`` of ``w``:
    slice assignments, at most three, whatever the wrap."""
    while n:
        run = min(n, cap - src_at, cap - dst_at)
        w[dst + dst_at:dst + dst_at + run] = w[src + src_at:src + src_at + run]
        n -= run
        src_at = (src_at + run) % cap
        dst_at = (dst_at + run) % cap


class Message:
    """An item with where it came from: the producer's pid and its sequence number on host
    ``host`` (this machine's name, or the producer's host for an item that came over a
    bridge; None if the FIFO's host table could not name it), and the put time here."""

    __slots__ = ("item", "producer", "seq", "put_ns", "host")

    def __init__(self, item, producer, seq, put_ns, host=None):
        self.item = item
        self.producer = producer
        self.seq = seq
        self.put_ns = put_ns
        self.host = host

    def __repr__(self):
        return (f"Message(item={self.item!r}, producer={self.producer}, seq={self.seq}, "
                f"put_ns={self.put_ns}, host={self.host!r})")


class Client(Waiting):
    """One client of a FIFO: its operations, for one thread of one process.

    ``attachment`` is this process's mapping of the segment (handle.Attachment): the client
    claims a free entry of the table under it and takes that entry's lease through its
    descriptor. The Python code after a failed fast-path try runs registered in
    ``attachment.active``, so that closing the handle from another thread never unmaps what
    a waiting thread is using.

    Timeouts: ``None`` waits for ever, ``0`` or ``block=False`` never waits, ``> 0`` is a
    bound in seconds. A full or empty FIFO raises :class:`Full` / :class:`Empty`.
    """

    def __init__(self, attachment, *, role=layout.ROLE_CLIENT, param="", rate=0.0,
                 allow_pickle=False, spin_us=0.0):
        seg = attachment.seg
        self.name = attachment.name
        self.closed = True
        self._stop = False
        self._seg = seg
        self._attachment = attachment
        self._active = attachment.active
        g = seg.geometry
        self.capacity = g.capacity
        self.item_size = g.item_size
        self.batch_max = g.batch_max
        self.split_locks = g.split_locks
        self._w = seg.words
        self._b = seg.buf
        self._slot_size = g.slot_size
        self._nslots = g.nslots
        self._pool = g.pool_offset
        self._ring = g.ring_offset // 8       # word index of ring[0]
        self._free = g.free_offset // 8       # word index of free[0]
        self._view = None         # [(view, exporter, baseline)] lent out while a view block runs
        self._spin_ns = int(spin_us * 1000)     # how long a blocking get polls (attach)
        self._fast_saved = None
        self._empty, self._fill, self._loans = seg.empty, seg.fill, seg.loans
        # Only an in-flight limit below what the clients can ever hold (every one a full
        # batch) can bind; otherwise ``loans`` is never touched and costs nothing.
        self._use_loans = g.in_flight < g.max_clients * g.batch_max
        self._put_lock, self._take_lock = seg.put_lock, seg.take_lock
        self._crash = crashpoints.hook()
        # Unpickling runs code that the item's writer chose: only when no other user can
        # have written the FIFO (segment.py's trust check), or when the caller says so.
        self._pickles_ok = seg.trusted or allow_pickle
        self._allow_pickle = allow_pickle
        self._hosts = {}          # host name -> number in the host table (_host_number)
        self.pid = os.getpid()
        self._seq = 0
        # Seconds spent waiting for a free slot or an item (not for a lock): a rate loop
        # restarts its schedule after such a stall instead of bursting.
        self.blocked_s = 0.0
        with attachment.claim_lock:       # two threads of this process: never one entry
            self.index = table.claim(seg, self.pid, role, param, rate).index
        e = self._entry = g.entry_offset(self.index)
        self._e = e // 8          # entry's first word
        self._rec = (e + layout.INFLIGHT_OFFSET) // 8     # word index of the record
        self._fast = self._make_fastpath(self.name, g) if USE_FASTPATH else None
        self.closed = False

    def _make_fastpath(self, name, g):
        """The C copy of the lock sections, given every word and value by name."""
        e = self._e
        return _fastpath.Ring(
            buffer=self._seg.mm,
            empty=names.sem_name(name, "empty"), fill=names.sem_name(name, "fill"),
            put_lock=names.sem_name(name, "mutex"),
            take_lock=names.sem_name(name, "take" if g.split_locks else "mutex"),
            head=H_HEAD, tail=H_TAIL, free_head=H_FREE_HEAD, free_tail=H_FREE_TAIL,
            state=H_STATE, epoch=H_EPOCH,
            phase=e + E_PHASE, puts=e + E_PUTS, gets=e + E_GETS, inflight=e + E_INFLIGHT,
            inflight_index=e + E_INFLIGHT_INDEX, inflight_n=e + E_INFLIGHT_N,
            record=self._rec, ring=self._ring, free=self._free,
            PUTTING=PUTTING, GETTING=GETTING, IDLE=IDLE, RUNNING=RUNNING, STOPPED=STOPPED,
            PREPARED=PREPARED, TAKEN=TAKEN, NONE=NONE, TAG_BYTES=TAG_BYTES, TAG_STR=TAG_STR,
            BLOCKED_FULL=BLOCKED_FULL, BLOCKED_EMPTY=BLOCKED_EMPTY, debt=H_DEBT,
            loans=names.sem_name(name, "loans"), pool=self._pool, slot_size=self._slot_size,
            item_size=self.item_size, header_size=SLOT_HEADER_SIZE, tag_shift=TAG_SHIFT,
            host_shift=layout.HOST_SHIFT,
            producer_word=S_PRODUCER, seq_word=S_SEQ, put_ns_word=S_PUT_NS,
            nslots=self._nslots, batch_max=self.batch_max, pid=self.pid, BAD_SLOT=BAD_SLOT,
            use_loans=self._use_loans)

    # -- put --------------------------------------------------------------------------------

    def _encode(self, item):
        tag, payload = encode(item)
        n = payload_length(payload)
        if n > self.item_size:
            raise ItemTooLarge(n, self.item_size, self.name)
        return tag, payload

    def _enter(self):
        """Start the Python path of an operation: registered in ``active`` (see the class),
        and refused on a closed client. The caller pops ``active`` when it leaves."""
        self._active.append(self)
        if self.closed:
            self._active.pop()
            raise HandleClosed(self.name)

    def put(self, item, block=True, timeout=None):
        """Put one item; raise Full if no slot frees up in time."""
        fast = self._fast
        if fast is not None and not self._stop:
            if fast.put(item, self._seq + 1):
                self._seq += 1
                return
        self._enter()
        try:
            record = (TAG_BYTES, item) if type(item) is bytes else encode(item)
            n = payload_length(record[1])
            if n > self.item_size:
                raise ItemTooLarge(n, self.item_size, self.name)
            deadline = None if block and timeout is None else self._deadline(block, timeout)
            try:
                self._put_run((record,), 0, deadline)      # the common case: one frame less
            except Park:
                self._put_records((record,), deadline)
        finally:
            self._active.pop()

    def put_many(self, items, block=True, timeout=None):
        """Put every item, in order, taking one lock section per run of free slots.

        Only the first slot of each run is waited for; the rest are taken without blocking,
        because producers that each hold part of a batch and wait for the rest could
        deadlock. On Full, the items before the first one not put are in the FIFO and the
        exception's ``put`` attribute says how many.
        """
        items = items if type(items) is list else list(items)
        done = 0
        fast = self._fast
        if fast is not None and not self._stop:
            # One C lock section per run of free slots; 0: the rest takes the Python path
            # (it refuses the whole batch up front if an item is of another type or too big).
            total = len(items)
            while done < total:
                n = fast.put_many(items, done, self._seq + 1)
                if not n:
                    break
                self._seq += n
                done += n
            if done == total:
                return
        self._enter()
        try:
            records = list(map(encode, items[done:] if done else items))
            limit = self.item_size
            for _, payload in records:
                n = payload_length(payload)
                if n > limit:               # refused before any item of the batch is put
                    raise ItemTooLarge(n, limit, self.name)
            try:
                self._put_records(records, self._deadline(block, timeout))
            except (Full, Stopped, FifoClosed) as error:
                error.put = getattr(error, "put", 0) + done
                raise
        finally:
            self._active.pop()

    def _put_records(self, records, deadline, origins=None):
        done = 0
        total = len(records)
        while done < total:
            try:
                done += self._put_run(records, done, deadline, origins)
            except Park:
                try:
                    if not self._park(deadline):
                        break
                except (Stopped, FifoClosed) as error:
                    error.put = done
                    raise
            except Full:
                break
            except (Stopped, FifoClosed) as error:
                error.put = done          # like Full.put: the items before these are in
                raise
        if done < total:
            error = Full(f"FIFO {self.name!r} is full ({self.capacity} items)")
            error.put = done
            raise error

    @_hot_path
    def _put_run(self, records, start, deadline, origins=None):
        """Put records[start:] into as many free slots as can be had: one lock section.
        ``origins`` (a bridge's): for each record, the (host name, producer, seq) it came
        with, written into its slot instead of this client's own."""
        w, b, e = self._w, self._b, self._e
        crash = self._crash
        empty = self._empty
        # Enter: publish the phase, fence, then read the epoch (the contract, above).
        w[e + E_PHASE] = PUTTING
        fence_acquire()
        fence_release()
        if w[H_EPOCH] & 1:
            raise Park
        if self._stop or w[H_STATE] != RUNNING:
            self._refuse(True)
        try:
            empty.acquire(0)
        except posix_ipc.BusyError:
            self._wait_token(empty, deadline, BLOCKED_FULL, True)
        got = 1
        want = len(records) - start
        if want > 1:
            got = _take_more(empty, got, min(want, self.capacity))
        if crash:
            crash("put.empty")
        lock = self._put_lock
        try:
            lock.acquire(0)
        except posix_ipc.BusyError:
            self._wait_lock(lock, empty, got)
        if crash:
            crash("put.lock")
        head, ftail = w[H_HEAD], w[H_FREE_TAIL]
        cap, size, pool, ring, free = (self._nslots, self._slot_size, self._pool, self._ring,
                                       self._free)
        if not got <= w[H_FREE_HEAD] - ftail <= cap:
            # A free slot for every empty token is the contract: these words are scribbled.
            self._undo(lock, empty, got)
            raise self._corrupt("the free list holds fewer slots than tokens were taken")
        pid, seq, now = self.pid, self._seq, time.monotonic_ns()
        pack = SLOT_HEADER.pack_into
        try:
            if origins is not None:
                # host numbers, under the put lock that every writer of the host table holds
                origin = [(self._host_number(host), producer, number)
                          for host, producer, number in origins[start:start + got]]
            first = ftail % cap
            slots = (w[free + first:free + first + got] if first + got <= cap else
                     w[free + first:free + cap].tolist() +
                     w[free:free + first + got - cap].tolist())
            for k in range(got):
                tag, payload = records[start + k]
                slot = slots[k]
                if slot >= cap:
                    raise self._corrupt(f"the free list names slot {slot} of a pool of {cap}")
                off = pool + slot * size
                seq += 1
                if type(payload) is tuple:     # parts: a header, then the item's own memory
                    n = write_payload(b, off + SLOT_HEADER_SIZE, payload)
                else:
                    n = len(payload)
                    b[off + SLOT_HEADER_SIZE:off + SLOT_HEADER_SIZE + n] = payload
                if origins is None:
                    pack(b, off, n, tag, 0, pid, seq, now)
                else:
                    pack(b, off, n, tag, *origin[k], now)
        except BaseException:
            # Nothing shows before head moves: give back the lock and the tokens, so that an
            # error here (a scribbled free list, a value that does not pack) never leaves the
            # lock taken under a client that goes on living.
            self._undo(lock, empty, got)
            raise
        _copy_words(w, free, first, ring, head % cap, cap, got)
        if crash:
            crash("put.written")
        w[H_FREE_TAIL] = ftail + got & WORD_MASK    # popped before they show
        if crash:
            crash("put.popped")
        w[H_HEAD] = head + got & WORD_MASK    # commit: the slots are written before head
        if crash:
            crash("put.commit")
        lock.release()
        if crash:
            crash("put.unlock")
        fill = self._fill
        fill.release()
        if got > 1:
            for _ in range(got - 1):
                fill.release()
        self._seq = seq
        w[e + E_PUTS] = seq
        w[e + E_PHASE] = IDLE
        if crash:
            crash("put.done")
        return got

    def _host_number(self, name):
        """The host table's number for ``name`` (hosts.number_of, under the put lock): an
        entry never changes once published, so each client keeps what it has looked up."""
        number = self._hosts.get(name)
        if number is None:
            number = hosts.number_of(self._seg, name)
            if number != layout.HOST_UNKNOWN:
                self._hosts[name] = number
        return number

    # -- get --------------------------------------------------------------------------------

    def get(self, block=True, timeout=None):
        """Take one item (acknowledging what this client took before); raise Empty if none
        arrives in time."""
        fast = self._fast
        if fast is not None and not self._stop:
            taken = fast.get()
            if taken is None and self._spin_ns and block:
                taken = fast.get(self._spin_budget(timeout))
            if taken is not None:
                return taken if type(taken) is not tuple else self._item(*taken)
        elif self._spin_ns:
            self._poll(block, timeout)
        self._enter()
        try:
            self._take(1, self._deadline(block, timeout))
            return self._decode(self._taken_slot(0), False)
        finally:
            self._active.pop()

    def get_message(self, block=True, timeout=None):
        """Like get, but return a :class:`Message` with the producer, sequence and put time."""
        if self._spin_ns:
            self._poll(block, timeout)
        self._enter()        # the slot is read after the take: nobody may release it
        try:
            fast = self._fast
            if fast is None or self._stop or fast.get() is None:
                self._take(1, self._deadline(block, timeout))
            return self._decode(self._taken_slot(0), True)
        finally:
            self._active.pop()

    def get_many(self, max_items, block=True, timeout=None):
        """Wait for one item (within the timeout), then take up to ``max_items`` (at most the
        FIFO's batch size) that are present, in one lock section. Returns a list."""
        if not isinstance(max_items, int) or max_items < 1:
            raise UsageError("max_items", max_items, "use a whole number of 1 or more")
        max_items = min(max_items, self.batch_max)
        if self._spin_ns:
            self._poll(block, timeout)
        fast = self._fast
        taken = fast.get_many(max_items) if fast is not None and not self._stop else None
        if taken is not None:
            if type(taken) is list:
                return taken
            return self._decode_batch(taken)
        self._enter()
        try:
            n = self._take(max_items, self._deadline(block, timeout))
            items = []
            for k in range(n):
                off = self._taken_slot(k)
                length, tag, _, _, _, _ = SLOT_HEADER.unpack_from(self._b, off)
                if tag == TAG_BYTES and length <= self.item_size:
                    start = off + SLOT_HEADER_SIZE
                    items.append(self._seg.mm[start:start + length])   # one copy, to bytes
                else:
                    items.append(self._raw(off))
            return self._decode_batch(items)
        finally:
            self._active.pop()

    def take_records(self, max_items, block=True, timeout=None):
        """A bridge's get: like get_many, but each item as its slot holds it, never decoded
        (nothing is unpickled): (type tag, encoded payload as bytes, host name, producer,
        seq). A slot whose length word exceeds the item size gives a CorruptItem in its
        place, which the caller reports and skips (as get does)."""
        max_items = min(max_items, self.batch_max)
        if self._spin_ns:
            self._poll(block, timeout)
        self._enter()
        try:
            n = self._take(max_items, self._deadline(block, timeout))
            seg, b, mm, limit = self._seg, self._b, self._seg.mm, self.item_size
            records = []
            for k in range(n):
                off = self._taken_slot(k)
                length, tag, host, producer, seq, _ = SLOT_HEADER.unpack_from(b, off)
                if length > limit:
                    records.append(CorruptItem(self.name, f"its length word says {length} "
                                               f"bytes, more than the {limit} of a slot",
                                               producer, seq))
                    continue
                start = off + SLOT_HEADER_SIZE
                records.append((tag, mm[start:start + length], hosts.name_of(seg, host),
                                producer, seq))
            return records
        finally:
            self._active.pop()

    def put_records(self, records, origins, block=True, timeout=None):
        """A bridge's put: like put_many, of items already encoded, (type tag, payload), each
        with the origin it came with, (host name, producer, seq), which its slot keeps. Every
        such item counts as from another host (never host 0), so a pickle among them is only
        unpickled with allow_pickle. Everything is checked before the lock is taken."""
        limit = self.item_size
        for _, payload in records:
            if len(payload) > limit:
                raise ItemTooLarge(len(payload), limit, self.name)
        for host, producer, seq in origins:
            if not (0 <= producer <= hosts.MAX_ORIGIN and 0 <= seq <= hosts.MAX_ORIGIN
                    and isinstance(host, str)):
                raise UsageError("origin", (host, producer, seq), "use a host name and a "
                                 "producer and seq from 0 to 2**64 - 1")
        self._enter()
        try:
            self._put_records(records, self._deadline(block, timeout), origins)
        finally:
            self._active.pop()

    def get_view(self, block=True, timeout=None):
        """Take one item and return a read-only memoryview of its bytes in its slot (the
        encoded payload: a str's UTF-8, a bytes item's bytes). The slot is this client's
        until ``release_view``; until then no other get or ack of this client may run."""
        return self._lend_views(1, block, timeout)[0]

    def get_many_views(self, max_items, block=True, timeout=None):
        """get_view for a batch: wait for one item (within the timeout), take up to
        ``max_items`` (at most the FIFO's batch size) in one lock section, and return a list
        of read-only memoryviews, one per item. A slot whose length word exceeds the item
        size is the CorruptItem it would raise in get, in its place in the list."""
        if not isinstance(max_items, int) or max_items < 1:
            raise UsageError("max_items", max_items, "use a whole number of 1 or more")
        return self._lend_views(min(max_items, self.batch_max), block, timeout)

    def _lend_views(self, max_items, block, timeout):
        self._enter()
        try:
            if self._view is not None:
                raise UsageError("get_view", "while a view is open",
                                 "leave the get_view or put_view block first")
            got = self._take(max_items, self._deadline(block, timeout))
            # Each view comes from an exporter of its own (a ctypes array over the payload),
            # not from the segment's memoryview: every memoryview or array made from the view
            # then refers to that exporter, so release_view can tell whether anything does.
            import ctypes     # only here: it costs every client start-up time and memory
            views, lent = [], []
            for k in range(got):
                off = self._taken_slot(k)
                length = slot_length(self._w[off >> 3])
                if length > self.item_size:
                    try:
                        self._item(*self._raw(off))      # raises CorruptItem
                    except ItemNotDecoded as error:
                        if max_items == 1:
                            raise                        # skipped, as get does
                        # (without its traceback, whose frame holds the other views)
                        views.append(error.with_traceback(None))
                        continue
                exporter = (ctypes.c_char * length).from_buffer(self._seg.mm,
                                                               off + SLOT_HEADER_SIZE)
                baseline = sys.getrefcount(exporter)
                view = memoryview(exporter).cast("B").toreadonly()
                lent.append((view, exporter, baseline))
                views.append(view)
            self._view = lent
            # Until the block ends, every get of this client takes the Python path, which
            # refuses: the C fast path would acknowledge the slots under the views.
            self._fast_saved, self._fast = self._fast, None
            return views
        finally:
            self._active.pop()

    def release_view(self, ack=True):
        """End what get_view started: release the view, then acknowledge its item. A view that
        is still exported (a numpy array or another memoryview made from it) cannot be
        released: ViewInUse, and the item stays unacknowledged (the next get, ack or close
        acknowledges it)."""
        if self._take_view_back(writing=False) is not None and ack and self not in self._active:
            # (inside another operation of this client, a generator left in a view block
            # is being collected: the next get, ack or close acknowledges instead)
            self.ack()

    def _take_view_back(self, writing):
        """Release the lent views and set the fast path back; their lengths, or None if none
        were lent. ViewInUse if something made from one (an array, a memoryview) still refers
        to its slot: then the slots must stay this client's."""
        lent, self._view = self._view, None
        if lent is None:
            return None
        self._fast, self._fast_saved = self._fast_saved, None
        lengths, in_use = [], False
        for view, exporter, baseline in lent:
            lengths.append(len(view))
            try:
                view.release()
            except BufferError:
                in_use = True
                continue
            del view
            in_use = in_use or sys.getrefcount(exporter) > baseline + 1    # + lent's tuple
        del lent
        if in_use:
            raise ViewInUse(self.name, writing)
        return lengths

    # -- put_view: writing an item in place ----------------------------------------------------

    def put_view(self, nbytes, block=True, timeout=None):
        """Reserve room in the queue (an ``empty`` token, waiting as put does), lend a free
        slot for an item of ``nbytes`` bytes and return a writable memoryview of its payload.
        The slot and the room are this client's (its record WRITING) until
        ``release_put_view`` puts the item, which then never waits for room, or gives both
        back; until then no get or ack of this client may run."""
        try:
            nbytes = operator.index(nbytes) if not isinstance(nbytes, bool) else -1
        except TypeError:
            nbytes = -1
        if nbytes < 0:
            raise UsageError("nbytes", nbytes, "use a whole number of bytes, 0 or more")
        if nbytes > self.item_size:
            raise ItemTooLarge(nbytes, self.item_size, self.name)
        self._enter()
        try:
            if self._view is not None:
                raise UsageError("put_view", "while a view is open", "leave that block first")
            slot = self._parking(self._reserve_run, self._deadline(block, timeout))
            off = self._pool + slot * self._slot_size
            import ctypes     # only here, as in get_view
            exporter = (ctypes.c_char * nbytes).from_buffer(self._seg.mm,
                                                           off + SLOT_HEADER_SIZE)
            baseline = sys.getrefcount(exporter)
            view = memoryview(exporter).cast("B")
            self._view = [(view, exporter, baseline)]
            # Until the block ends every get and ack of this client takes the Python path,
            # which refuses (_check_no_view): the record holds the lent slot, not a take.
            self._fast_saved, self._fast = self._fast, None
            return view
        finally:
            self._active.pop()

    def _parking(self, run, deadline, *args):
        """``run(*args, deadline)`` again after each recovery it parked for; Full if the
        deadline passes meanwhile."""
        while True:
            try:
                return run(*args, deadline)
            except Park:
                if not self._park(deadline):
                    raise Full(f"FIFO {self.name!r} is full ({self.capacity} items)") from None

    def _begin_put(self):
        """Enter a put-side operation: the phase, the fence, then the epoch and the state (the
        contract, above). _put_run does the same inline: it is the pure path's hot path."""
        w = self._w
        w[self._e + E_PHASE] = PUTTING
        fence_acquire()
        fence_release()
        if w[H_EPOCH] & 1:
            raise Park
        if self._stop or w[H_STATE] != RUNNING:
            self._refuse(True)

    def _lock(self, lock, sem, held):
        """``lock``, taken at once or after _wait_lock (holding ``held`` tokens of ``sem``).
        The lock sections of put and take inline this: they are the pure path's hot path."""
        try:
            lock.acquire(0)
        except posix_ipc.BusyError:
            self._wait_lock(lock, sem, held)
        return lock

    def _reserve_run(self, deadline):
        """An ``empty`` token (the room the item will take), then one put-lock section that
        pops a free slot into this client's record (WRITING), after acknowledging the
        previous take. Returns the slot number. The slot is not a loan: a producer holding
        an ``empty`` token always finds a free slot (the contract, above), so a lent slot
        never waits on, or for, what consumers hold."""
        w, e = self._w, self._e
        crash = self._crash
        self._begin_put()
        if w[e + E_INFLIGHT] in (TAKEN, WRITING):
            self._ack_section()              # the record is about to hold the lent slot
        empty = self._empty
        try:
            empty.acquire(0)
        except posix_ipc.BusyError:
            self._wait_token(empty, deadline, BLOCKED_FULL, True)
        lock = self._lock(self._put_lock, empty, 1)
        if crash:
            crash("putview.lock")
        ftail, cap = w[H_FREE_TAIL], self._nslots
        slot = w[self._free + ftail % cap]
        if not 1 <= w[H_FREE_HEAD] - ftail <= cap or slot >= cap:
            self._undo(lock, empty, 1)
            raise self._corrupt("the free list holds fewer slots than tokens were taken")
        w[self._rec] = slot
        w[e + E_INFLIGHT_N] = 1
        w[e + E_INFLIGHT] = WRITING          # still in the free list too: no step to undo
        if crash:
            crash("putview.lent")
        w[H_FREE_TAIL] = ftail + 1 & WORD_MASK
        if crash:
            crash("putview.popped")
        lock.release()
        w[e + E_PHASE] = IDLE
        return slot

    def release_put_view(self, publish):
        """End what put_view started: release the view, then put the slot's item into the
        ring (``publish``; its room was reserved, so this waits for nothing but the lock) or
        give the slot and the room back. A view still exported (an array made from it)
        cannot be released: ViewInUse, nothing is put, and the slot stays lent until this
        client's next get, ack, put_view or close gives it back. HandleClosed if the handle
        was closed inside the block (close gave the slot back)."""
        lengths = self._take_view_back(writing=True)
        if lengths is None:
            if publish and self.closed:
                raise HandleClosed(self.name)
            return
        nbytes, = lengths
        if not publish:
            self._give_back_lent()
            return
        self._enter()
        try:
            self._parking(self._publish_run, None, nbytes)
        except BaseException:
            self._active.pop()               # (left first: _give_back_lent checks it)
            self._give_back_lent()
            raise
        self._active.pop()

    def _give_back_lent(self):
        """A put_view whose item was not put: its slot and room back now, if that can be done
        without waiting (else the next get, ack, put_view or close does it, or the daemon if
        this process dies). Never inside another operation of this client: a generator left
        in a put_view block may be collected in the middle of one, holding the lock that the
        give-back needs."""
        if (self._w is None or self.closed or self in self._active
                or self._w[self._e + E_INFLIGHT] != WRITING):
            return
        try:
            self.ack()
        except Exception:
            pass

    def _publish_run(self, nbytes, deadline):
        """One put-lock section that queues the lent slot, whose room put_view reserved: the
        slot number at ring[head], **head += 1** (the commit), the record NONE."""
        w, b, e = self._w, self._b, self._e
        crash = self._crash
        slot = w[self._rec]
        if w[e + E_INFLIGHT] != WRITING or w[e + E_INFLIGHT_N] != 1 or slot >= self._nslots:
            raise self._corrupt("this client's lent slot is no longer in its record")
        self._begin_put()
        seq = self._seq + 1
        SLOT_HEADER.pack_into(b, self._pool + slot * self._slot_size, nbytes, TAG_BYTES, 0,
                              self.pid, seq, time.monotonic_ns())
        lock = self._lock(self._put_lock, None, 0)
        if crash:
            crash("putview.publish")
        head = w[H_HEAD]
        w[self._ring + head % self._nslots] = slot
        if crash:
            crash("putview.written")
        w[H_HEAD] = head + 1 & WORD_MASK     # commit: queued from here on
        if crash:
            crash("putview.commit")
        w[e + E_INFLIGHT] = NONE             # (a death before this: the ring names it)
        if crash:
            crash("putview.cleared")
        lock.release()
        self._fill.release()
        self._seq = seq
        w[e + E_PUTS] = seq
        w[e + E_PHASE] = IDLE
        if crash:
            crash("putview.done")

    def ack(self):
        """Give back the slots of the last get: a crash now will not re-deliver their items,
        and producers may fill them again. The next get, get_many or close acknowledges
        implicitly."""
        fast = self._fast
        if fast is None or self._stop or not fast.ack():
            self._enter()
            try:
                self._check_no_view()
                w, e = self._w, self._e
                while w[e + E_INFLIGHT] in (TAKEN, WRITING):
                    w[e + E_PHASE] = GETTING
                    fence_acquire()
                    fence_release()
                    try:
                        if w[H_EPOCH] & 1:
                            raise Park
                        if w[H_STATE] == CORRUPT or not RUNNING <= w[H_STATE] <= STOPPED:
                            self._refuse(False)
                        self._ack_section()
                    except Park:
                        self._park(None)
                        continue
                    w[e + E_PHASE] = IDLE
            finally:
                self._active.pop()
        crash = self._crash
        if crash:
            crash("ack")

    def _spin_budget(self, timeout):
        return self._spin_ns if timeout is None else min(self._spin_ns, int(timeout * 1e9))

    def _poll(self, block, timeout):
        """Before a blocking get sleeps: poll ``fill`` for up to spin_us (within the timeout)
        without taking anything; True as soon as an item is there. Holds the GIL. (On the C
        path, get polls inside its take: ``fast.get(spin_ns)``.)"""
        fill = self._fill
        if not block or fill.value:
            return bool(fill.value)
        deadline = time.monotonic_ns() + self._spin_budget(timeout)
        while not fill.value:
            if time.monotonic_ns() >= deadline:
                return False
        return True

    # -- reading taken slots ----------------------------------------------------------------

    def _check_no_view(self):
        if self._view is not None:
            raise UsageError("get", "while a view is open",
                             "leave the get_view or put_view block first")

    def _taken_slot(self, k):
        """Byte offset of the k-th slot in this client's in-flight record (checked)."""
        slot = self._w[self._rec + k]
        if slot >= self._nslots:
            raise self._corrupt(f"an in-flight record names slot {slot} of a pool of "
                                f"{self._nslots}")
        return self._pool + slot * self._slot_size

    def _raw(self, off):
        """The raw (tag, payload, length, producer, seq, host) of the slot at ``off``, the
        payload copied and never read past the slot, for _item to decode or refuse."""
        length, tag, host, producer, seq, _ = SLOT_HEADER.unpack_from(self._b, off)
        start = off + SLOT_HEADER_SIZE
        # a bytearray: the one copy, which the decoded item keeps (items.decode)
        payload = bytearray(self._b[start:start + min(length, self.item_size)])
        return tag, payload, length, producer, seq, host

    def _decode(self, off, with_meta):
        """The item in the taken slot at ``off`` (read under ``active``)."""
        b = self._b
        n, tag, host, producer, seq, put_ns = SLOT_HEADER.unpack_from(b, off)
        start = off + SLOT_HEADER_SIZE
        if tag == TAG_BYTES and n <= self.item_size:
            item = self._seg.mm[start:start + n]
        else:
            try:
                item = self._item(tag, b[start:start + min(n, self.item_size)], n, producer,
                                  seq, host)
            except ItemNotDecoded as error:
                error.put_ns = put_ns
                raise
        if with_meta:
            return Message(item, producer, seq, put_ns, hosts.name_of(self._seg, host))
        return item

    def _item(self, tag, payload, length, producer, seq, host=0):
        """See _decoded; an item that is not decoded names its origin host."""
        try:
            return self._decoded(tag, payload, length, producer, seq, host)
        except ItemNotDecoded as error:
            error.host = hosts.name_of(self._seg, host)
            raise

    def _decoded(self, tag, payload, length, producer, seq, host):
        """An item from its slot's words and payload (``length`` is what the header says;
        ``payload`` never extends past the slot): decoded, or CorruptItem for words no put
        writes or bytes that do not decode, UntrustedItem for a pickle that other users
        could have written (here, or on the host it came from over a bridge: whoever can
        write to the bridge's stream), or NumpyNotInstalled."""
        if tag == BAD_SLOT:
            raise self._corrupt(f"an in-flight record names slot {length} of a pool of "
                                f"{self._nslots}")
        if length > self.item_size:
            raise CorruptItem(self.name, f"its length word says {length} bytes, more than the "
                                         f"{self.item_size} of a slot", producer, seq)
        if tag in PICKLE_TAGS and not (self._pickles_ok if host == 0 else self._allow_pickle):
            raise UntrustedItem(self.name, bytes(payload), producer, seq, bridged=host != 0)
        try:
            return decode(tag, payload)
        except NeedsNumpy as missing:
            raise NumpyNotInstalled(self.name, bytes(payload), *missing.fields, producer,
                                    seq) from None
        except Exception as error:        # a bad tag, bad UTF-8, a pickle that fails
            kind = TYPE_NAMES.get(tag, f"type tag {tag}")
            raise CorruptItem(self.name, f"its {kind} payload does not decode ({error})",
                              producer, seq) from None

    def _decode_batch(self, items):
        """Items of a batch, decoding the raw tuples (see _item). A bad or refused item does
        not lose the rest: the ItemNotDecoded raised for the first one carries them all as
        ``items``, each bad one as the error it raised."""
        out = []
        first = None
        for x in items:
            if type(x) is tuple:
                try:
                    x = self._item(*x)
                except ItemNotDecoded as error:
                    first = first or error
                    x = error
            out.append(x)
        if first is not None:
            first.items = out
            raise first
        return out

    def _corrupt(self, problem):
        """A word no client writes, seen by this one: the FIFO is corrupt (the daemon will
        say so to every client, on its next look)."""
        return CorruptSegment(self.name, f"{problem}: corrupt")

    def _undo(self, lock, sem, held):
        """Give back a lock and ``held`` tokens of ``sem`` and leave the operation."""
        lock.release()
        for _ in range(held):
            sem.release()
        self._idle()

    # -- the take lock sections -------------------------------------------------------------

    def _take(self, max_items, deadline):
        self._check_no_view()
        while True:
            try:
                return self._take_run(max_items, deadline)
            except Park:
                if not self._park(deadline):
                    raise Empty(f"FIFO {self.name!r} is empty") from None

    @_hot_path
    def _ack_section(self):
        """Acknowledge the record alone: one take_lock section around _ack_push, then its
        ``loans`` tokens back; inside an operation that has stored its phase, fenced and
        found the epoch even (the caller). Park if the lock's holder died."""
        crash = self._crash
        lock = self._take_lock
        try:
            lock.acquire(0)
        except posix_ipc.BusyError:
            self._wait_lock(lock, None, 0)
        if crash:
            crash("ack.lock")
        n = self._ack_push(lock)
        lock.release()
        if crash:
            crash("ack.unlock")
        if self._use_loans:
            loans = self._loans
            for _ in range(n):
                loans.release()
        if crash:
            crash("ack.done")

    @_hot_path
    def _ack_push(self, lock):
        """With take_lock held: push the record's slot numbers onto the free list and mark
        it NONE; return how many ``loans`` tokens the caller is to release (none for a slot
        lent to put_view, whose reserved room this gives back instead)."""
        w, e = self._w, self._e
        crash = self._crash
        n = w[e + E_INFLIGHT_N]
        if not 1 <= n <= self.batch_max:
            self._undo(lock, None, 0)
            raise self._corrupt(f"an in-flight record holds {n} items")
        writing = w[e + E_INFLIGHT] == WRITING
        cap, free, rec, fhead = self._nslots, self._free, self._rec, w[H_FREE_HEAD]
        _copy_words(w, rec, 0, free, fhead % cap, cap, n)
        w[H_FREE_HEAD] = fhead + n & WORD_MASK      # the slots are free from here on
        if crash:
            crash("ack.pushed")
        w[e + E_INFLIGHT] = NONE
        if crash:
            crash("ack.cleared")
        if writing:
            # A put_view's slot, not put: the room it reserved goes back too, to the debt
            # first (which takes pay under this lock), as a take gives its room back.
            debt = w[H_DEBT]
            if debt:
                w[H_DEBT] = debt - 1
            else:
                self._empty.release()
            return 0                                # no loans: a lent slot holds none
        return n

    def _take_tokens(self, max_items, deadline):
        """Up to ``max_items`` tokens of ``fill`` (waiting for the first), each with a token
        of ``loans`` when the in-flight limit can bind; returns how many. Everything is given
        back if the wait ends otherwise."""
        fill = self._fill
        limit = max_items
        if self._use_loans:
            loans = self._loans
            try:
                loans.acquire(0)
            except posix_ipc.BusyError:
                self._wait_token(loans, deadline, BLOCKED_IN_FLIGHT, False)
            limit = _take_more(loans, 1, max_items)
        try:
            try:
                fill.acquire(0)
            except posix_ipc.BusyError:
                self._wait_token(fill, deadline, BLOCKED_EMPTY, False)
        except BaseException:
            if self._use_loans:
                for _ in range(limit):
                    loans.release()
            raise
        got = _take_more(fill, 1, limit)
        if self._use_loans:
            for _ in range(limit - got):
                loans.release()
        return got

    @_hot_path
    def _take_run(self, max_items, deadline):
        w, e = self._w, self._e
        crash = self._crash
        fill = self._fill
        w[e + E_PHASE] = GETTING
        fence_acquire()
        fence_release()
        if w[H_EPOCH] & 1:
            raise Park
        state = w[H_STATE]
        if self._stop or state >= STOPPED or state < RUNNING:     # not running or draining
            self._refuse(False)
        combined = False
        inflight = w[e + E_INFLIGHT]
        if inflight in (TAKEN, WRITING):      # WRITING: a put_view that raised ViewInUse
            # The previous take is acknowledged before any wait: in this take's lock section
            # when an item is there at once and the in-flight limit cannot bind, else alone.
            if inflight == TAKEN and not self._use_loans:
                try:
                    fill.acquire(0)
                    combined = True
                except posix_ipc.BusyError:
                    pass
            if not combined:
                self._ack_section()
        if combined:
            got = _take_more(fill, 1, max_items)
        else:
            got = self._take_tokens(max_items, deadline)
        if crash:
            crash("get.fill")
        lock = self._take_lock
        try:
            lock.acquire(0)
        except posix_ipc.BusyError:
            try:
                self._wait_lock(lock, fill, got)
            except BaseException:
                if self._use_loans:
                    for _ in range(got):
                        self._loans.release()
                raise
        if crash:
            crash("get.lock")
        if combined:
            self._ack_push(lock)
        tail = w[H_TAIL]
        w[e + E_INFLIGHT_INDEX] = tail
        w[e + E_INFLIGHT_N] = got
        w[e + E_INFLIGHT] = PREPARED
        if crash:
            crash("get.prepared")
        cap, ring, rec = self._nslots, self._ring, self._rec
        _copy_words(w, ring, tail % cap, rec, 0, cap, got)
        if crash:
            crash("get.copied")
        w[H_TAIL] = tail + got & WORD_MASK   # commit: the slot numbers are in our record first
        if crash:
            crash("get.commit")
        w[e + E_INFLIGHT] = TAKEN
        if crash:
            crash("get.taken")
        free = got
        debt = w[H_DEBT]
        if debt:
            paid = min(debt, got)     # re-queued items beyond the capacity have no empty token
            w[H_DEBT] = debt - paid
            free -= paid
        lock.release()
        if crash:
            crash("get.unlock")
        empty = self._empty
        for _ in range(free):
            empty.release()
        w[e + E_GETS] = w[e + E_GETS] + got & WORD_MASK
        w[e + E_PHASE] = IDLE
        if crash:
            crash("get.done")
        return got

    # -- state ------------------------------------------------------------------------------

    @property
    def rate(self):
        """This client's configured rate (items/s; None when unlimited or not set). It is a
        writable parameter: ``shmfifo set`` may change it at any time."""
        rate = self._seg.floats[self._e + E_RATE]
        return rate if 0 < rate < float("inf") else None

    def set_rate(self, rate):
        """Publish a configured rate for status (None = unlimited)."""
        self._seg.floats[self._e + E_RATE] = float("inf") if rate is None else float(rate)

    def holds_nothing(self):
        """True when this client is between operations with nothing unacknowledged."""
        w = self._w
        return w[self._e + E_PHASE] == IDLE and w[self._e + E_INFLIGHT] == NONE

    # -- closing ----------------------------------------------------------------------------

    def close(self, ack=True):
        """Acknowledge what was taken, free the entry and give up its lease. Only when no
        operation of this client runs (its thread's, or any once the handle waited for
        ``active`` to empty). Idempotent.

        ``ack=False``: items taken and not acknowledged go back to the FIFO instead. The
        entry is left RETURNED with its in-flight record and without its lease, which the
        daemon treats as it treats a dead client's: it re-queues the items at the front."""
        self.closed = True
        # The thread's exit and the handle's close() may both get here: once only, or the
        # second would write into an entry someone else has claimed meanwhile.
        with self._attachment.claim_lock:
            w, e = self._w, self._e
            if w is None:
                return
            if self._view is not None:
                lent, self._view = self._view, None
                self._fast, self._fast_saved = self._fast_saved, None
                for view, _, _ in lent:
                    try:
                        view.release()       # unusable from here on: the slot goes back
                    except BufferError:
                        pass                 # (a view still exported keeps the mapping)
                del lent
            if w[e + E_INFLIGHT] == WRITING or (ack and w[e + E_INFLIGHT] == TAKEN):
                self._ack_on_close()         # a lent slot goes back either way
            w[e + E_PHASE] = IDLE
            if w[e + E_INFLIGHT] not in (TAKEN, WRITING):
                w[e + E_INFLIGHT] = NONE
                w[e + E_STATE] = FREE    # freed before the lease goes: never seen as dead
            else:
                w[e + E_STATE] = RETURNED
            lease.unlock(self._seg.fd, lease.entry_byte(self.index))
            self._release()

    def _ack_on_close(self):
        """Acknowledge the record's slots as a get would, but without waiting on a recovery or
        a stuck lock for long: if that cannot be done now, the record stays TAKEN and close
        leaves the entry RETURNED, so the daemon re-queues its items (at-least-once) and
        frees their slots."""
        w, e = self._w, self._e
        w[e + E_PHASE] = GETTING
        fence_acquire()
        fence_release()
        if w[H_EPOCH] & 1 or w[H_STATE] == CORRUPT:
            return
        lock = self._take_lock
        try:
            lock.acquire(CLOSE_ACK_WAIT)
        except (posix_ipc.BusyError, posix_ipc.SignalError):
            return
        try:
            n = self._ack_push(lock)
        except CorruptSegment:
            return                           # (the lock was given back)
        lock.release()
        if self._use_loans:
            for _ in range(n):
                self._loans.release()

    def abandon(self):
        """Forget this client without touching shared memory: it belongs to the process
        this one was forked from, which still runs it."""
        self.closed = True
        if self._w is not None:
            self._release()

    def _release(self):
        self._w = self._b = None
        fast, self._fast = self._fast, None
        saved, self._fast_saved = self._fast_saved, None     # set aside by a lent view
        for ring in (fast, saved):
            if ring is not None:
                ring.close()      # its buffer export would keep the mapping open

    def __repr__(self):
        state = "closed" if self.closed else f"entry {self.index}"
        return f"<shmfifo client of {self.name!r} {state}>"
