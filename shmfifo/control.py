"""Commands that change a FIFO from outside: ``set`` (a writable parameter) and ``clean``."""

import math

from . import layout, lease, names, table
from .errors import CorruptSegment, FifoNotFound, ForeignFifo, ShmfifoError, UsageError
from .layout import H_DAEMON_PID
from .segment import Segment, open_shared_file, unlink_names
from .status import find_client

__all__ = ["set_rate", "clean", "StillInUse"]


class StillInUse(ShmfifoError):
    """``clean`` refused: some process of the FIFO is alive."""

    def __init__(self, name, alive):
        self.name = name
        self.alive = alive
        who = ", ".join(f"{role} pid {pid}" for role, pid in alive)
        super().__init__(f"FIFO {name!r} is in use by {who}; stop them first (kill PID), "
                         f"then clean")


def set_rate(name, pid, rate):
    """Set the rate of client ``pid`` of FIFO ``name`` (None = unlimited), like writing a
    module parameter: the client's loop picks it up at its next deadline.

    Raises UsageError, and changes nothing, for a rate that is not a positive finite number
    (or None) and for a pid that is not a live producer or consumer of the FIFO;
    FifoNotFound if there is no such FIFO. The daemon need not be running: it is not in the
    data path, and neither is this.
    """
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not (rate > 0 and math.isfinite(rate))):
        raise UsageError("rate", rate, "use a positive number of items per second, or None "
                                       "for unlimited")
    seg = Segment.open(name, require_daemon=False, trust="any")
    try:
        entry = find_client(seg, pid)
        if entry is None:
            raise UsageError("pid", pid, f"it is not a producer or consumer attached to FIFO "
                                         f"{name!r} (see: shmfifo status {name})")
        if entry.role not in (layout.ROLE_PRODUCER, layout.ROLE_CONSUMER):
            raise UsageError("pid", pid, "only a producer's or consumer's rate can be set")
        # One aligned 8-byte store: the client reads either the old rate or the new one.
        # (Known window: if the client detached and another process claimed the same entry
        # between find_client and this store, the newcomer's rate is overwritten; the entry
        # is re-checked below so that at least the command does not report success.)
        entry.rate = math.inf if rate is None else float(rate)
        if entry.pid != pid or not entry.active:
            raise UsageError("pid", pid, f"it detached from FIFO {name!r} just now")
    finally:
        seg.close()


def clean(name, *, force=False):
    """Remove the POSIX names of FIFO ``name`` if no process of it is alive.

    Returns the paths removed. Raises StillInUse naming the live processes, or
    CorruptSegment for an unreadable segment unless ``force`` (which still refuses while
    any process holds a lease on it).
    """
    names.validate(name)
    try:
        seg = Segment.open(name, require_daemon=False, semaphores=False, trust="any")
    except FifoNotFound:
        return unlink_names(name)            # maybe semaphores left without a segment
    except ForeignFifo as error:
        if not force:
            raise ForeignFifo(name, error.reason, what="remove") from None
        return _clean_unreadable(name)
    except CorruptSegment:
        if not force:
            raise
        return _clean_unreadable(name)
    try:
        alive = []
        if seg.daemon_alive():
            alive.append(("daemon", seg.words[H_DAEMON_PID]))
        alive += [(e.role_name, e.pid) for e in table.active(seg) if e.alive()]
        if alive:
            raise StillInUse(name, alive)
    finally:
        seg.close()
    return unlink_names(name)


def _clean_unreadable(name):
    try:
        shm = open_shared_file(name, writable=False)
    except FifoNotFound:
        return unlink_names(name)
    except ShmfifoError:
        return unlink_names(name)      # not a regular file (or unopenable): holds no lease
    try:
        # Any lease anywhere in the file means some process still uses it.
        if any(lease.is_locked(shm.fd, byte) for byte in range(0, 1 + layout.MAX_CLIENTS)):
            raise StillInUse(name, [("process", "unknown")])
    finally:
        shm.close_fd()
    return unlink_names(name)
