"""What a benchmark item carries, and the check that every run's delivery was correct.

Every item starts with the same 16-byte header, whatever the implementation and item size::

    offset 0  u64  word     producer id << 32 | sequence number (little endian)
    offset 8  u64  put_ns   time.monotonic_ns() at the put (latency runs only; 0 otherwise)
    offset 16 ...           zero padding up to the item size

so the smallest item measured is 16 bytes. A word of all ones is the stop marker that ends a
consumer; it is never a real item because producer ids are small.

A consumer writes what it received to a *words file* (also written by bench/cring.c)::

    u64 end_ns              monotonic time at which it received its last real item
    u64 word, ...           the words of the items it received, in the order received

and a latency consumer also writes a *latency file*: one i64 per item, get time minus put_ns.

A run counts only if :func:`check_delivery` finds that every item was delivered exactly once and
that each consumer saw each producer's items in increasing sequence (a FIFO may interleave
producers, and several consumers split the stream, but no one may see a producer go backwards).

Large items are made before a run, a few of them, and put in turn (making a megabyte costs
about what moving it does, so it must not be timed): item k of K carries word k, and
:func:`check_cycle` checks that the one consumer received exactly 0, 1, .., K-1, 0, 1, ...
"""

import struct
from array import array
from pathlib import Path

import numpy as np

__all__ = [
    "HEADER", "WORD", "STOP", "MIN_ITEM_SIZE", "item_maker", "stop_item",
    "write_words", "read_words", "check_delivery", "check_cycle", "DeliveryError",
]

HEADER = struct.Struct("<QQ")
WORD = struct.Struct("<Q")
STOP = 2**64 - 1
MIN_ITEM_SIZE = HEADER.size
SEQ_MASK = 2**32 - 1


class DeliveryError(Exception):
    """A run delivered something other than each item exactly once and in producer order."""


def item_maker(producer, item_size):
    """Return ``make(seq, put_ns=0) -> bytes`` for one producer.

    The padding is built once so that making an item costs one pack and one concatenation,
    the same for every implementation.
    """
    if item_size < MIN_ITEM_SIZE:
        raise ValueError(f"item_size {item_size} < {MIN_ITEM_SIZE}: the header would not fit")
    pad = bytes(item_size - MIN_ITEM_SIZE)
    base = producer << 32
    pack = HEADER.pack

    def make(seq, put_ns=0):
        return pack(base | seq, put_ns) + pad

    return make


def stop_item(item_size):
    """The marker that tells one consumer to finish, padded like a real item."""
    return HEADER.pack(STOP, 0) + bytes(item_size - MIN_ITEM_SIZE)


def write_words(path, end_ns, words):
    """Write a consumer's words file (format in the module docstring)."""
    with open(path, "wb") as f:
        array("Q", [end_ns]).tofile(f)
        words.tofile(f)


def read_words(path):
    """Return ``(end_ns, words)`` from a words file written by Python or by cring."""
    data = np.fromfile(Path(path), dtype="<u8")
    if data.size == 0:
        raise DeliveryError(f"{path}: empty words file (consumer died before writing it?)")
    return int(data[0]), data[1:]


def check_delivery(per_consumer, producers, per_producer):
    """Raise DeliveryError unless the consumers' words add up to a correct delivery.

    ``per_consumer`` is a list of word arrays, one per consumer, in the order each received them.
    """
    for index, words in enumerate(per_consumer):
        producer = words >> np.uint64(32)
        seq = words & np.uint64(SEQ_MASK)
        # A stable sort by producer keeps each producer's items in received order.
        order = np.argsort(producer, kind="stable")
        producer, seq = producer[order], seq[order]
        same = producer[1:] == producer[:-1]
        backwards = np.flatnonzero(same & (seq[1:] <= seq[:-1]))
        if backwards.size:
            at = backwards[0]
            raise DeliveryError(
                f"consumer {index} saw producer {producer[at]} seq {seq[at + 1]} "
                f"after seq {seq[at]} ({backwards.size} order violations)")

    received = np.sort(np.concatenate(per_consumer)) if per_consumer else np.empty(0, "<u8")
    expected = np.sort(np.concatenate([
        (np.uint64(p) << np.uint64(32)) | np.arange(per_producer, dtype="<u8")
        for p in range(producers)]))
    if received.size == expected.size and np.array_equal(received, expected):
        return
    unique = np.unique(received)
    duplicates = received.size - unique.size
    missing = np.setdiff1d(expected, unique, assume_unique=True).size
    strange = np.setdiff1d(unique, expected, assume_unique=True).size
    raise DeliveryError(
        f"expected {expected.size} items, received {received.size}: "
        f"{missing} missing, {duplicates} duplicated, {strange} never sent")


def check_cycle(words, count, period):
    """Raise DeliveryError unless `words` are the words of `count` items put in turn from
    `period` items made beforehand, item k carrying word k (module docstring): exactly
    ``0, 1, .., period - 1, 0, 1, ...``. One producer and one consumer, so order is strict."""
    expected = np.arange(count, dtype="<u8") % np.uint64(period)
    if words.size == expected.size and np.array_equal(words, expected):
        return
    common = min(words.size, expected.size)
    wrong = np.flatnonzero(words[:common] != expected[:common])
    where = (f"; item {wrong[0]} carried word {words[wrong[0]]}, not {expected[wrong[0]]}"
             if wrong.size else "")
    raise DeliveryError(f"expected {count} items, received {words.size}{where}")
