"""FIFO names and the POSIX names derived from them, in one place.

A FIFO called ``lab`` owns these objects, all visible in ``/dev/shm``::

    /dev/shm/shmfifo.lab              the segment (header, client table, slots)
    /dev/shm/sem.shmfifo.lab.empty    free slots
    /dev/shm/sem.shmfifo.lab.fill     items present
    /dev/shm/sem.shmfifo.lab.mutex    the lab's mutex (the put lock when locks are split)
    /dev/shm/sem.shmfifo.lab.take     the take lock, only when locks are split
"""

import os
import re

from .errors import BadName

__all__ = ["DEFAULT_NAME", "PREFIX", "SHM_DIR", "validate", "shm_name", "sem_name", "sem_path",
           "shm_path", "SEMAPHORES", "list_fifos"]

DEFAULT_NAME = "default"
PREFIX = "shmfifo."
SHM_DIR = "/dev/shm"
# Linux limits a name in /dev/shm to 255 bytes; "sem." + prefix + suffix must fit with room.
MAX_NAME = 100
_VALID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
ALLOWED = f"use 1 to {MAX_NAME} characters from A-Z a-z 0-9 _ . - (not starting with . or -)"

SEMAPHORES = ("empty", "fill", "mutex", "take", "loans")


def validate(name):
    """Return ``name`` if it is a valid FIFO name, else raise :class:`BadName`."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not _VALID.match(name):
        raise BadName(name, ALLOWED)
    return name


def shm_name(name):
    return "/" + PREFIX + name


def sem_name(name, which):
    return "/" + PREFIX + name + "." + which


def shm_path(name):
    return os.path.join(SHM_DIR, PREFIX + name)


def sem_path(name, which):
    # glibc keeps a named semaphore as the file "sem.<name>" in /dev/shm.
    return os.path.join(SHM_DIR, "sem." + PREFIX + name + "." + which)


def list_fifos():
    """Names of every shmfifo segment on this machine, sorted."""
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    names = []
    for entry in entries:
        if entry.startswith(PREFIX):
            name = entry[len(PREFIX):]
            if _VALID.match(name):
                names.append(name)
    return sorted(names)
