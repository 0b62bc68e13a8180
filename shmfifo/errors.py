"""Exceptions raised by shmfifo, named by their cause.

Every error a user can cause carries the fields that identify it and a message that says
how to fix it. ``Full`` and ``Empty`` subclass :class:`queue.Full` and :class:`queue.Empty`
so code written for :mod:`queue` or :mod:`multiprocessing` catches them unchanged.
"""

from __future__ import annotations

import queue

__all__ = [
    "ShmfifoError", "UsageError", "BadName", "ItemTooLarge", "FifoNotFound", "DaemonNotRunning",
    "FifoExists", "CorruptSegment", "FifoClosed", "HandleClosed", "ViewInUse", "Stopped",
    "NoFreeEntry",
    "Full", "Empty", "ForeignFifo", "NoSpace", "ItemNotDecoded", "UntrustedItem", "CorruptItem",
    "NumpyNotInstalled", "MissingExtra", "CannotListen",
]


class ShmfifoError(Exception):
    """Base class of every error shmfifo raises on purpose."""


class UsageError(ShmfifoError, ValueError):
    """An argument has a value that is not allowed; the message names it and what is allowed."""

    def __init__(self, argument: str, given: object, allowed: str) -> None:
        self.argument = argument
        self.given = given
        self.allowed = allowed
        super().__init__(f"{argument}: {given!r} is not allowed; {allowed}")


class BadName(UsageError):
    """A FIFO name that cannot be turned into POSIX names safely."""

    def __init__(self, name: object, allowed: str) -> None:
        super().__init__("name", name, allowed)
        self.name = name


class ItemTooLarge(ShmfifoError, ValueError):
    """An item whose encoded size exceeds the FIFO's item size. Nothing is truncated."""

    def __init__(self, size: int, item_size: int, name: str) -> None:
        self.size = size
        self.item_size = item_size
        self.name = name
        super().__init__(
            f"item of {size} bytes does not fit FIFO {name!r}, whose items hold at most "
            f"{item_size} bytes (start the FIFO with --item-size {size} or larger)"
        )


class FifoNotFound(ShmfifoError):
    """No FIFO of this name exists: the lab's unresolved symbol."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"no FIFO named {name!r} (start one with: shmfifo fifo --name {name})"
        )


class DaemonNotRunning(FifoNotFound):
    """The FIFO's names exist but its daemon is dead, so no new client may attach."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.args = (
            f"the daemon of FIFO {name!r} is not running (restart it with: shmfifo fifo --name "
            f"{name}; it adopts the queued items)",
        )


class FifoExists(ShmfifoError):
    """A daemon for this name is already running."""

    def __init__(self, name: str, pid: int | None = None) -> None:
        self.name = name
        self.pid = pid
        who = f" (pid {pid})" if pid else ""
        super().__init__(
            f"a daemon for FIFO {name!r} is already running{who}; stop it first or pick "
            f"another --name"
        )


class CorruptSegment(ShmfifoError):
    """The shared-memory object of this name is not a valid shmfifo segment; nothing was changed."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(
            f"FIFO {name!r} is not a usable shmfifo segment: {reason} (nothing was changed; "
            f"if no process uses it, remove it with: shmfifo clean {name} --force)"
        )


class ForeignFifo(ShmfifoError):
    """An object of the FIFO belongs to another user, or is open to more users than asked:
    refused, since whoever can write it can make this process run code or lose items."""

    def __init__(self, name: str, reason: str, what: str = "use") -> None:
        self.name = name
        self.reason = reason
        if what == "remove":
            super().__init__(f"FIFO {name!r}: {reason}; run shmfifo clean {name} --force as "
                             f"its owner or as root")
        else:
            super().__init__(
                f"refusing FIFO {name!r}: {reason}, not to you, so its owner could make you "
                f"run code or lose items (pick another name, or remove it as its owner or "
                f"root with: shmfifo clean {name} --force; to use a FIFO shared with another "
                f"user on purpose, attach with shared=True / --shared)")


class NoSpace(ShmfifoError):
    """/dev/shm cannot hold the segment: refused at creation, not a SIGBUS later."""

    def __init__(self, name: str, needed: int, free: int | None) -> None:
        self.name = name
        self.needed = needed
        self.free = free
        has = f"has {free:,} bytes free" if free is not None else "is full"
        super().__init__(
            f"FIFO {name!r} needs {needed:,} bytes of shared memory, but /dev/shm {has} "
            f"(give it more: docker run --shm-size=..., or mount -o remount,size=... /dev/shm; "
            f"or make the FIFO smaller with --size, --item-size or --max-clients)")


def _origin(producer, seq):
    """' from producer P (seq S)' where the item's header could be read."""
    return f" from producer {producer} (seq {seq})" if producer else ""


class ItemNotDecoded(ShmfifoError):
    """An item was taken but is not handed over as an object; the subclass says why
    (:class:`UntrustedItem`, :class:`CorruptItem`, :class:`NumpyNotInstalled`). The next get
    goes on, and acknowledges it. Raised by get_many, ``items`` holds the whole batch, each
    item that was not decoded as its error."""

    items: list
    put_ns: int | None
    host: str | None = None       # the origin host, when known (Message.host)


class UntrustedItem(ItemNotDecoded):
    """A pickled item in a FIFO that other users can write: not unpickled (unpickling runs
    code of the writer's choosing). The item was taken; ``payload`` holds its bytes."""

    def __init__(self, name: str, payload: bytes, producer: int | None = None,
                 seq: int | None = None, put_ns: int | None = None,
                 bridged: bool = False) -> None:
        self.name = name
        self.payload = payload
        self.producer = producer
        self.seq = seq
        self.put_ns = put_ns
        writers = ("it came over a bridge, and whoever can write to the bridge's stream could "
                   "have written it" if bridged else
                   "users other than you can write to that FIFO")
        super().__init__(
            f"item{_origin(producer, seq)} of FIFO {name!r} is a pickled object of "
            f"{len(payload)} bytes, and {writers}: not unpickled (attach with "
            f"allow_pickle=True, or --allow-pickle, if you trust all of them)")


class CorruptItem(ItemNotDecoded):
    """One item whose words no put writes (a length beyond the item size, an unknown type
    tag) or whose bytes do not decode. It was taken, and is skipped: the next get goes on."""

    def __init__(self, name: str, reason: str, producer: int | None = None,
                 seq: int | None = None) -> None:
        self.name = name
        self.reason = reason
        self.producer = producer
        self.seq = seq
        self.put_ns: int | None = None
        super().__init__(f"skipped a corrupt item{_origin(producer, seq)} of FIFO {name!r}: "
                         f"{reason}")


class NumpyNotInstalled(ItemNotDecoded):
    """A numpy array taken by a process where numpy is not installed. Nothing is lost:
    ``payload`` holds the item's bytes, ``dtype`` (a ``dtype.str`` such as '<f8'),
    ``shape`` and ``order`` ('C', or 'F' for Fortran) describe it, and ``data`` is its raw
    data (``numpy.frombuffer(e.data, e.dtype).reshape(e.shape, order=e.order)`` rebuilds
    it where numpy is installed)."""

    def __init__(self, name: str, payload: bytes, dtype: str, shape: tuple, order: str,
                 offset: int, producer: int | None = None, seq: int | None = None,
                 put_ns: int | None = None) -> None:
        self.name = name
        self.payload = payload
        self.dtype = dtype
        self.shape = shape
        self.order = order
        self.data = memoryview(payload)[offset:]
        self.producer = producer
        self.seq = seq
        self.put_ns = put_ns
        super().__init__(
            f"item{_origin(producer, seq)} of FIFO {name!r} is a numpy array (dtype {dtype!r}, "
            f"shape {shape}) and numpy is not installed here: not decoded (pip install numpy; "
            f"the error holds its bytes as data, with dtype, shape and order)")


class FifoClosed(ShmfifoError):
    """The daemon is stopping: producers must stop, and a drained queue yields nothing more."""

    put: int        # raised by put_many: how many of its items went in (set only there)

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"FIFO {name!r} is shutting down")


class HandleClosed(ShmfifoError):
    """This handle was closed (by ``close()`` or leaving its ``with`` block)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"this handle on FIFO {name!r} is closed; attach again to use the FIFO")


class ViewInUse(ShmfifoError, BufferError):
    """A get_view or put_view block ended while something made from its view (a numpy array,
    another memoryview) still referred to the item's slot: the slot cannot be given back (or,
    for put_view, put) under it."""

    def __init__(self, name: str, writing: bool = False) -> None:
        self.name = name
        self.writing = writing
        if writing:
            outcome = ("nothing is put, and the slot goes back at this thread's next get, "
                       "ack, put_view or close; drop what you made from the view inside the "
                       "block")
        else:
            outcome = ("the item stays unacknowledged; copy what you keep (bytes(view), "
                       "numpy.array(...)) and drop the rest inside the block")
        super().__init__(
            f"the view of an item of FIFO {name!r} is still in use as its block ends (an "
            f"array or memoryview made from it): {outcome}")


class Stopped(ShmfifoError):
    """This handle was asked to stop (``request_stop``) while it waited; it holds nothing."""

    put: int        # raised by put_many: how many of its items went in (set only there)


class NoFreeEntry(ShmfifoError):
    """Every entry of the client table is taken."""

    def __init__(self, name: str, max_clients: int) -> None:
        self.name = name
        self.max_clients = max_clients
        super().__init__(
            f"FIFO {name!r} already has {max_clients} clients attached, its maximum (start it "
            f"with a larger --max-clients)"
        )


class MissingExtra(ShmfifoError):
    """A feature that needs an optional library which is not installed."""

    def __init__(self, feature, library, extra):
        self.feature = feature
        self.library = library
        self.extra = extra
        super().__init__(
            f"{feature} needs the {library} library, which is not installed (install it "
            f"with: pip install 'shmfifo[{extra}]')"
        )


class CannotListen(ShmfifoError):
    """A server could not listen on an address and port: taken, not allowed, not this
    machine's, or not an address at all."""

    def __init__(self, what, addr, port, reason, hint):
        self.addr = addr
        self.port = port
        self.reason = reason
        host = f"[{addr}]" if ":" in addr else addr
        super().__init__(f"cannot serve {what} on {host}:{port}: {reason} ({hint})")


class Full(ShmfifoError, queue.Full):
    """put on a full FIFO without blocking, or after its timeout."""

    put: int        # raised by put_many: how many of its items went in (set only there)


class Empty(ShmfifoError, queue.Empty):
    """get on an empty FIFO without blocking, or after its timeout."""
