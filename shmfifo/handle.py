"""The handle a program holds: ``shmfifo.attach(name)`` returns a :class:`Fifo`.

A handle is a name and a few options; what it uses underneath belongs to one process and one
thread at a time:

* an :class:`Attachment` per process: the mapped segment, its semaphores, and the descriptor
  (one open file description) through which this process's clients hold their leases;
* a :class:`~shmfifo.ring.Client` per thread: an entry of the client table, with its lease,
  phase and in-flight record. A thread's first operation claims it; it is freed when the
  thread ends, when the handle is closed, or at interpreter exit.

So one handle may be shared by any number of threads (each is a client of the FIFO, shown by
``status`` with the same pid), and any number of handles may be open in one process.

Across ``fork()`` nothing is shared: in the child, the parent's attachments are dropped
without touching shared memory (their descriptors are closed, so the parent's leases,
the daemon's included, die with the parent alone), and a handle used in the child attaches
again as that process's own client. A handle pickles as its name and options, so it can be
passed to a ``multiprocessing`` child under any start method or to a pool, where it attaches
on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from . import aio, layout
from .errors import FifoClosed, HandleClosed, UsageError, ViewInUse
from .layout import H_HEAD, H_STATE, H_TAIL
from .ring import Client, Message
from .waiting import WAIT_SLICE
from .segment import Segment

__all__ = ["Fifo", "Attachment", "attach"]

# How long close() waits for another thread's operation to leave after asking it to stop:
# a waiter looks at its stop flag at least once per wait slice.
CLOSE_WAIT = 4 * WAIT_SLICE
# A spin is a bound on holding the GIL and a core: a second at most.
MAX_SPIN_US = 1e6


def attach(name: str, *, shared: bool = False, allow_pickle: bool = False,
           role: int = layout.ROLE_CLIENT, param: str = "", rate: float = 0.0,
           spin_us: float = 0.0) -> Fifo:
    """Attach to the FIFO ``name`` and return a :class:`Fifo` handle (a context manager).

    shared: accept a FIFO whose segment and semaphores belong to another user (one shared
        with other users on purpose, through its group). By default (False) only FIFOs of
        this process's user are used, and any other raises ForeignFifo.
    allow_pickle: unpickle pickled items even if users other than you can have written
        them. By default (False) they are unpickled only if every object of the FIFO is
        this user's and not group- or world-writable; otherwise getting one raises
        UntrustedItem, which carries its bytes.
    role, param, rate: what ``shmfifo status`` shows for this handle's clients: the role
        (``shmfifo.layout.ROLE_CLIENT``, ``ROLE_PRODUCER`` or ``ROLE_CONSUMER``), a text
        (a producer's item) and a configured rate in items per second (0: not paced). The
        ``shmfifo producer`` and ``consumer`` commands set them; ``shmfifo set`` changes
        the rate.
    spin_us: how long a blocking get polls for an item, in microseconds, before it sleeps
        on the semaphore (0, the default: a few microseconds). Polling answers within a
        microsecond or two where a sleeping consumer needs a wake-up (tens of them), at the
        price of the CPU it spins: a bound longer than the time between items is a busy-poll,
        a core for the consumer (README, Performance). It holds the GIL while it polls.

    Raises FifoNotFound if there is no such FIFO, DaemonNotRunning if its daemon is gone,
    CorruptSegment if the name holds something else, ForeignFifo if it belongs to another
    user, NoFreeEntry if its table is full.
    """
    return Fifo(name, shared=shared, allow_pickle=allow_pickle, role=role, param=param,
                rate=rate, spin_us=spin_us)


class Attachment:
    """One process's mapping of a FIFO, shared by the clients of one handle in that process."""

    def __init__(self, name, shared):
        self.name = name
        self.pid = os.getpid()
        self.claim_lock = threading.RLock()     # claiming and freeing entries
        # Clients running their Python path (which may wait on a semaphore with the GIL
        # released); close() unmaps nothing while one is listed. list.append/pop are atomic.
        self.active = []
        self.clients = weakref.WeakSet()
        self.seg = Segment.open(name, trust="shared" if shared else "own")

    def close(self, ack=True):
        for client in list(self.clients):
            client.close(ack)
        self.seg.close()

    def abandon(self):
        """In a forked child: drop what the parent owns, writing nothing shared. Closing the
        descriptor here leaves the parent's leases held by the parent alone."""
        for client in list(self.clients):
            client.abandon()
        self.seg.close()


class Fifo:
    """A handle on a FIFO, with the semantics of :class:`queue.Queue`.

    Thread-safe: any number of threads may use one handle at once (each thread is its own
    client of the FIFO, with its own acknowledgements: a ``get`` acknowledges what the same
    thread took before), and a thread may have its own handle. Fork-safe and picklable (see
    the module docstring). ``close()`` (or the end of a ``with`` block) frees every client of
    the handle in this process; blocked calls in other threads end with ``HandleClosed``.

    Timeouts: ``None`` waits for ever, ``0`` or ``block=False`` never waits, ``> 0`` is a
    bound in seconds. A full or empty FIFO raises :class:`Full` / :class:`Empty`.

    The options are :func:`attach`'s.
    """

    def __init__(self, name: str, *, shared: bool = False, allow_pickle: bool = False,
                 role: int = layout.ROLE_CLIENT, param: str = "", rate: float = 0.0,
                 spin_us: float = 0.0, _lazy: bool = False) -> None:
        self.name = name
        self.shared = shared
        if not isinstance(spin_us, (int, float)) or not 0 <= spin_us <= MAX_SPIN_US:
            raise UsageError("spin_us", spin_us, f"use 0 to {MAX_SPIN_US:g} microseconds")
        self._options = {"role": role, "param": param, "rate": rate,
                         "allow_pickle": allow_pickle, "spin_us": spin_us}
        self.closed = False
        self._stop = False
        self._lock = threading.Lock()
        self._attachment = None
        self._owner = None
        self._tls = threading.local()
        self._async = {}          # event loop -> aio.State
        self._geometry = None
        _handles.add(self)
        if not _lazy:
            try:
                self._client()        # errors (not found, table full) surface here
            except BaseException:
                self.closed = True
                _handles.discard(self)
                raise

    # -- the clients of this handle ---------------------------------------------------------

    def _client(self):
        """This thread's client, claimed on first use (after a fork: attached anew)."""
        try:
            return self._tls.c
        except AttributeError:
            pass
        with self._lock:
            if self.closed:
                raise HandleClosed(self.name)
            attachment = self._attachment
            if attachment is None:
                attachment = self._attachment = Attachment(self.name, self.shared)
                self._geometry = attachment.seg.geometry
                _exit_hooks()
            client = Client(attachment, **self._options)
            if self._stop:
                client.request_stop()
            attachment.clients.add(client)
            if self._owner is None:
                self._owner = client
        self._tls.c = client
        self._tls.owner = _Owned(client)      # frees the client when this thread ends
        return client

    def _forked(self):
        """After fork(), in the child: nothing of the parent's attachment is ours."""
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._owner = None
        self._async = {}
        attachment, self._attachment = self._attachment, None
        if attachment is not None:
            attachment.abandon()

    @property
    def geometry(self) -> layout.Geometry:
        if self._geometry is None:
            self._client()
        return self._geometry

    @property
    def capacity(self) -> int:
        return self.geometry.capacity

    @property
    def item_size(self) -> int:
        return self.geometry.item_size

    @property
    def batch_max(self) -> int:
        return self.geometry.batch_max

    @property
    def split_locks(self) -> bool:
        return self.geometry.split_locks

    # -- put and get: the calling thread's client does them (ring.py) ------------------------

    # put and get first try the C fast path of the first client of this handle in this
    # process (``_owner``) without looking up the calling thread: the C code itself declines
    # a call from any thread but the one that client belongs to (a thread-local lookup
    # would add about a quarter to the cost of a put+get pair). Otherwise, or when it
    # declines for any other reason, the calling thread's client does the whole operation.

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put one item; raise Full if no slot frees up in time."""
        c = self._owner
        if c is not None:
            fast = c._fast
            if fast is not None and not c._stop and fast.put(item, c._seq + 1):
                c._seq += 1
                return
        try:
            c = self._tls.c
        except AttributeError:
            c = self._client()
        return c.put(item, block, timeout)

    def put_nowait(self, item: Any) -> None:
        return self.put(item, block=False)

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: float | None = None) -> None:
        """Put every item, in order, taking one lock section per run of free slots.

        Only the first slot of each run is waited for. On Full, the items before the first
        one not put are in the FIFO and the exception's ``put`` attribute says how many.
        """
        try:
            c = self._tls.c
        except AttributeError:
            c = self._client()
        return c.put_many(items, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take one item; raise Empty if none arrives in time. Acknowledges what this thread
        took before."""
        c = self._owner
        if c is not None:
            fast = c._fast
            if fast is not None and not c._stop:
                taken = fast.get()
                if taken is not None:
                    return taken if type(taken) is not tuple else c._item(*taken)
        try:
            c = self._tls.c
        except AttributeError:
            c = self._client()
        return c.get(block, timeout)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_message(self, block: bool = True, timeout: float | None = None) -> Message:
        """Like get, but return a :class:`Message` with the producer, sequence and put time."""
        return self._client().get_message(block, timeout)

    @contextlib.contextmanager
    def get_view(self, block: bool = True,
                 timeout: float | None = None) -> Iterator[memoryview]:
        """Take one item and lend its bytes where they lie, without a copy::

            with q.get_view() as view:       # a read-only memoryview into shared memory
                total += process(view)

        The view is of the item's encoded bytes (a bytes item's bytes, a str's UTF-8).
        Leaving the block releases the view and acknowledges the item; a crash inside the
        block re-delivers it. The view is unusable after the block, and what is made from it
        must not outlive the block: copy what you keep (``bytes(view[a:b])``). Something that
        still exports it when the block ends (a numpy array from ``numpy.frombuffer(view)``)
        makes the block end with ViewInUse, the item unacknowledged. No other get or ack of
        this thread may run inside the block (UsageError)."""
        try:
            c = self._tls.c
        except AttributeError:
            c = self._client()
        view = c.get_view(block, timeout)
        try:
            yield view
        finally:
            c.release_view()

    @contextlib.contextmanager
    def get_many_views(self, max_items: int, block: bool = True,
                       timeout: float | None = None) -> Iterator[list[memoryview]]:
        """get_view for a batch: wait for one item (within the timeout), take up to
        ``max_items`` (at most the FIFO's batch size) in one lock section, and lend a list of
        read-only memoryviews, one per item, for the block::

            with q.get_many_views(16) as views:
                total = sum(len(v) for v in views)

        Leaving the block acknowledges them all; a crash inside it re-delivers them all.
        What get_view says of a view holds for each. A slot whose length word exceeds the
        item size is, in its place in the list, the CorruptItem that get would raise."""
        try:
            c = self._tls.c
        except AttributeError:
            c = self._client()
        views = c.get_many_views(max_items, block, timeout)
        try:
            yield views
        finally:
            del views
            c.release_view()

    @contextlib.contextmanager
    def put_view(self, nbytes: int, block: bool = True,
                 timeout: float | None = None) -> Iterator[memoryview]:
        """Write an item of ``nbytes`` bytes in place, in a free slot of shared memory::

            with q.put_view(640 * 480) as buf:     # a writable memoryview of the slot
                frame = numpy.frombuffer(buf, dtype=numpy.uint8).reshape(480, 640)
                camera.read_into(frame)             # no copy on the way in
                del frame                           # nothing made from buf may outlive it

        Entering waits for room as ``put`` does (Full if none comes within the timeout)
        and reserves it; leaving the block normally puts the item, a ``bytes`` item of
        ``nbytes`` bytes for consumers (``get_view`` reads it in place too), without waiting
        again. An exception inside the block, or the process dying there, puts nothing and
        gives the slot and the room back. Entering acknowledges what this thread took
        before, and no get or ack of this thread may run inside the block (UsageError).
        Something that still exports the view when the block ends (an array made from it)
        makes the block end with ViewInUse and nothing put; a close of the handle inside the
        block, with HandleClosed."""
        try:
            c = self._tls.c
        except AttributeError:
            c = self._client()
        view = c.put_view(nbytes, block, timeout)
        try:
            yield view
        except BaseException:
            try:
                c.release_put_view(False)
            except (ViewInUse, HandleClosed):
                pass            # nothing is put either way: the block's own exception goes on
            raise
        c.release_put_view(True)

    def get_many(self, max_items: int, block: bool = True,
                 timeout: float | None = None) -> list[Any]:
        """Wait for one item (within the timeout), then take up to ``max_items`` (at most the
        FIFO's batch size) that are present, in one lock section. Returns a list."""
        try:
            c = self._tls.c
        except AttributeError:
            c = self._client()
        return c.get_many(max_items, block, timeout)

    def ack(self) -> None:
        """Mark what this thread took last as handled: a crash now will not re-deliver it.
        The next get, get_many or close acknowledges implicitly."""
        self._client().ack()

    def __iter__(self) -> Iterator[Any]:
        """Take items until the FIFO shuts down (then the loop ends)."""
        while True:
            try:
                yield self.get()
            except FifoClosed:
                return

    # -- asyncio (aio.py) --------------------------------------------------------------------

    async def aput(self, item: Any, timeout: float | None = None) -> None:
        """Put one item from a coroutine, without blocking the event loop (cancel-safe)."""
        return await aio.put(self, item, timeout)

    async def aput_many(self, items: Iterable[Any], timeout: float | None = None) -> None:
        """Put every item from a coroutine; on a timeout, Full says how many went in."""
        return await aio.put_many(self, items, timeout)

    async def aget(self, timeout: float | None = None) -> Any:
        """Take one item from a coroutine. A cancelled or timed-out aget never takes one."""
        return await aio.get(self, timeout)

    async def aget_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Take 1..max_items items from a coroutine, waiting for the first one only."""
        return await aio.get_many(self, max_items, timeout)

    # -- state ------------------------------------------------------------------------------

    def _words(self):
        return self._client()._seg.words

    def qsize(self) -> int:
        """Items present now (approximate while others run, as for queue.Queue)."""
        w = self._words()
        return max(0, min(w[H_HEAD] - w[H_TAIL], self.geometry.nslots))

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self.qsize() >= self.capacity

    def daemon_alive(self) -> bool:
        return self._client()._seg.daemon_alive()

    def state(self) -> str:
        """The daemon's word: 'running', 'draining' or 'stopped'."""
        return layout.STATE_NAMES.get(self._words()[H_STATE], "unknown")

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def index(self) -> int:
        """The client-table entry of the calling thread's client."""
        return self._client().index

    @property
    def blocked_s(self) -> float:
        """Seconds the calling thread's client waited for a slot or an item."""
        return self._client().blocked_s

    @property
    def rate(self) -> float | None:
        """The calling thread's client's configured rate (None when unlimited or unset): a
        writable parameter, which ``shmfifo set`` may change at any time."""
        return self._client().rate

    def set_rate(self, rate: float | None) -> None:
        self._client().set_rate(rate)

    def check_item(self, item: Any) -> None:
        """Raise ItemTooLarge now if ``item`` cannot fit (what put would raise)."""
        self._client()._encode(item)

    # -- stopping and closing ---------------------------------------------------------------

    def request_stop(self) -> None:
        """Make blocked and future operations of this handle raise Stopped, in every thread.
        Signal-safe (it only sets flags)."""
        self._stop = True
        attachment = self._attachment
        if attachment is not None:
            for client in list(attachment.clients):
                client.request_stop()

    def close(self, ack: bool = True) -> None:
        """Acknowledge what was taken, free this handle's clients and release it. Blocked
        calls in other threads end with HandleClosed. Idempotent.

        ``ack=False`` gives back instead what was taken and not acknowledged: the daemon
        re-queues it at the front of the FIFO, as it does a crashed client's items (for a
        consumer that cannot hand on what it took, such as one whose output went away)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            attachment, self._attachment = self._attachment, None
        _handles.discard(self)
        self._owner = None
        aio.close_all(self)
        # Every thread's local slot goes now, but the clients in them are closed below, after
        # their operations left (dropping the old slots would close them at once).
        threads_clients, self._tls = self._tls, _ClosedLocal(self.name)
        if attachment is None or attachment.pid != os.getpid():
            return
        clients = list(attachment.clients)
        for client in clients:
            client.closed = True      # no operation starts from here on
        if attachment.active:
            # Another thread is inside an operation: ask it to leave, then wait for it.
            for client in clients:
                client.request_stop()
            deadline = time.monotonic() + CLOSE_WAIT
            while attachment.active and time.monotonic() < deadline:
                time.sleep(0.001)
            if attachment.active:
                # Still inside after that: leave it all mapped (freed at exit).
                _stuck.append(threads_clients)
                return
        attachment.close(ack)

    def __enter__(self) -> Fifo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __reduce__(self):
        if self.closed:
            raise HandleClosed(self.name)
        return (_unpickle, (self.name, dict(self._options, shared=self.shared)))

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<shmfifo.Fifo {self.name!r} {state}>"


def _unpickle(name, options):
    """A handle received from another process: it attaches on first use."""
    return Fifo(name, _lazy=True, **options)


class _Owned:
    """What a thread's local slot holds: its client, freed when the thread ends (the
    thread's locals are dropped then, and with them this object)."""

    __slots__ = ("client",)

    def __init__(self, client):
        self.client = client

    def __del__(self):
        client = self.client
        try:
            if client.pid == os.getpid():
                client.close()
        except Exception:
            pass


class _ClosedLocal:
    """A closed handle's thread-local: every operation says the handle is closed."""

    def __init__(self, name):
        self._name = name

    @property
    def c(self):
        raise HandleClosed(self._name)


# -- process lifetime --------------------------------------------------------------------------

_handles = weakref.WeakSet()
_stuck = []        # thread-local slots of handles closed while a thread stayed inside
_exit_pid = None


def _close_all():
    for handle in list(_handles):
        attachment = handle._attachment
        if attachment is not None and attachment.active:
            # A (daemon) thread is still inside an operation as the interpreter exits:
            # closing would raise HandleClosed in it. Its lease dies with the process.
            continue
        try:
            handle.close()
        except Exception:
            pass


def _exit_hooks():
    """Close every handle when this process exits normally, and when a multiprocessing child
    ends (it leaves with os._exit, after running its finalizers but not atexit)."""
    global _exit_pid
    if _exit_pid == os.getpid():
        return
    _exit_pid = os.getpid()
    atexit.register(_close_all)
    if "multiprocessing" in sys.modules:
        from multiprocessing import util
        util.Finalize(None, _close_all, exitpriority=100)


def _after_fork_in_child():
    for handle in list(_handles):
        handle._forked()
    from . import daemon
    daemon.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
