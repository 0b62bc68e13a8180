"""Leases: who is alive, decided by the kernel.

Each client holds an open-file-description (OFD) write lock on one byte of the segment's
file: the daemon byte 0, client entry i byte 1 + i. The kernel drops the lock when the last
descriptor of that open file description closes, that is when the process dies, however it
dies, and before it becomes a zombie. Unlike a pid, a lock cannot be fooled by pid reuse, and
unlike classic POSIX record locks, two handles in one process do not share it.
"""

import errno
import fcntl
import os
import struct

__all__ = ["DAEMON_BYTE", "entry_byte", "try_lock", "unlock", "is_locked"]

# struct flock on Linux (x86_64 and aarch64): short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid, padded to 32 bytes. l_pid must be 0 for OFD locks.
_FLOCK = struct.Struct("hhqqi4x")
DAEMON_BYTE = 0


def entry_byte(index):
    return 1 + index


def try_lock(fd, byte):
    """Take the lease on ``byte``; False if another open file description holds it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def unlock(fd, byte):
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, byte, 1, 0))


def is_locked(fd, byte):
    """True if a lease on ``byte`` is held through another open file description."""
    reply = fcntl.fcntl(fd, fcntl.F_OFD_GETLK,
                        _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
    return _FLOCK.unpack(reply)[0] != fcntl.F_UNLCK
