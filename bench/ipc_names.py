"""Unique POSIX names for one benchmark run, and the sweep that proves none were left behind.

Every name the suite creates (shmfifo FIFOs, message queues, the C ring's segment and
semaphores) contains TOKEN, which holds the pid of the benchmark process. Each component unlinks
its own names in a ``finally``; :func:`sweep` runs at the very end as a safety net and reports
what it had to remove, because a leftover means a cleanup path is broken.
"""

import itertools
import os
from pathlib import Path

import posix_ipc

__all__ = ["TOKEN", "unique", "note_message_queue", "sweep"]

TOKEN = f"bq{os.getpid()}"
_counter = itertools.count()
_message_queues = set()
DEV_SHM = Path("/dev/shm")


def unique(kind):
    """A short name valid for shmfifo (``[A-Za-z0-9_.-]``) and for POSIX objects."""
    return f"{TOKEN}{kind}{next(_counter)}"


def note_message_queue(name):
    """Remember a message queue name: /dev/mqueue is often not mounted, so it cannot be listed."""
    _message_queues.add(name)


def sweep():
    """Unlink anything of ours still present; return the names found (empty when all is well)."""
    found = []
    for path in DEV_SHM.iterdir():
        if TOKEN in path.name:
            found.append(str(path))
            path.unlink(missing_ok=True)
    for name in sorted(_message_queues):
        try:
            posix_ipc.unlink_message_queue(name)
        except posix_ipc.ExistentialError:
            continue
        found.append(f"mqueue {name}")
    return found
