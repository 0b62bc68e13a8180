"""Items as records of a byte stream, for ``producer --stdin`` and ``consumer --raw``::

    $ seq 1 3 | shmfifo producer --stdin             # items '1', '2', '3'
    $ shmfifo consumer --raw count=3                 # writes 1\\n2\\n3\\n and nothing else
    $ find . -print0 | shmfifo producer --stdin -0   # NUL-separated records

A record is the bytes between two separators (newline, or NUL with ``-0``), without the
separator; a last record with no separator after it is a record too. A record that is valid
UTF-8 is put as a str, any other as bytes, so text stays text for Python consumers and
binary input still round-trips byte for byte. Going out, a bytes item is written as it is, a
str as UTF-8, and each is followed by the separator.
"""

import os
import select
import time

from .errors import ShmfifoError

__all__ = ["RecordReader", "RecordTooLong", "item_of", "bytes_of", "NEWLINE", "NUL"]

NEWLINE, NUL = b"\n", b"\0"
READ_SIZE = 1 << 16
# How long a read waits for input before it lets the caller look at its stop flag.
POLL_SLICE = 0.05


class RecordTooLong(ShmfifoError):
    """A record of the input cannot be an item of this FIFO: it is longer than its item size."""

    def __init__(self, number, length, limit, separator, complete=True):
        self.number, self.length, self.limit = number, length, limit
        name = "line" if separator == NEWLINE else "record"
        more = "" if complete else "more than "     # refused before its end was read
        super().__init__(
            f"{name} {number} of the input has {more}{length} bytes, and items of this FIFO "
            f"hold at most {limit}; the {number - 1} {name}s before it were put, nothing "
            f"after (use a FIFO with a larger --item-size)")


def item_of(record):
    """The item a record becomes: a str if it is UTF-8, else the bytes themselves."""
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError:
        return record


def bytes_of(item):
    """The bytes an item is written as: bytes-like objects as they are, a str as UTF-8,
    anything else as the UTF-8 of its str()."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return str(item).encode("utf-8", "surrogateescape")


class RecordReader:
    """The records of a file descriptor, as lists of whatever has arrived.

    ``next_batch()`` returns the complete records read so far (at least one), or ``None`` at
    the end of the input or when ``stopping()`` became true while waiting for input: a
    reader blocked on a terminal or a quiet pipe still notices a stop within POLL_SLICE.
    A record longer than ``limit`` raises RecordTooLong as soon as that is known, without
    reading it to its end.
    """

    def __init__(self, fd, separator=NEWLINE, limit=None, stopping=lambda: False):
        self.fd = fd
        self.separator = separator
        self.limit = limit
        self.stopping = stopping
        self.count = 0            # records returned so far
        self.waited_s = 0.0       # time spent waiting for input (a stall, for the pacer)
        self._pending = b""
        self._eof = False
        self._error = None        # raised once the records before it have been returned

    def next_batch(self):
        while True:
            if self._error is not None:
                raise self._error
            if self._eof:
                return None
            chunk = self._read()
            if chunk is None:
                return None
            if chunk:
                records = (self._pending + chunk).split(self.separator)
                self._pending = records.pop()
            else:
                self._eof = True
                records = [self._pending] if self._pending else []
                self._pending = b""
            records = self._good_prefix(records)
            if self._error is None and self.limit is not None \
                    and len(self._pending) > self.limit:
                # Known too long before its end: say so now rather than read it all.
                self._error = RecordTooLong(self.count + len(records) + 1,
                                            len(self._pending), self.limit, self.separator,
                                            complete=False)
            if records:
                self.count += len(records)
                return records

    def _good_prefix(self, records):
        """The records before the first one too long (which becomes the pending error)."""
        if self.limit is not None:
            for k, record in enumerate(records):
                if len(record) > self.limit:
                    self._error = RecordTooLong(self.count + k + 1, len(record), self.limit,
                                                self.separator)
                    return records[:k]
        return records

    def _read(self):
        """What the next read returns, or None if a stop was asked while waiting for it."""
        started = time.monotonic()
        try:
            while True:
                if self.stopping():
                    return None
                try:
                    ready, _, _ = select.select([self.fd], [], [], POLL_SLICE)
                except InterruptedError:
                    continue
                if ready:
                    return os.read(self.fd, READ_SIZE)
        finally:
            self.waited_s += time.monotonic() - started
