"""How an item becomes the bytes of a slot, and back, keeping its type and value.

``bytes``, ``str`` and ``int`` have their own compact encodings (no pickle on the hot path);
anything else is pickled. ``bool`` is a subclass of ``int`` but must come back as a ``bool``,
so only exact ``int`` takes the integer path.
"""

import pickle

from .layout import TAG_BYTES, TAG_INT, TAG_PICKLE, TAG_STR

__all__ = ["encode", "decode", "TYPE_NAMES"]

TYPE_NAMES = {TAG_BYTES: "bytes", TAG_STR: "str", TAG_INT: "int", TAG_PICKLE: "object"}


def encode(item):
    """Return (tag, payload) for ``item``; payload is a bytes-like object."""
    kind = type(item)
    if kind is bytes:
        return TAG_BYTES, item
    if kind is str:
        return TAG_STR, item.encode("utf-8", "surrogatepass")
    if kind is int:
        return TAG_INT, item.to_bytes((item.bit_length() + 8) // 8, "little", signed=True)
    if kind is bytearray or kind is memoryview:
        return TAG_BYTES, bytes(item)
    return TAG_PICKLE, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def decode(tag, payload):
    """Inverse of :func:`encode`; ``payload`` is a memoryview of the stored bytes."""
    if tag == TAG_BYTES:
        return bytes(payload)
    if tag == TAG_STR:
        return str(payload, "utf-8", "surrogatepass")
    if tag == TAG_INT:
        return int.from_bytes(payload, "little", signed=True)
    if tag == TAG_PICKLE:
        return pickle.loads(payload)
    raise ValueError(f"unknown item type tag {tag}")
