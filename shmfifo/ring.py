"""The ring and its protocol: one client of a FIFO (the lab's exported put/get).

The concurrency contract
------------------------
Semaphores (named, shared by every process of the FIFO):

* ``empty`` counts free slots, ``fill`` counts items present: a producer holds an ``empty``
  token for each slot it is about to fill, a consumer a ``fill`` token for each item it is
  about to take.
* ``put_lock`` excludes producers from each other, ``take_lock`` consumers from each other.
  In the lab's configuration (the default) both are the one ``mutex``; with split locks they
  are two semaphores, since ``empty``/``fill`` already keep producers and consumers off each
  other's slots.

Words (layout.py): producers write ``head``; consumers write ``tail`` and ``debt`` and their
own entry's in-flight record; each client writes only its own entry; the daemon writes
``epoch``, ``state`` and, at quiescence only, anything.

Put:  empty.acquire -> put_lock.acquire -> write slot(s) -> **head += n** (the commit: the item
      is written before the index that makes it visible) -> put_lock.release -> fill.release.
Get:  fill.acquire -> take_lock.acquire -> record PREPARED at index tail -> copy the slot(s)
      into the in-flight record -> **tail += n** (the commit) -> record TAKEN -> pay ``debt``
      or release ``empty``. The item is handled from the private copy; the next get, ``ack``
      or ``close`` marks the record NONE (acknowledged).

What a SIGKILL at each step leaves, and how the daemon repairs it at quiescence:
a token taken and not used (empty/fill/lock held) -> semaphores are recomputed from the ring;
a slot written but not committed -> invisible, overwritten later; a committed put -> present;
a PREPARED record -> committed iff tail == index + n (the dead consumer still held take_lock,
so nobody moved tail since); a TAKEN record -> re-queued at the front (at-least-once: the only
duplicate is an item handled but not yet acknowledged).

Quiescence: before taking any token an operation stores its phase, fences, then reads the
epoch (the daemon stores an odd epoch, fences, then reads phases), so either the daemon sees
the operation or the operation sees the recovery and parks without holding anything. Every
wait is timed (``WAIT_SLICE``); on each timeout or signal a waiter checks its stop flag, the
daemon's state and the epoch, and if a recovery is running it returns every token it holds,
marks itself PARKED with ``ack = epoch`` and waits for the epoch to turn even.

Bound on spare slots: with debt d and in-flight items f, d + f never exceeds
max_clients * batch_max (takes move a unit from one to the other, acks and recoveries only
lower it), so head - tail <= capacity + d never exceeds NSLOTS, even after a re-queue at the
front of a full ring.

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

import os
import time

import posix_ipc

from . import crashpoints, layout, lease, names, table
from .errors import (CorruptItem, Empty, FifoClosed, Full, HandleClosed, ItemNotDecoded,
                     ItemTooLarge, NumpyNotInstalled, Stopped, UntrustedItem, UsageError)
from .items import (PICKLE_TAGS, TYPE_NAMES, NeedsNumpy, decode, encode, payload_length,
                    write_payload)
from .layout import (BLOCKED_EMPTY, BLOCKED_FULL, E_GETS, E_INFLIGHT,
                     E_INFLIGHT_INDEX, E_INFLIGHT_N, E_PHASE, E_PUTS, E_RATE, E_STATE, FREE,
                     RETURNED, GETTING, H_DEBT, H_EPOCH, H_HEAD, H_STATE, H_TAIL, IDLE, NONE,
                     PREPARED, PUTTING, RUNNING, S_PRODUCER, S_PUT_NS, S_SEQ, SLOT_HEADER,
                     SLOT_HEADER_SIZE, STOPPED, TAG_BYTES, TAG_SHIFT, TAG_STR, TAKEN,
                     slot_length, slot_tag)
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


def accelerator():
    """Which path runs put and get in this process: ``"C"`` or ``"none (pure Python)"``
    (the extension is not built, or ``SHMFIFO_PURE=1``). ``--version``, the daemon's ready
    line and ``shmfifo doctor`` say this."""
    return "C" if USE_FASTPATH else "none (pure Python)"


class Message:
    """An item with where it came from: the producer's pid, its sequence number, put time."""

    __slots__ = ("item", "producer", "seq", "put_ns")

    def __init__(self, item, producer, seq, put_ns):
        self.item = item
        self.producer = producer
        self.seq = seq
        self.put_ns = put_ns

    def __repr__(self):
        return (f"Message(item={self.item!r}, producer={self.producer}, seq={self.seq}, "
                f"put_ns={self.put_ns})")


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
                 allow_pickle=False):
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
        self._nslots = g.nslots
        self._slot_size = g.slot_size
        self._slots = g.slots_offset
        self._empty, self._fill = seg.empty, seg.fill
        self._put_lock, self._take_lock = seg.put_lock, seg.take_lock
        self._crash = crashpoints.hook()
        # Unpickling runs code that the item's writer chose: only when no other user can
        # have written the FIFO (segment.py's trust check), or when the caller says so.
        self._pickles_ok = seg.trusted or allow_pickle
        self.pid = os.getpid()
        self._seq = 0
        # Seconds spent waiting for a free slot or an item (not for a lock): a rate loop
        # restarts its schedule after such a stall instead of bursting.
        self.blocked_s = 0.0
        with attachment.claim_lock:       # two threads of this process: never one entry
            self.index = table.claim(seg, self.pid, role, param, rate).index
        e = self._entry = g.entry_offset(self.index)
        self._e = e // 8          # entry's first word
        self._record = e + layout.INFLIGHT_OFFSET
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
            head=H_HEAD, tail=H_TAIL, debt=H_DEBT, state=H_STATE, epoch=H_EPOCH,
            phase=e + E_PHASE, puts=e + E_PUTS, gets=e + E_GETS, inflight=e + E_INFLIGHT,
            inflight_index=e + E_INFLIGHT_INDEX, inflight_n=e + E_INFLIGHT_N,
            PUTTING=PUTTING, GETTING=GETTING, IDLE=IDLE, RUNNING=RUNNING, STOPPED=STOPPED,
            PREPARED=PREPARED, TAKEN=TAKEN, NONE=NONE, TAG_BYTES=TAG_BYTES, TAG_STR=TAG_STR,
            BLOCKED_FULL=BLOCKED_FULL, BLOCKED_EMPTY=BLOCKED_EMPTY,
            slots=self._slots, record=self._record, slot_size=self._slot_size,
            item_size=self.item_size, header_size=SLOT_HEADER_SIZE, tag_shift=TAG_SHIFT,
            producer_word=S_PRODUCER, seq_word=S_SEQ, put_ns_word=S_PUT_NS,
            nslots=self._nslots, pid=self.pid)

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

    def _put_records(self, records, deadline):
        done = 0
        total = len(records)
        while done < total:
            try:
                done += self._put_run(records, done, deadline)
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
    def _put_run(self, records, start, deadline):
        """Put records[start:] into as many free slots as can be had: one lock section."""
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
            want = min(want, self.capacity)
            try:
                while got < want:
                    empty.acquire(0)
                    got += 1
            except posix_ipc.BusyError:
                pass
        if crash:
            crash("put.empty")
        lock = self._put_lock
        try:
            lock.acquire(0)
        except posix_ipc.BusyError:
            self._wait_lock(lock, empty, got)
        if crash:
            crash("put.lock")
        head = w[H_HEAD]
        nslots, size, slots, pid = self._nslots, self._slot_size, self._slots, self.pid
        seq = self._seq
        now = time.monotonic_ns()
        pack = SLOT_HEADER.pack_into
        off = slots + head % nslots * size
        end = slots + nslots * size
        for tag, payload in records[start:start + got]:
            seq += 1
            if type(payload) is tuple:     # parts: a header, then the item's own memory
                n = write_payload(b, off + SLOT_HEADER_SIZE, payload)
            else:
                n = len(payload)
                b[off + SLOT_HEADER_SIZE:off + SLOT_HEADER_SIZE + n] = payload
            pack(b, off, n, tag, pid, seq, now)
            off += size
            if off == end:
                off = slots
        if crash:
            crash("put.written")
        w[H_HEAD] = head + got          # commit: the slots are written before head shows them
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

    # -- get --------------------------------------------------------------------------------

    def get(self, block=True, timeout=None):
        """Take one item; raise Empty if none arrives in time."""
        fast = self._fast
        if fast is not None and not self._stop:
            taken = fast.get()
            if taken is not None:
                return taken if type(taken) is not tuple else self._item(*taken)
        self._enter()
        try:
            deadline = None if block and timeout is None else self._deadline(block, timeout)
            self._w[self._e + E_INFLIGHT] = NONE      # the previous take is acknowledged
            try:
                self._take_run(1, deadline)                # the common case: one frame less
            except Park:
                self._take(1, deadline)
            off = self._record
            word = self._w[off >> 3]                       # the header's first word
            if slot_tag(word) == TAG_BYTES and slot_length(word) <= self.item_size:
                off += SLOT_HEADER_SIZE
                return self._seg.mm[off:off + slot_length(word)]
            return self._decode(off, False)
        finally:
            self._active.pop()

    def get_message(self, block=True, timeout=None):
        """Like get, but return a :class:`Message` with the producer, sequence and put time."""
        self._enter()        # the record is read after the take: nobody may release it
        try:
            fast = self._fast
            if fast is None or self._stop or fast.get() is None:
                self._take(1, self._deadline(block, timeout))
            return self._decode(self._record, True)
        finally:
            self._active.pop()

    def get_many(self, max_items, block=True, timeout=None):
        """Wait for one item (within the timeout), then take up to ``max_items`` (at most the
        FIFO's batch size) that are present, in one lock section. Returns a list."""
        if not isinstance(max_items, int) or max_items < 1:
            raise UsageError("max_items", max_items, "use a whole number of 1 or more")
        max_items = min(max_items, self.batch_max)
        fast = self._fast
        taken = fast.get_many(max_items) if fast is not None and not self._stop else None
        if taken is not None:
            if type(taken) is list:
                return taken
            return self._decode_batch(taken)
        self._enter()
        try:
            n = self._take(max_items, self._deadline(block, timeout))
            rec, size, b, mm = self._record, self._slot_size, self._b, self._seg.mm
            unpack = SLOT_HEADER.unpack_from
            limit = self.item_size
            items = []
            for off in range(rec, rec + n * size, size):
                length, tag, producer, seq, _ = unpack(b, off)
                start = off + SLOT_HEADER_SIZE
                if tag == TAG_BYTES and length <= limit:
                    items.append(mm[start:start + length])   # one copy, straight to bytes
                else:
                    # a bytearray: the one copy, which the decoded item keeps (items.decode)
                    payload = bytearray(b[start:start + min(length, limit)])
                    items.append((tag, payload, length, producer, seq))
            return self._decode_batch(items)
        finally:
            self._active.pop()

    def ack(self):
        """Mark the items of the last get as handled: a crash now will not re-deliver them.
        The next get, get_many or close acknowledges implicitly."""
        self._enter()
        try:
            self._w[self._e + E_INFLIGHT] = NONE
        finally:
            self._active.pop()
        crash = self._crash
        if crash:
            crash("ack")

    def _decode(self, off, with_meta):
        """The item in the in-flight record at ``off`` (read under ``active``)."""
        b = self._b
        n, tag, producer, seq, put_ns = SLOT_HEADER.unpack_from(b, off)
        start = off + SLOT_HEADER_SIZE
        if tag == TAG_BYTES and n <= self.item_size:
            item = self._seg.mm[start:start + n]
        else:
            try:
                item = self._item(tag, b[start:start + min(n, self.item_size)], n, producer,
                                  seq)
            except ItemNotDecoded as error:
                error.put_ns = put_ns
                raise
        if with_meta:
            return Message(item, producer, seq, put_ns)
        return item

    def _item(self, tag, payload, length, producer, seq):
        """An item from its slot's words and payload (``length`` is what the header says;
        ``payload`` never extends past the slot): decoded, or CorruptItem for words no put
        writes or bytes that do not decode, UntrustedItem for a pickle that other users
        could have written, or NumpyNotInstalled."""
        if length > self.item_size:
            raise CorruptItem(self.name, f"its length word says {length} bytes, more than the "
                                         f"{self.item_size} of a slot", producer, seq)
        if tag in PICKLE_TAGS and not self._pickles_ok:
            raise UntrustedItem(self.name, bytes(payload), producer, seq)
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

    def _take(self, max_items, deadline):
        w = self._w
        w[self._e + E_INFLIGHT] = NONE      # the previous take is acknowledged
        while True:
            try:
                return self._take_run(max_items, deadline)
            except Park:
                if not self._park(deadline):
                    raise Empty(f"FIFO {self.name!r} is empty") from None

    @_hot_path
    def _take_run(self, max_items, deadline):
        w, b, e = self._w, self._b, self._e
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
        try:
            fill.acquire(0)
        except posix_ipc.BusyError:
            self._wait_token(fill, deadline, BLOCKED_EMPTY, False)
        got = 1
        if max_items > 1:
            try:
                while got < max_items:
                    fill.acquire(0)
                    got += 1
            except posix_ipc.BusyError:
                pass
        if crash:
            crash("get.fill")
        lock = self._take_lock
        try:
            lock.acquire(0)
        except posix_ipc.BusyError:
            self._wait_lock(lock, fill, got)
        if crash:
            crash("get.lock")
        tail = w[H_TAIL]
        w[e + E_INFLIGHT_INDEX] = tail
        w[e + E_INFLIGHT_N] = got
        w[e + E_INFLIGHT] = PREPARED
        if crash:
            crash("get.prepared")
        nslots, size, rec = self._nslots, self._slot_size, self._record
        first = tail % nslots
        if got == 1:
            off = self._slots + first * size
            n = min(SLOT_HEADER_SIZE + slot_length(w[off >> 3]), size)
            b[rec:rec + n] = b[off:off + n]
        else:
            run = min(got, nslots - first)        # slots up to the end of the ring
            off = self._slots + first * size
            b[rec:rec + run * size] = b[off:off + run * size]
            if run < got:
                rest = (got - run) * size
                b[rec + run * size:rec + run * size + rest] = b[self._slots:self._slots + rest]
        if crash:
            crash("get.copied")
        w[H_TAIL] = tail + got         # commit: the items are safe in our record first
        if crash:
            crash("get.commit")
        w[e + E_INFLIGHT] = TAKEN
        if crash:
            crash("get.taken")
        free = got
        debt = w[H_DEBT]
        if debt:
            paid = min(debt, got)     # re-queued items in spare slots have no empty token
            w[H_DEBT] = debt - paid
            free -= paid
        lock.release()
        if crash:
            crash("get.unlock")
        empty = self._empty
        if free == 1:
            empty.release()
        else:
            for _ in range(free):
                empty.release()
        w[e + E_GETS] += got
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
            w[e + E_PHASE] = IDLE
            if ack or w[e + E_INFLIGHT] == NONE:
                w[e + E_INFLIGHT] = NONE
                w[e + E_STATE] = FREE    # freed before the lease goes: never seen as dead
            else:
                w[e + E_STATE] = RETURNED
            lease.unlock(self._seg.fd, lease.entry_byte(self.index))
            self._release()

    def abandon(self):
        """Forget this client without touching shared memory: it belongs to the process
        this one was forked from, which still runs it."""
        self.closed = True
        if self._w is not None:
            self._release()

    def _release(self):
        self._w = self._b = None
        fast, self._fast = self._fast, None
        if fast is not None:
            fast.close()          # its buffer export would keep the mapping open

    def __repr__(self):
        state = "closed" if self.closed else f"entry {self.index}"
        return f"<shmfifo client of {self.name!r} {state}>"
