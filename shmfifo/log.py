"""One log format for every shmfifo process, on stderr, like dmesg::

    2026-11-26 23:58:25.123 producer[4711]: attached to 'lab' (item='a', rate=5/s)

``-q`` keeps only warnings and errors, ``-v`` adds one line per put and take.

When stderr is the journal (systemd sets ``JOURNAL_STREAM`` to its device and inode), each
line instead starts with its syslog priority and carries no time or pid, which the journal
records itself::

    <6>fifo: ready: FIFO 'lab', 32 slots of 128 bytes, ...
    <4>fifo: warning: client(s) died: pid 4711; recovering
"""

import logging
import os
import sys
import time

__all__ = ["get", "setup", "to_journal", "QUIET", "NORMAL", "VERBOSE"]

QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


# syslog(3) priorities, which the journal reads from a "<N>" prefix (sd-daemon(3)).
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))
_DEBUG_PRIORITY = 7


class _Formatter(logging.Formatter):
    def __init__(self, role, journal=False):
        super().__init__()
        self.role = role
        self.journal = journal

    def format(self, record):
        level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        if self.journal:
            priority = next((p for lvl, p in _PRIORITIES if record.levelno >= lvl),
                            _DEBUG_PRIORITY)
            return f"<{priority}>{self.role}: {level}{record.getMessage()}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return (f"{stamp}.{int(record.msecs):03d} {self.role}[{os.getpid()}]: "
                f"{level}{record.getMessage()}")


def to_journal(stream):
    """True when ``stream`` is the journal's own stream (``JOURNAL_STREAM`` is its
    ``device:inode``; a child whose stderr was redirected elsewhere inherits the variable,
    so it is compared, not merely looked for)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def get(role="shmfifo"):
    return logging.getLogger("shmfifo." + role)


def setup(role, verbosity=NORMAL, stream=None):
    """Configure the logger of this process's ``role``; return it."""
    logger = get(role)
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(role, journal=to_journal(stream)))
    logger.handlers[:] = [handler]
    logger.setLevel(_LEVELS.get(verbosity, logging.INFO))
    logger.propagate = False
    return logger
