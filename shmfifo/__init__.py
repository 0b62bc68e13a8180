"""shmfifo: a named, bounded, crash-safe inter-process FIFO on POSIX shared memory.

The lab's exported symbols, as a Python API::

    import shmfifo
    with shmfifo.serve("lab"):                 # or run `shmfifo fifo --name lab`
        with shmfifo.attach("lab") as q:       # in any process
            q.put("a")
            assert q.get() == "a"
"""

from .daemon import FifoDaemon, StopReport, serve
from .errors import (BadName, CorruptSegment, DaemonNotRunning, Empty, FifoClosed, FifoExists,
                     FifoNotFound, ForeignFifo, Full, HandleClosed, ItemNotDecoded, ItemTooLarge,
                     NoFreeEntry, NoSpace, NumpyNotInstalled, ShmfifoError, Stopped,
                     UntrustedItem, UsageError, CorruptItem, ViewInUse)
from .names import DEFAULT_NAME
from .handle import Fifo, attach
from .ring import Message, accelerator

__all__ = ["attach", "serve", "accelerator", "Fifo", "FifoDaemon", "Message", "StopReport",
           "DEFAULT_NAME", "ShmfifoError", "UsageError", "BadName", "ItemTooLarge", "FifoNotFound",
           "DaemonNotRunning", "FifoExists", "CorruptSegment", "FifoClosed", "HandleClosed",
           "Stopped", "NoFreeEntry", "Full", "Empty", "ForeignFifo", "NoSpace",
           "ItemNotDecoded", "UntrustedItem", "CorruptItem", "NumpyNotInstalled",
           "ViewInUse"]
__version__ = "0.1.0"  # the only copy: pyproject.toml reads it (tool.setuptools.dynamic)
