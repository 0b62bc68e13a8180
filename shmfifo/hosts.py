"""The host table: the names of the hosts that items came from over a bridge.

An item put on this machine has host number 0 in its slot header. A bridge that puts an item
from another host names that host here once, and the item's slot carries the entry's number,
so that a consumer sees the producer pid and sequence number together with the host they
belong to (layout.py, "host table entry"). Entries are appended under the put lock, the name
before the count that publishes it, and never change afterwards; a reader needs no lock.
"""

import socket

from .layout import (H_HOSTS, HOST_ENTRY_SIZE, HOST_LOCAL, HOST_NAME_BYTES, HOST_UNKNOWN,
                     MAX_HOSTS, WORD)

MAX_ORIGIN = (1 << 64) - 1          # a producer pid or seq fits a u64 slot word

__all__ = ["local_name", "name_of", "number_of", "fit"]

_LOCAL = None


def local_name():
    """This machine's host name (socket.gethostname), as items put here are attributed."""
    global _LOCAL
    if _LOCAL is None:
        _LOCAL = fit(socket.gethostname())
    return _LOCAL


def fit(name):
    """``name`` cut to what an entry holds (HOST_NAME_BYTES of UTF-8, at a character
    boundary), so that a name compares equal to what the table gives back."""
    raw = str(name).encode("utf-8", "backslashreplace")[:HOST_NAME_BYTES]
    return raw.decode("utf-8", "ignore")


def name_of(seg, number):
    """The name of host ``number`` in a slot header: this machine's for 0; None for a number
    that names no published entry (HOST_UNKNOWN, or words scribbled)."""
    if number == HOST_LOCAL:
        return local_name()
    if not 1 <= number <= min(seg.words[H_HOSTS], MAX_HOSTS):
        return None
    off = seg.geometry.host_offset(number)
    length = min(seg.words[off // WORD], HOST_NAME_BYTES)
    return bytes(seg.buf[off + WORD:off + WORD + length]).decode("utf-8", "replace")


def number_of(seg, name):
    """The number of host ``name`` for an item that came over a bridge, appending an entry if
    it has none: HOST_UNKNOWN if the table is full. Never HOST_LOCAL, even for this
    machine's own name: an origin is what the stream says, which whoever can write to the
    stream chose, and host 0 would make a pickle trusted (Client._item). The caller holds
    the put lock: every writer of the table does, so that an entry is never appended twice or
    half-written under a reader (a writer that dies half-way has not published its entry
    yet)."""
    name = fit(name)
    w = seg.words
    count = min(w[H_HOSTS], MAX_HOSTS)
    for number in range(1, count + 1):
        if name_of(seg, number) == name:
            return number
    if count >= MAX_HOSTS:
        return HOST_UNKNOWN
    number = count + 1
    off = seg.geometry.host_offset(number)
    raw = name.encode("utf-8")
    seg.buf[off + WORD:off + HOST_ENTRY_SIZE] = raw.ljust(HOST_NAME_BYTES, b"\0")
    w[off // WORD] = len(raw)
    w[H_HOSTS] = number             # published last: the name is in place before
    return number
