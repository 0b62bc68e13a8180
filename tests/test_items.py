"""Items of every type through real FIFOs: what goes in comes out, with its type, format,
shape and dtype; how many copies each side makes; what a reader that refuses pickles still
decodes; corrupt array headers; a reader without numpy; item sizes with K/M/G suffixes.

The round trips run a daemon process and a producer and a consumer process
(tests/item_values.py), each on the C or the pure-Python path.
"""

import array
import base64
import os
import socket
import subprocess
import sys

import pytest

import shmfifo
from procs import REPO, WAIT, records
from shmfifo import items, layout
from shmfifo.items import ARRAY_HEADER, LENGTH, decode, encode
from shmfifo.layout import TAG_NDARRAY, TAG_PICKLE, TAG_PICKLE5
from shmfifo.sizes import parse_size

np = pytest.importorskip("numpy", reason="numpy is in the test extra: bin/setup test")
from item_values import same, values               # noqa: E402  (it needs numpy)

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = {"c": {"SHMFIFO_PURE": "0"}, "pure": {"SHMFIFO_PURE": "1"}}
# Where the agents import item_values from, and shmfifo.
AGENT_PATH = {"PYTHONPATH": REPO + os.pathsep + HERE}
# Python code that runs as if numpy were not installed.
NO_NUMPY = "import sys; sys.modules['numpy'] = None\n"


def _agent(procs, how, name, path):
    return procs.python(f"import runpy, sys; sys.argv = ['item_values'] + sys.argv[1:]; "
                        f"runpy.run_path({os.path.join(HERE, 'item_values.py')!r}, "
                        f"run_name='__main__')", how, name, env={**AGENT_PATH, **PATHS[path]})


# -- round trips through a FIFO ----------------------------------------------------------------

@pytest.mark.parametrize("put_path, get_path", [("c", "c"), ("pure", "pure"), ("c", "pure"),
                                                ("pure", "c")])
def test_every_type_round_trips_between_processes(procs, fifo_name, put_path, get_path):
    daemon = procs.daemon(fifo_name, "--size", "64", "--item-size", "64K")
    assert "65536" in daemon.wait_for("ready: FIFO")
    producer = _agent(procs, "put", fifo_name, put_path)
    assert producer.wait() == 0, producer.err[-5:]
    consumer = _agent(procs, "get", fifo_name, get_path)
    assert consumer.wait() == 0, consumer.err[-5:]
    assert consumer.out[0] == "path " + ("C" if get_path == "c" else "none (pure Python)")
    lines = consumer.out[1:]
    assert [line.split()[1] for line in lines] == [key for key, _ in values()]
    assert [line for line in lines if not line.startswith("ok ")] == []
    daemon.signal()
    assert daemon.wait() == 0


def test_each_type_takes_its_own_encoding():
    tags = {key: encode(item)[0] for key, item in values()}
    assert {key: tags[key] for key in ("bytearray", "memoryview-d-2x3", "array-d",
                                       "ndarray-fortran", "ndarray-datetime")} == {
        "bytearray": layout.TAG_BYTEARRAY, "memoryview-d-2x3": layout.TAG_MEMORYVIEW,
        "array-d": layout.TAG_ARRAY, "ndarray-fortran": TAG_NDARRAY,
        "ndarray-datetime": TAG_NDARRAY}
    # What needs pickle takes it: out of band where the object offers its buffers.
    assert tags["ndarray-structured"] == tags["dict-of-arrays"] == tags["picklebuffer"] == \
        TAG_PICKLE5
    assert tags["ndarray-object"] == tags["ndarray-subclass"] == tags["float"] == TAG_PICKLE


def test_round_trip_in_one_process_with_get_many_and_get_message(fifo_name):
    with shmfifo.serve(fifo_name, capacity=64, item_size="64K"):
        with shmfifo.attach(fifo_name) as q:
            expected = values()
            q.put_many([item for _, item in expected])
            got = []
            while len(got) < len(expected):     # a batch stops at the in-flight limit (16)
                got += q.get_many(64, timeout=10)
            assert [key for (key, item), back in zip(expected, got) if not same(item, back)] \
                == []
            q.put(np.arange(3))
            message = q.get_message()
            assert same(np.arange(3), message.item) and message.producer == os.getpid()


# -- copies ------------------------------------------------------------------------------------

def _parts(payload):
    return payload if type(payload) is tuple else (payload,)


@pytest.mark.parametrize("order", ["C", "F"])
def test_putting_a_contiguous_array_copies_its_data_only_into_the_slot(order):
    a = np.asarray(np.arange(24.0).reshape(4, 6), order=order)
    tag, payload = encode(a)
    header, data = _parts(payload)
    assert tag == TAG_NDARRAY and len(header) % items.ALIGN == 0
    # The data part is the array's own memory, not a copy of it.
    assert np.shares_memory(np.frombuffer(data, np.uint8), a) and len(data) == a.nbytes
    assert items.payload_length(payload) == len(header) + a.nbytes


def test_bytearray_memoryview_and_pickle_buffers_are_written_from_their_own_memory():
    b = bytearray(b"abc")
    assert encode(b) == (layout.TAG_BYTEARRAY, b) and encode(b)[1] is b
    view = memoryview(bytearray(48)).cast("d", (2, 3))
    _, (_, data) = encode(view)
    assert data.obj is view.obj
    a = np.arange(1000.0)
    tag, parts = encode({"a": a})
    assert tag == TAG_PICKLE5
    assert any(isinstance(p, memoryview) and np.shares_memory(np.frombuffer(p, np.uint8), a)
               for p in parts)


def _bases(x):
    """What an array's memory belongs to, and what lies between (views; numpy keeps a
    memoryview of what frombuffer read)."""
    chain = []
    while isinstance(x, (np.ndarray, memoryview)):
        x = x.base if isinstance(x, np.ndarray) else x.obj
        chain.append(x)
    return chain


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_decoded_array_is_writable_over_one_bytearray(order):
    a = np.asarray(np.arange(6, dtype=np.int16).reshape(2, 3), order=order)
    stored = b"".join(bytes(p) for p in _parts(encode(a)[1]))
    back = decode(TAG_NDARRAY, memoryview(stored))      # as a get reads the slot
    assert same(a, back)
    owner = _bases(back)[-1]
    assert type(owner) is bytearray and len(owner) == a.nbytes       # the one copy
    back[0, 0] = 99                                                  # writable
    # A payload that is already a bytearray of its own (get_many's copy) is not copied again.
    mine = bytearray(stored)
    back = decode(TAG_NDARRAY, mine)
    assert _bases(back)[-1] is mine and back.flags.aligned


def test_a_decoded_memoryview_and_bytearray_do_not_copy_again():
    view = memoryview(bytearray(range(48))).cast("d", (2, 3))
    mine = bytearray(b"".join(bytes(p) for p in _parts(encode(view)[1])))
    back = decode(layout.TAG_MEMORYVIEW, mine)
    assert back.obj is mine and (back.format, back.shape) == ("d", (2, 3)) and not back.readonly
    mine = bytearray(b"xy")
    assert decode(layout.TAG_BYTEARRAY, mine) is mine
    assert decode(layout.TAG_BYTEARRAY, memoryview(b"xy")) == bytearray(b"xy")


def test_a_view_cast_cannot_rebuild_comes_back_as_bytes():
    view = memoryview(np.arange(3, dtype=">i4"))        # format '>i': no cast() rebuilds it
    back = decode(layout.TAG_MEMORYVIEW, b"".join(bytes(p) for p in _parts(encode(view)[1])))
    assert (back.format, back.shape, back.tobytes()) == ("B", (12,), view.tobytes())


def test_the_size_of_an_array_counts_its_header(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4, item_size="1K"):
        with shmfifo.attach(fifo_name) as q:
            assert q.item_size == 1024
            with pytest.raises(shmfifo.ItemTooLarge) as error:
                q.put(np.zeros(128))              # 1024 bytes of data, plus its header
            assert error.value.size == 1024 + 32
            q.put(np.zeros(124))
            with pytest.raises(shmfifo.ItemTooLarge):
                q.put_many([np.zeros(1), {"a": np.zeros(128)}])
            assert q.qsize() == 1 and same(np.zeros(124), q.get())


# -- trust -------------------------------------------------------------------------------------

def test_a_fifo_others_can_write_decodes_arrays_but_not_pickles(fifo_name):
    with shmfifo.serve(fifo_name, capacity=8, item_size="4K", mode=0o660):
        with shmfifo.attach(fifo_name) as q:
            buffers = [np.arange(6.0).reshape(2, 3), memoryview(b"ab"), array.array("i", [3]),
                       bytearray(b"x")]
            for item in buffers:
                q.put(item)
            for item in buffers:
                assert same(item, q.get())              # no pickle in any of them
            q.put({"a": np.arange(3)})
            with pytest.raises(shmfifo.UntrustedItem, match="not unpickled") as refused:
                q.get()
            assert refused.value.payload[:items.PICKLE5_HEADER.size] == \
                items.PICKLE5_HEADER.pack(*items.PICKLE5_HEADER.unpack_from(
                    refused.value.payload))
            q.put_many([np.arange(2), np.zeros(2, "i4,f8"), b"z"])
            with pytest.raises(shmfifo.UntrustedItem) as refused:
                q.get_many(3)
            batch = refused.value.items
            assert same(np.arange(2), batch[0]) and batch[2] == b"z"
            assert isinstance(batch[1], shmfifo.UntrustedItem)
        with shmfifo.attach(fifo_name, allow_pickle=True) as q:
            q.put(np.zeros(2, "i4,f8"))
            assert same(np.zeros(2, "i4,f8"), q.get())


# -- corrupt array headers ---------------------------------------------------------------------

def _ndarray_payload(code, shape, data, order=b"C", ndim=None):
    head = ARRAY_HEADER.pack(code, len(shape) if ndim is None else ndim, order) + \
        b"".join(LENGTH.pack(n) for n in shape)
    return head + bytes(-len(head) % items.ALIGN) + data


BAD_ARRAYS = {
    "shape-times-itemsize": _ndarray_payload(b"<f8", (2, 3), bytes(40)),
    "huge-shape": _ndarray_payload(b"<f8", (2 ** 40, 2 ** 40), bytes(8)),
    "huge-shape-empty": _ndarray_payload(b"<f8", (0, 2 ** 63), b""),
    "unknown-dtype": _ndarray_payload(b"<z8", (1,), bytes(8)),
    "object-dtype": _ndarray_payload(b"|O8", (1,), bytes(8)),
    "structured-dtype": _ndarray_payload(b"i4,f8", (1,), bytes(12)),
    "subarray-dtype": _ndarray_payload(b"(1000000000,)f8", (1,), bytes(8)),
    "dtype-not-ascii": _ndarray_payload(b"<f\xff", (1,), bytes(8)),
    "absurd-ndim": _ndarray_payload(b"<f8", (1,), bytes(8), ndim=200),
    "ndim-beyond-payload": _ndarray_payload(b"<f8", (), bytes(8), ndim=60),
    "bad-order": _ndarray_payload(b"<f8", (1,), bytes(8), order=b"X"),
    "truncated-header": ARRAY_HEADER.pack(b"<f8", 1, b"C")[:20],
}


@pytest.mark.parametrize("bad", list(BAD_ARRAYS))
def test_a_corrupt_array_header_is_a_value_error_not_numpys(bad):
    with pytest.raises(ValueError):
        decode(TAG_NDARRAY, memoryview(BAD_ARRAYS[bad]))


BAD_OTHERS = [
    (layout.TAG_MEMORYVIEW, _ndarray_payload(b"d", (2, 3), bytes(40))),
    (layout.TAG_MEMORYVIEW, _ndarray_payload(b"<d", (1,), bytes(8))),
    (layout.TAG_ARRAY, _ndarray_payload(b"z", (1,), bytes(8))),
    (layout.TAG_ARRAY, _ndarray_payload(b"d", (2,), bytes(8))),
    (TAG_PICKLE5, items.PICKLE5_HEADER.pack(3, 2 ** 60)),
    (TAG_PICKLE5, items.PICKLE5_HEADER.pack(2 ** 62, 0)),
]


@pytest.mark.parametrize("tag, payload", BAD_OTHERS)
def test_corrupt_headers_of_the_other_buffers_are_value_errors(tag, payload):
    with pytest.raises(ValueError):
        decode(tag, payload)


@pytest.mark.parametrize("path", ["c", "pure"])
def test_corrupt_arrays_through_a_fifo_are_corrupt_items_and_the_rest_goes_on(
        procs, fifo_name, path):
    code = f"""
import sys, shmfifo
from shmfifo.layout import TAG_NDARRAY
name, bad = sys.argv[1], {list(BAD_ARRAYS.values())!r}
with shmfifo.attach(name) as q:
    # What a broken or hostile producer writes: these words, as a put writes them.
    q._client()._put_records([(TAG_NDARRAY, p) for p in bad] + [(1, b"end")], None)
    for _ in bad:
        try:
            q.get(timeout=5)
            print("decoded")
        except shmfifo.CorruptItem as error:
            print("corrupt", error.seq, error.reason.split(" (")[0])
    print("last", q.get(timeout=5))
"""
    daemon = procs.daemon(fifo_name, "--size", "32", "--item-size", "1K")
    proc = procs.python(code, fifo_name, env=PATHS[path])
    assert proc.wait() == 0, proc.err[-5:]
    assert proc.out[-1] == "last b'end'"
    assert proc.out[:-1] == [f"corrupt {seq} its ndarray payload does not decode"
                             for seq in range(1, len(BAD_ARRAYS) + 1)]
    daemon.signal()
    assert daemon.wait() == 0


# -- a reader without numpy ----------------------------------------------------------------------

def test_a_reader_without_numpy_gets_the_array_bytes_in_its_error(procs, fifo_name):
    code = NO_NUMPY + """
import sys, shmfifo
with shmfifo.attach(sys.argv[1]) as q:
    for get in (q.get, lambda: q.get_many(3)):
        try:
            get()
        except shmfifo.NumpyNotInstalled as error:
            batch = getattr(error, "items", [error])
            print(error)
            print(error.dtype, error.shape, error.order, bytes(error.data).hex(),
                  [type(x).__name__ for x in batch])
"""
    with shmfifo.serve(fifo_name, capacity=8, item_size="1K"):
        with shmfifo.attach(fifo_name) as q:
            a = np.asfortranarray(np.arange(6, dtype="<i2").reshape(2, 3))
            q.put(a)
            q.put_many([b"x", a, "y"])
            proc = procs.python(code, fifo_name)
            assert proc.wait() == 0, proc.err[-5:]
    message, fields, _, fields2 = proc.out
    assert f"item from producer {os.getpid()} (seq 1) of FIFO {fifo_name!r} is a numpy array " \
           f"(dtype '<i2', shape (2, 3)) and numpy is not installed here: not decoded" in message
    data = a.T.tobytes().hex()                    # Fortran order, as it was in the array
    assert fields == f"<i2 (2, 3) F {data} ['NumpyNotInstalled']"
    assert fields2 == f"<i2 (2, 3) F {data} ['bytes', 'NumpyNotInstalled', 'str']"
    rebuilt = np.frombuffer(bytes.fromhex(data), "<i2").reshape((2, 3), order="F")
    assert np.array_equal(a, rebuilt) and rebuilt.flags.f_contiguous


def test_consumer_json_shows_every_buffer_type(procs, fifo_name):
    a = np.arange(6.0).reshape(2, 3)
    with shmfifo.serve(fifo_name, capacity=8, item_size="1K"):
        with shmfifo.attach(fifo_name) as q:
            q.put_many([bytearray(b"\x00\xff"), memoryview(bytearray(16)).cast("i", (2, 2)),
                        array.array("h", [1, -1]), np.asfortranarray(a), np.zeros(1, "i4,f8")])
            consumer = procs.spawn("consumer", "--fifo", fifo_name, "--json", "count=5",
                                   "rate=max")
            assert consumer.wait() == 0, consumer.err[-5:]
            q.put(np.asfortranarray(a))
            script = NO_NUMPY + "from shmfifo.cli import main; sys.exit(main(sys.argv[1:]))"
            without = procs.python(script, "consumer", "--fifo", fifo_name, "--json",
                                   "count=1")
            assert without.wait() == 0, without.err[-5:]
    # items put here name this machine as their host (a bridged item, its producer's)
    assert {r["host"] for r in records(consumer) + records(without)} == {socket.gethostname()}
    got = [{k: v for k, v in r.items() if k not in ("producer", "seq", "latency_us", "host")}
           for r in records(consumer) + records(without)]
    b64 = lambda data: base64.b64encode(data).decode("ascii")       # noqa: E731
    assert got == [
        {"item": "AP8=", "type": "bytearray", "encoding": "base64"},
        {"item": b64(bytes(16)), "type": "memoryview", "encoding": "base64", "format": "i",
         "shape": [2, 2]},
        {"item": b64(array.array("h", [1, -1]).tobytes()), "type": "array",
         "encoding": "base64", "typecode": "h"},
        {"item": b64(a.tobytes()), "type": "ndarray", "encoding": "base64", "dtype": "<f8",
         "shape": [2, 3], "order": "C"},
        {"item": repr(np.zeros(1, "i4,f8")), "type": "object"},
        # without numpy: the data as it came, in Fortran order, which the record says
        {"item": b64(a.T.tobytes()), "type": "ndarray", "encoding": "base64", "dtype": "<f8",
         "shape": [2, 3], "order": "F"},
    ]
    assert any("numpy is not installed here" in line for line in without.err)


# -- sizes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [("4096", 4096), ("64K", 65536), ("64k", 65536),
                                        ("1M", 1 << 20), ("1MiB", 1 << 20), ("1mib", 1 << 20),
                                        ("2G", 2 << 30), (" 3 K ", 3072), (7, 7)])
def test_sizes_take_binary_suffixes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1X", "1MB", "1.5M", "0", "-1", "", "K", "1 M B", True, 2.0,
                                  None, "١"])
def test_a_size_that_is_not_one_says_what_is_allowed(text):
    with pytest.raises(shmfifo.UsageError) as error:
        parse_size(text, "--item-size")
    assert str(error.value) == (
        f"--item-size: {text!r} is not allowed; use a whole number of bytes of 1 or more, "
        f"alone or with a suffix K, M or G (KiB, MiB, GiB: powers of 1024), such as 4096, "
        f"64K or 1M")


@pytest.mark.parametrize("command", [["fifo", "--name", "x"], ["doctor"]])
def test_item_size_with_a_bad_suffix_is_a_usage_error(command):
    result = subprocess.run([sys.executable, "-m", "shmfifo", *command, "--item-size", "1X"],
                            capture_output=True, text=True, timeout=WAIT,
                            env={**os.environ, **AGENT_PATH})
    assert result.returncode == 2
    assert "--item-size: '1X' is not allowed; use a whole number of bytes of 1 or more, " \
           "alone or with a suffix K, M or G" in result.stderr


def test_item_size_takes_a_suffix_in_the_api(fifo_name):
    with pytest.raises(shmfifo.UsageError, match="item-size: '1X' is not allowed"):
        shmfifo.FifoDaemon(fifo_name, item_size="1X")
    with pytest.raises(shmfifo.UsageError, match="item-size: 4294967296 is not allowed"):
        with shmfifo.serve(fifo_name, item_size="4G"):
            pass
    with shmfifo.serve(fifo_name, capacity=2, item_size="1m") as daemon:
        assert daemon.seg.geometry.item_size == 1 << 20
