"""Opening, creating and closing a FIFO's POSIX objects: the segment and its semaphores.

:class:`Segment` is what every process holds: the daemon (which creates or adopts it), each
client, and ``status``. Opening validates everything before anything is read through the
mapping: a foreign, truncated or half-initialised object, or a semaphore file that is missing
or empty, is reported as :class:`CorruptSegment` and left exactly as it was.

``close()`` releases this process's handle; ``unlink()`` removes the names for everyone, once.
A half-built Segment is safe to close.
"""

import errno
import mmap
import os
import stat
import time

import posix_ipc

from . import layout, lease, names
from .errors import CorruptSegment, DaemonNotRunning, FifoNotFound, ForeignFifo, NoSpace

__all__ = ["Segment", "SEM_T_SIZE", "SharedFile", "open_shared_file", "owner_text",
           "reserved_bytes"]

# sizeof(sem_t) on 64-bit Linux; a shorter file would fault (SIGBUS) when sem_open maps it.
SEM_T_SIZE = 32
# How long an attacher waits for a daemon that holds its lease but has not written MAGIC yet.
STARTING_GRACE = 2.0


# Who may be trusted with a FIFO's objects (Segment.open's ``trust``): "own" accepts only
# objects owned by this process's user; "shared" also another user's (a FIFO shared on
# purpose, through the group); "any" anyone's (status and clean only read or remove).
TRUST = ("own", "shared", "any")

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket",
          stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


def owner_text(st):
    """'user NAME (uid N), mode 0NNN' for a stat result."""
    try:
        import pwd
        user = pwd.getpwuid(st.st_uid).pw_name
    except (KeyError, ImportError):
        user = "?"
    return f"user {user} (uid {st.st_uid}), mode {stat.S_IMODE(st.st_mode):04o}"


def _check_owner(name, what, st, trust):
    if trust != "any" and st.st_uid != os.geteuid() and trust != "shared":
        raise ForeignFifo(name, f"{what} belongs to {owner_text(st)}")


def _writable_by_others(st):
    """Could a user other than this one have written it?"""
    return st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o022


class SharedFile:
    """The segment's file in /dev/shm, opened as shm_open opens it (O_NOFOLLOW, O_CLOEXEC)
    and also O_NONBLOCK, so that a named pipe planted at the name cannot block the open;
    then checked to be a regular file. ``fd``, ``close_fd()`` as posix_ipc.SharedMemory."""

    def __init__(self, fd):
        self.fd = fd

    def close_fd(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def open_shared_file(name, writable):
    """Open FIFO ``name``'s segment file: FifoNotFound, or CorruptSegment saying what the
    name holds if it is not a regular file or cannot be opened."""
    path = names.shm_path(name)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | \
        os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FifoNotFound(name) from None
    except OSError as error:
        try:
            kind = _KINDS.get(stat.S_IFMT(os.lstat(path).st_mode))
            owner = owner_text(os.lstat(path))
        except OSError:
            kind, owner = None, "?"
        if kind:
            raise CorruptSegment(name, f"{path} is {kind}, not a shared-memory segment") \
                from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise ForeignFifo(name, f"{path} cannot be opened (permission denied): it belongs "
                                    f"to {owner}") from None
        raise CorruptSegment(name, f"{path} cannot be opened: {error.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise CorruptSegment(name, f"{path} is {kind}, not a shared-memory segment")
    return SharedFile(fd)


def _open_semaphore(name, which, trust):
    """Open one semaphore of FIFO ``name`` after checking its file; returns (sem, stat)."""
    path = names.sem_path(name, which)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CorruptSegment(name, f"its semaphore {which!r} ({path}) is missing") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise CorruptSegment(name, f"its semaphore file {path} is {kind}")
    _check_owner(name, f"its semaphore file {path}", st, trust)
    if st.st_size < SEM_T_SIZE:
        raise CorruptSegment(name, f"its semaphore file {path} is {st.st_size} bytes, not a "
                                   f"semaphore")
    try:
        return posix_ipc.Semaphore(names.sem_name(name, which)), st
    except posix_ipc.ExistentialError:
        raise CorruptSegment(name, f"its semaphore {which!r} ({path}) is missing") from None
    except posix_ipc.PermissionsError:
        raise ForeignFifo(name, f"its semaphore file {path} cannot be opened (permission "
                                f"denied): it belongs to {owner_text(st)}") from None


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
        self.empty = self.fill = self.put_lock = self.take_lock = self.loans = None
        self._sems = []
        # True when no user but this one can have written the segment or its semaphores:
        # only then are pickled items unpickled without the caller's say-so.
        self.trusted = False
        self.stats = {}        # "segment", "empty", ...: os.stat_result of each object

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, name, *, require_daemon=True, writable=True, semaphores=True, trust="own",
             grace=None):
        """Open an existing FIFO; raise FifoNotFound, DaemonNotRunning, CorruptSegment or
        ForeignFifo (an object owned by another user, unless ``trust`` allows it; see TRUST).

        A damaged FIFO is reported as such even when its daemon is gone as well."""
        names.validate(name)
        seg = cls(name)
        try:
            seg.shm = open_shared_file(name, writable)
            seg.stats["segment"] = st = os.fstat(seg.shm.fd)
            _check_owner(name, f"its segment {names.shm_path(name)}", st, trust)
            seg._map_and_validate(writable, STARTING_GRACE if grace is None else grace)
            if semaphores:
                seg._open_semaphores(trust)
                seg.trusted = not any(map(_writable_by_others, seg.stats.values()))
            if require_daemon and not seg.daemon_alive():
                raise DaemonNotRunning(name)
            return seg
        except BaseException:
            seg.close()
            raise

    def _map_and_validate(self, writable, grace=STARTING_GRACE):
        """Map and check the header. A segment that looks half-built is given ``grace``
        seconds to become valid, since its daemon may still be writing it."""
        fd = self.shm.fd
        deadline = time.monotonic() + grace
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

    def _open_semaphores(self, trust):
        opened = {}
        for which in ("empty", "fill", "mutex", "loans") + (
                ("take",) if self.geometry.split_locks else ()):
            sem, self.stats[which] = _open_semaphore(self.name, which, trust)
            self._sems.append(sem)
            opened[which] = sem
        self.empty, self.fill, self.put_lock = opened["empty"], opened["fill"], opened["mutex"]
        self.take_lock = opened.get("take", self.put_lock)
        self.loans = opened["loans"]

    @classmethod
    def adopt(cls, name, mode):
        """Open the FIFO ``name`` that a dead daemon left, for a new daemon to take over:
        only objects of this user and no wider than ``mode``. Returns it with the daemon's
        lease not yet taken (the caller takes it)."""
        seg = cls(name)
        try:
            try:
                seg.shm = open_shared_file(name, writable=True)
            except FifoNotFound:
                raise CorruptSegment(name, "it vanished while starting; try again") from None
            seg.stats["segment"] = os.fstat(seg.shm.fd)
            _check_owner(name, f"its segment {names.shm_path(name)}", seg.stats["segment"],
                         "own")
            return seg
        except BaseException:
            seg.close()
            raise

    def validate_for_adoption(self, mode):
        """Map, validate and open the semaphores of an adopted segment; refuse objects with
        permissions wider than ``mode``."""
        self._map_and_validate(writable=True)
        self._open_semaphores("own")
        for which, st in self.stats.items():
            wider = stat.S_IMODE(st.st_mode) & ~mode
            if wider:
                what = "segment" if which == "segment" else f"semaphore {which!r}"
                raise ForeignFifo(self.name, f"its {what} has mode "
                                             f"{stat.S_IMODE(st.st_mode):04o}, wider than "
                                             f"the {mode:04o} asked for")
        self.trusted = not any(map(_writable_by_others, self.stats.values()))

    @property
    def mode(self):
        """The segment's permission bits, as they are (not as they were asked for)."""
        return stat.S_IMODE(os.fstat(self.shm.fd).st_mode)

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
                seg.shm = SharedFile(os.open(
                    names.shm_path(name),
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode))
            except FileExistsError:
                return None
            os.fchmod(seg.shm.fd, mode)     # the umask masked the create mode
            seg._reserve(geometry.total_size)
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
            seg.loans = seg._create_semaphore("loans", geometry.in_flight, mode)
            return seg
        except BaseException:
            seg.unlink()
            seg.close()
            raise

    def _reserve(self, size):
        """Back every page of the segment now: a tmpfs that is too small (Docker's /dev/shm
        is 64 MB) fails here with a clear error, instead of a SIGBUS in some client later."""
        try:
            os.posix_fallocate(self.shm.fd, 0, size)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                raise
            try:
                vfs = os.statvfs(names.SHM_DIR)
                free = vfs.f_bavail * vfs.f_frsize
            except OSError:
                free = None
            raise NoSpace(self.name, size, free) from None

    def _create_semaphore(self, which, value, mode):
        sem_name = names.sem_name(self.name, which)
        try:
            sem = posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, mode, value)
        except posix_ipc.ExistentialError:
            # Left over from a FIFO whose segment is gone (we hold the segment's name, so
            # nobody can be using it), or planted by another user: replaced either way.
            path = names.sem_path(self.name, which)
            try:
                posix_ipc.unlink_semaphore(sem_name)
            except posix_ipc.PermissionsError:
                try:
                    owner = owner_text(os.lstat(path))
                except OSError:
                    owner = "another user"
                raise ForeignFifo(self.name, f"{path} already exists and belongs to {owner}, "
                                             f"who must remove it") from None
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
        pairs.append(("loans", self.loans))
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
            except OSError:
                pass
            self.shm = None

    def unlink(self):
        """Remove every POSIX name of this FIFO, for everyone. Missing names are fine."""
        unlink_names(self.name)


def reserved_bytes(geometry):
    """What a FIFO of this geometry takes from /dev/shm: tmpfs backs files in whole pages,
    so the segment rounded up to a page (all reserved at creation), and a page for each
    semaphore file (``sizeof(sem_t)`` bytes, one page)."""
    page = os.sysconf("SC_PAGE_SIZE")
    semaphores = 5 if geometry.split_locks else 4      # empty, fill, mutex, loans (+ take)
    return -(-geometry.total_size // page) * page + semaphores * page


def unlink_names(name):
    """Remove the segment and semaphores of ``name``; return the paths that were removed.
    Whatever the name holds (a directory: rmdir). Raises ForeignFifo for what the caller may
    not remove (another user's file in the sticky /dev/shm), after removing the rest."""
    removed, refused = [], []
    for path in [names.shm_path(name)] + [names.sem_path(name, w) for w in names.SEMAPHORES]:
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                os.rmdir(path)
            else:
                os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EACCES, errno.ENOTEMPTY):
                raise
            try:
                refused.append(f"{path} ({owner_text(os.lstat(path))})")
            except OSError:
                refused.append(path)
    if refused:
        raise ForeignFifo(name, "you may not remove " + ", ".join(refused) + (
            f" (removed {', '.join(removed)})" if removed else ""), what="remove")
    return removed
