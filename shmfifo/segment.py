"""Opening, creating and closing a FIFO's POSIX objects: the segment and its semaphores.

:class:`Segment` is what every process holds: the daemon (which creates or adopts it), each
client, and ``status``. Opening validates everything before anything is read through the
mapping: a foreign, truncated or half-initialised object, or a semaphore file that is missing
or empty, is reported as :class:`CorruptSegment` and left exactly as it was.

``close()`` releases this process's handle; ``unlink()`` removes the names for everyone, once.
A half-built Segment is safe to close.
"""

import mmap
import os
import time

import posix_ipc

from . import layout, lease, names
from .errors import CorruptSegment, DaemonNotRunning, FifoNotFound

__all__ = ["Segment", "SEM_T_SIZE"]

# sizeof(sem_t) on 64-bit Linux; a shorter file would fault (SIGBUS) when sem_open maps it.
SEM_T_SIZE = 32
# How long an attacher waits for a daemon that holds its lease but has not written MAGIC yet.
STARTING_GRACE = 2.0


def _open_semaphore(name, which):
    path = names.sem_path(name, which)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise CorruptSegment(name, f"its semaphore {which!r} ({path}) is missing") from None
    if size < SEM_T_SIZE:
        raise CorruptSegment(name, f"its semaphore file {path} is {size} bytes, not a semaphore")
    try:
        return posix_ipc.Semaphore(names.sem_name(name, which))
    except posix_ipc.ExistentialError:
        raise CorruptSegment(name, f"its semaphore {which!r} ({path}) is missing") from None


def _young(fd):
    """Created less than STARTING_GRACE seconds ago (a daemon may still be setting it up)."""
    return time.time() - os.fstat(fd).st_ctime < STARTING_GRACE


class Segment:
    """A mapped, validated FIFO segment with its semaphores."""

    def __init__(self, name):
        self.name = name
        self.shm = None
        self.mm = None
        self.words = None      # the segment as u64 words: every shared word goes through it
        self.floats = None     # the same memory as float64 words (rates)
        self.buf = None        # the same memory as bytes (slots, in-flight records, params)
        self.geometry = None
        self.empty = self.fill = self.put_lock = self.take_lock = None
        self._sems = []

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, name, *, require_daemon=True, writable=True, semaphores=True):
        """Open an existing FIFO; raise FifoNotFound, DaemonNotRunning or CorruptSegment.

        A damaged FIFO is reported as such even when its daemon is gone as well."""
        names.validate(name)
        seg = cls(name)
        try:
            try:
                seg.shm = posix_ipc.SharedMemory(names.shm_name(name), read_only=not writable)
            except posix_ipc.ExistentialError:
                raise FifoNotFound(name) from None
            except posix_ipc.PermissionsError:
                raise CorruptSegment(name, "permission denied (it belongs to another user)") \
                    from None
            seg._map_and_validate(writable)
            if semaphores:
                seg._open_semaphores()
            if require_daemon and not seg.daemon_alive():
                raise DaemonNotRunning(name)
            return seg
        except BaseException:
            seg.close()
            raise

    def _map_and_validate(self, writable):
        fd = self.shm.fd
        deadline = time.monotonic() + STARTING_GRACE
        while True:
            size = os.fstat(fd).st_size
            if size < layout.HEADER_SIZE:
                reason = f"it is {size} bytes, shorter than a header ({layout.HEADER_SIZE})"
            else:
                self._map(size, writable)
                geometry = layout.Geometry.read_header(self.words, size)
                if not isinstance(geometry, str):
                    self.geometry = geometry
                    break
                reason = geometry
            # A daemon that holds its lease may be between creating and writing MAGIC, and
            # one that has just created the object has not taken its lease yet.
            starting = lease.is_locked(fd, lease.DAEMON_BYTE) or (
                self.words is None or self.words[layout.H_MAGIC] == 0) and _young(fd)
            if starting and time.monotonic() < deadline:
                self._unmap()
                time.sleep(0.01)
                continue
            raise CorruptSegment(self.name, reason)

    def _map(self, size, writable):
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.mm = mmap.mmap(self.shm.fd, size, mmap.MAP_SHARED, prot)
        self.buf = memoryview(self.mm)
        self.words = self.buf.cast("Q")
        self.floats = self.buf.cast("d")

    def _unmap(self):
        for view in ("floats", "words", "buf"):
            v = getattr(self, view)
            if v is not None:
                v.release()
                setattr(self, view, None)
        if self.mm is not None:
            self.mm.close()
            self.mm = None

    def _open_semaphores(self):
        self.empty = _open_semaphore(self.name, "empty")
        self._sems.append(self.empty)
        self.fill = _open_semaphore(self.name, "fill")
        self._sems.append(self.fill)
        self.put_lock = _open_semaphore(self.name, "mutex")
        self._sems.append(self.put_lock)
        if self.geometry.split_locks:
            self.take_lock = _open_semaphore(self.name, "take")
            self._sems.append(self.take_lock)
        else:
            self.take_lock = self.put_lock

    # -- creating (the daemon) --------------------------------------------------------------

    @classmethod
    def create(cls, name, geometry, mode):
        """Create a new segment and semaphores; return it, or None if the name exists.

        MAGIC is not written here: the daemon writes it last, once it holds its lease and
        every semaphore exists.
        """
        seg = cls(name)
        try:
            try:
                seg.shm = posix_ipc.SharedMemory(names.shm_name(name), posix_ipc.O_CREX,
                                                 mode=mode, size=geometry.total_size)
            except posix_ipc.ExistentialError:
                return None
            os.fchmod(seg.shm.fd, mode)     # the umask masked the create mode
            seg.geometry = geometry
            seg._map(geometry.total_size, True)
            geometry.write_header(seg.words)
            seg.empty = seg._create_semaphore("empty", geometry.capacity, mode)
            seg.fill = seg._create_semaphore("fill", 0, mode)
            seg.put_lock = seg._create_semaphore("mutex", 1, mode)
            if geometry.split_locks:
                seg.take_lock = seg._create_semaphore("take", 1, mode)
            else:
                seg.take_lock = seg.put_lock
            return seg
        except BaseException:
            seg.unlink()
            seg.close()
            raise

    def _create_semaphore(self, which, value, mode):
        sem_name = names.sem_name(self.name, which)
        try:
            sem = posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, mode, value)
        except posix_ipc.ExistentialError:
            # Left over from a FIFO whose segment is gone: nobody can be using it.
            posix_ipc.unlink_semaphore(sem_name)
            sem = posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, mode, value)
        self._sems.append(sem)
        os.chmod(names.sem_path(self.name, which), mode)
        return sem

    # -- queries ----------------------------------------------------------------------------

    @property
    def fd(self):
        return self.shm.fd

    def daemon_alive(self):
        return lease.is_locked(self.shm.fd, lease.DAEMON_BYTE)

    def entry_alive(self, index):
        return lease.is_locked(self.shm.fd, lease.entry_byte(index))

    def semaphores(self):
        """(name, Semaphore) for each semaphore of this FIFO, the lab's three first."""
        pairs = [("empty", self.empty), ("fill", self.fill), ("mutex", self.put_lock)]
        if self.geometry.split_locks:
            pairs.append(("take", self.take_lock))
        return pairs

    # -- closing ----------------------------------------------------------------------------

    def close(self):
        """Release this process's handle (mapping, descriptors, leases). Idempotent."""
        try:
            self._unmap()
        except BufferError:
            # A view of the mapping is still alive somewhere: the mmap object closes its
            # descriptor (a duplicate, holding the same leases) when it is collected.
            self.mm = self.words = self.floats = self.buf = None
        for sem in self._sems:
            try:
                sem.close()
            except posix_ipc.Error:
                pass
        self._sems = []
        if self.shm is not None:
            try:
                self.shm.close_fd()       # drops every OFD lease taken through it
            except (posix_ipc.Error, OSError):
                pass
            self.shm = None

    def unlink(self):
        """Remove every POSIX name of this FIFO, for everyone. Missing names are fine."""
        unlink_names(self.name)


def unlink_names(name):
    """Remove the segment and semaphores of ``name``; return the paths that were removed."""
    removed = []
    try:
        posix_ipc.unlink_shared_memory(names.shm_name(name))
        removed.append(names.shm_path(name))
    except posix_ipc.ExistentialError:
        pass
    for which in names.SEMAPHORES:
        try:
            posix_ipc.unlink_semaphore(names.sem_name(name, which))
            removed.append(names.sem_path(name, which))
        except posix_ipc.ExistentialError:
            pass
    return removed
