"""One log format for every shmfifo process, on stderr, like dmesg::

    2026-11-26 23:58:25.123 producer[4711]: attached to 'lab' (item='a', rate=5/s)

``-q`` keeps only warnings and errors, ``-v`` adds one line per put and take.
"""

import logging
import os
import sys
import time

__all__ = ["get", "setup", "QUIET", "NORMAL", "VERBOSE"]

QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


class _Formatter(logging.Formatter):
    def __init__(self, role):
        super().__init__()
        self.role = role

    def format(self, record):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        return (f"{stamp}.{int(record.msecs):03d} {self.role}[{os.getpid()}]: "
                f"{level}{record.getMessage()}")


def get(role="shmfifo"):
    return logging.getLogger("shmfifo." + role)


def setup(role, verbosity=NORMAL, stream=None):
    """Configure the logger of this process's ``role``; return it."""
    logger = get(role)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(role))
    logger.handlers[:] = [handler]
    logger.setLevel(_LEVELS.get(verbosity, logging.INFO))
    logger.propagate = False
    return logger
