"""Items of every type the codec knows, and how to compare what came back, for test_items.py
and the producer and consumer processes it starts (run as ``python item_values.py put|get
NAME``; they print one line per item and never raise)."""

import array
import pickle
import sys

import numpy as np


class Block:
    """Not an ndarray, but hands pickle its memory out of band (pickle.PickleBuffer)."""

    def __init__(self, data):
        self.data = bytearray(data)

    def __reduce_ex__(self, protocol):
        return type(self)._rebuild, (pickle.PickleBuffer(self.data),)

    @classmethod
    def _rebuild(cls, buffer):
        block = cls.__new__(cls)
        block.data = buffer            # a view of the consumer's copy: no second copy
        return block


def values():
    """(id, item) of every kind the codec encodes, with the edge cases of each."""
    m = np.arange(12, dtype=np.int32).reshape(3, 4)
    return [
        ("bytes", b"ab\x00\xff"), ("bytes-empty", b""),
        ("str", "héllo ✓"), ("str-surrogates", "a\udcff\ud800z"),
        ("int-big", 2 ** 300 + 1), ("int-negative", -(2 ** 70)), ("bool", True),
        ("float", -1.5), ("None", None),
        ("bytearray", bytearray(b"\x00xy\xff")), ("bytearray-empty", bytearray()),
        ("memoryview-B", memoryview(b"abc")),
        ("memoryview-d-2x3", memoryview(bytearray(range(48))).cast("d", (2, 3))),
        ("memoryview-0d", memoryview(bytearray(8)).cast("q", ())),
        ("memoryview-strided", memoryview(bytearray(range(10)))[::3]),
        ("array-d", array.array("d", [1.5, -2.0])), ("array-u", array.array("u", "hé")),
        ("array-empty", array.array("q")),
        ("ndarray-f8", np.arange(6.0).reshape(2, 3)),
        ("ndarray-fortran", np.asfortranarray(m)),
        ("ndarray-strided", m[::2, 1:]),
        ("ndarray-0d", np.array(7.25)),
        ("ndarray-empty", np.zeros((0, 3), dtype=np.uint16)),
        ("ndarray-bool", np.array([True, False])),
        ("ndarray-c16", np.array([1 + 2j, -3j])),
        ("ndarray-big-endian", np.arange(5, dtype=">i4")),
        ("ndarray-datetime", np.array(["2024-02-29T12:00"], dtype="M8[ns]")),
        ("ndarray-unicode", np.array(["a", "héllo"])),
        ("ndarray-bytes", np.array([b"ab", b"c"])),
        ("ndarray-f2", np.array([0.5, 2.0], dtype=np.float16)),
        ("ndarray-structured", np.array([(1, 2.0)], dtype="i4,f8")),      # TAG_PICKLE5
        ("ndarray-object", np.array([1, "a", None], dtype=object)),      # TAG_PICKLE
        ("ndarray-subclass", np.arange(3).view(np.recarray)),           # TAG_PICKLE
        ("dict-of-arrays", {"x": np.arange(4.0), "y": [np.ones((2, 2))]}),  # TAG_PICKLE5
        ("picklebuffer", Block(b"raw bytes")),                          # TAG_PICKLE5
    ]


def same(a, b):
    """What came back (b) is what was put (a): type, value, and the shape of buffers; any
    array or view is writable."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape or not b.flags.writeable:
            return False
        if a.dtype.hasobject:
            return a.tolist() == b.tolist()
        return a.tobytes() == b.tobytes() and a.flags.f_contiguous == b.flags.f_contiguous
    if isinstance(a, memoryview):
        return (a.format == b.format and a.shape == b.shape and a.tobytes() == b.tobytes()
                and not b.readonly)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, Block):
        return bytes(a.data) == bytes(b.data)
    return a == b


def main(argv):
    import shmfifo
    how, name = argv[1], argv[2]
    expected = values()
    with shmfifo.attach(name) as q:
        print("path", shmfifo.accelerator(), flush=True)
        if how == "put":
            for _, item in expected[:10]:
                q.put(item)
            q.put_many([item for _, item in expected[10:]])
            print("put", len(expected), flush=True)
            return 0
        got = [q.get(timeout=10) for _ in range(10)]
        while len(got) < len(expected):
            got += q.get_many(8, timeout=10)
        for (key, item), back in zip(expected, got):
            print("ok" if same(item, back) else "BAD", key, " ".join(repr(back).split())[:80],
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
