"""Byte sizes as a person writes them: ``4096``, ``64K``, ``1M``, ``1MiB``, ``2g``.

The suffixes are powers of 1024 (K = 1024, M = 1024², G = 1024³), as ``--shm-size`` and
tmpfs's ``size=`` read them; ``KiB``, ``MiB`` and ``GiB`` say the same unambiguously. Case
does not matter. ``KB``/``MB`` are refused: half the tools that print them mean powers of
1000. ``shmfifo fifo --item-size``, ``shmfifo doctor --item-size`` and ``item_size=`` of
:class:`~shmfifo.FifoDaemon` and :func:`~shmfifo.serve` read sizes with :func:`parse_size`.
"""

import re

from .errors import UsageError

__all__ = ["parse_size", "SIZE_ALLOWED"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE = re.compile(r"\s*([0-9]+)\s*(?:([kmg])(?:ib)?)?\s*\Z", re.ASCII | re.IGNORECASE)
SIZE_ALLOWED = ("use a whole number of bytes of 1 or more, alone or with a suffix K, M or G "
                "(KiB, MiB, GiB: powers of 1024), such as 4096, 64K or 1M")


def parse_size(value, argument="item-size"):
    """A size in bytes from an int or a string such as ``"1M"``; UsageError (a ValueError)
    naming ``argument`` and what is allowed for anything else, or for less than 1 byte.
    Whether the size is in range for its use is the caller's to say."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and _SIZE.match(value):
        digits, unit = _SIZE.match(value).groups()
        size = int(digits) * _UNITS[(unit or "").lower()]
    else:
        size = 0
    if size < 1:
        raise UsageError(argument, value, SIZE_ALLOWED)
    return size
