"""How an item becomes the bytes of a slot, and back, keeping its type and value.

Each item is stored as a type tag (in the slot header, layout.py) and a payload:

    tag              item                     payload
    TAG_BYTES        bytes                    its bytes
    TAG_STR          str                      UTF-8, surrogates passed through
    TAG_INT          int (exactly)            little-endian two's complement, shortest
    TAG_BYTEARRAY    bytearray                its bytes
    TAG_MEMORYVIEW   memoryview               ARRAY_HEADER (format, shape), its bytes in C order
    TAG_ARRAY        array.array              ARRAY_HEADER (typecode, length), its bytes
    TAG_NDARRAY      numpy.ndarray (exactly)  ARRAY_HEADER (dtype, shape, order), its bytes
    TAG_PICKLE       anything else            a pickle (protocol 5) holding everything
    TAG_PICKLE5      anything else whose      PICKLE5_HEADER, the buffers' lengths, the pickle,
                     pickle has buffers       then each out-of-band buffer's bytes

``bool`` is a subclass of ``int`` and must come back as a ``bool``, so only exact ``int``
takes the integer path; float, None, tuples and the rest are pickled.

ARRAY_HEADER, for the three typed buffers (all little-endian)::

    0  format   16 bytes, ASCII, NUL-padded: a memoryview's struct format ('d'), an array's
                typecode ('d'), an ndarray's ``dtype.str`` ('<f8', '<M8[ns]', '|S5')
    16 ndim     u8, at most MAX_NDIM
    17 order    'C', or 'F' when the data is in Fortran order (an ndarray only)
    24 shape    ndim u64 words
       data     from the next multiple of 16 (ALIGN)

PICKLE5_HEADER: u64 pickle length, u64 number of buffers; then a u64 length per buffer; the
pickle and each buffer start at a multiple of ALIGN.

Copies. ``encode`` returns the payload as a bytes-like object or as a tuple of parts (a small
header, then the object's own memory: nothing is concatenated), and ``write_payload`` copies
the parts into the slot: the one copy on the put side. A strided ndarray or memoryview is
made contiguous first (one more copy). ``decode`` copies the payload out of shared memory once
into a bytearray, and the item wraps it without copying again (``numpy.frombuffer``,
``memoryview.cast``, ``pickle.loads(buffers=...)``): arrays and views come back writable. A
``bytearray`` payload is taken over instead of copied (the caller made it for this item).

An ndarray never goes through pickle: its dtype is a checked string and its data raw bytes,
so a FIFO that other users may write can carry arrays to a reader that refuses pickles.
Arrays that need pickle (object or structured dtypes, subclasses) take TAG_PICKLE5. numpy is
imported only to decode a TAG_NDARRAY item; an ndarray can only be put where numpy is loaded.
"""

import array
import math
import pickle
import re
import struct
import sys

from .layout import (TAG_ARRAY, TAG_BYTEARRAY, TAG_BYTES, TAG_INT, TAG_MEMORYVIEW, TAG_NDARRAY,
                     TAG_PICKLE, TAG_PICKLE5, TAG_STR)

__all__ = ["encode", "decode", "payload_length", "write_payload", "array_fields",
           "TYPE_NAMES", "PICKLE_TAGS", "NeedsNumpy"]

TYPE_NAMES = {TAG_BYTES: "bytes", TAG_STR: "str", TAG_INT: "int", TAG_PICKLE: "object",
              TAG_BYTEARRAY: "bytearray", TAG_MEMORYVIEW: "memoryview", TAG_ARRAY: "array",
              TAG_NDARRAY: "ndarray", TAG_PICKLE5: "object"}
# Tags whose decoding unpickles: only for a trusted FIFO (ring.py, UntrustedItem).
PICKLE_TAGS = frozenset((TAG_PICKLE, TAG_PICKLE5))

ARRAY_HEADER = struct.Struct("<16sBc6x")       # format, ndim, order; then the shape
PICKLE5_HEADER = struct.Struct("<QQ")          # pickle length, number of buffers
LENGTH = struct.Struct("<Q")                   # a dimension, or a buffer's length
# Where data starts in a payload: numpy's largest alignment (long double, complex), so that
# an array over the bytearray a payload is copied into is aligned.
ALIGN = 16
# The most dimensions a buffer may have (CPython's PyBUF_MAX_NDIM; numpy allows 32 or 64).
MAX_NDIM = 64
FORMAT_BYTES = 16
# What an ndarray's dtype.str looks like when it names a plain dtype: byte order, kind,
# size, and a datetime unit. Checked before numpy parses it (numpy's grammar also builds
# structured and sub-array dtypes from strings).
_DTYPE = re.compile(r"[<>|][a-zA-Z][0-9]{1,9}(\[[0-9]{0,9}[a-zA-Z]{1,2}\])?\Z", re.ASCII)
# The formats memoryview.cast() rebuilds a view in: native single characters (not 'e'
# before Python 3.12, for one).


def _castable(fmt):
    try:
        memoryview(b"").cast(fmt)
    except (ValueError, TypeError):
        return False
    return True


_CAST_FORMATS = frozenset(f for f in "bBcn?NhHiIlLqQfdeP" if _castable(f))


class NeedsNumpy(Exception):
    """A TAG_NDARRAY item where numpy is not installed. ``fields`` are its format, shape,
    order and data offset (array_fields); ring.py raises NumpyNotInstalled with them and the
    item's bytes, so nothing is lost."""

    def __init__(self, fields):
        super().__init__(f"a numpy array (dtype {fields[0]!r}, shape {fields[1]}) needs numpy")
        self.fields = fields


def _round_up(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _padding(n):
    return bytes(_round_up(n) - n)


def _array_header(fmt, shape, order=b"C"):
    """ARRAY_HEADER and the shape, padded to where the data starts."""
    head = ARRAY_HEADER.pack(fmt.encode("ascii"), len(shape), order) + b"".join(
        LENGTH.pack(n) for n in shape)
    return head + _padding(len(head))


def array_fields(payload):
    """(format, shape, order, data offset) of a TAG_MEMORYVIEW, TAG_ARRAY or TAG_NDARRAY
    payload, checked against its length; ValueError if the words cannot be right. Without
    numpy, an ndarray's data is ``payload[offset:]``: C order, or Fortran order for 'F'."""
    view = memoryview(payload)
    if view.nbytes < ARRAY_HEADER.size:
        raise ValueError(f"{view.nbytes} bytes cannot hold its {ARRAY_HEADER.size}-byte header")
    raw, ndim, order = ARRAY_HEADER.unpack_from(view)
    fmt = raw.rstrip(b"\0").decode("ascii", "replace")
    if not fmt or not fmt.isprintable() or " " in fmt or "\ufffd" in fmt:
        raise ValueError(f"its format {raw!r} is not a format")
    if ndim > MAX_NDIM or order not in (b"C", b"F"):
        raise ValueError(f"its header says {ndim} dimensions in order {order!r}")
    offset = _round_up(ARRAY_HEADER.size + ndim * LENGTH.size)
    if offset > view.nbytes:
        raise ValueError(f"{view.nbytes} bytes cannot hold the shape of {ndim} dimensions")
    shape = tuple(n for (n,) in LENGTH.iter_unpack(
        view[ARRAY_HEADER.size:ARRAY_HEADER.size + ndim * LENGTH.size]))
    return fmt, shape, order.decode("ascii"), offset


def _check_size(shape, itemsize, nbytes, what):
    """The data holds exactly shape × itemsize bytes (counted in Python ints: no overflow,
    and nothing is allocated from the header's numbers)."""
    count = math.prod(shape)
    if count * itemsize != nbytes:
        raise ValueError(f"{what} of shape {shape} needs {count * itemsize} bytes of data, "
                         f"it has {nbytes}")
    return count


def _owned(payload, offset):
    """The payload as a bytearray the item may keep, and where the data starts in it: the
    one copy out of shared memory, or none when the caller made this bytearray already."""
    if type(payload) is bytearray:
        return payload, offset
    return bytearray(memoryview(payload)[offset:]), 0


# -- encoding ---------------------------------------------------------------------------------

def encode(item):
    """Return (tag, payload) for ``item``: payload is a bytes-like object of bytes
    (``len`` = its size) or a tuple of them, to be written one after the other."""
    kind = type(item)
    if kind is bytes:
        return TAG_BYTES, item
    if kind is str:
        return TAG_STR, item.encode("utf-8", "surrogatepass")
    if kind is int:
        return TAG_INT, item.to_bytes((item.bit_length() + 8) // 8, "little", signed=True)
    if kind is bytearray:
        return TAG_BYTEARRAY, item
    if kind is memoryview:
        return TAG_MEMORYVIEW, _memoryview_parts(item)
    numpy = sys.modules.get("numpy")       # an ndarray exists only where numpy is loaded
    if numpy is not None and kind is numpy.ndarray:
        parts = _ndarray_parts(item, numpy)
        if parts is not None:
            return TAG_NDARRAY, parts
    elif kind is array.array:
        return TAG_ARRAY, (_array_header(item.typecode, (len(item),)),
                           memoryview(item).cast("B"))
    return _pickle(item)


def _memoryview_parts(view):
    """A view comes back in its format and shape when memoryview.cast() can rebuild them;
    otherwise (a format such as '<d' or 'T{...}', a shape with a 0) as 1-D bytes ('B')."""
    fmt = view.format[1:] if view.format[:1] == "@" else view.format
    shape = view.shape
    if fmt not in _CAST_FORMATS or (len(shape) > 1 and 0 in shape):
        fmt, shape = "B", (view.nbytes,)
    data = view.cast("B") if view.c_contiguous else view.tobytes()   # tobytes: C order
    return _array_header(fmt, shape), data


def _ndarray_parts(a, numpy):
    """The header and data of an array whose dtype a string names fully, or None (pickle it:
    object and structured dtypes, sub-arrays)."""
    dtype = a.dtype
    code = dtype.str
    if (dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None
            or not _DTYPE.match(code) or numpy.dtype(code) != dtype or a.ndim > MAX_NDIM):
        return None
    if a.flags.c_contiguous:
        order, data = b"C", a
    elif a.flags.f_contiguous:
        order, data = b"F", a.T                # Fortran order is its transpose's C order
    else:
        order, data = b"C", numpy.ascontiguousarray(a)     # a strided view: one more copy
    # As bytes without asking the buffer protocol for the dtype (datetimes have no buffer
    # format); reshape and view do not copy a contiguous array.
    raw = memoryview(data.reshape(-1).view(numpy.uint8)) if a.nbytes else b""
    return _array_header(code, a.shape, order), raw


def _pickle(item):
    """TAG_PICKLE, or TAG_PICKLE5 with the buffers that the object hands pickle out of band
    (``pickle.PickleBuffer``: exact numpy arrays inside containers, structured arrays,
    pandas, pyarrow...), which are then written from the object's own memory."""
    buffers = []
    stream = pickle.dumps(item, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return TAG_PICKLE, stream
    try:
        raws = [b.raw() for b in buffers]
    except BufferError:         # a buffer that is not contiguous: everything in band
        return TAG_PICKLE, pickle.dumps(item, protocol=5)
    head = PICKLE5_HEADER.pack(len(stream), len(raws)) + b"".join(
        LENGTH.pack(r.nbytes) for r in raws)
    head += _padding(len(head))
    parts = [head, stream]
    end = len(head) + len(stream)
    for raw in raws:
        pad = _padding(end)
        parts += (pad, raw)
        end += len(pad) + raw.nbytes
    return TAG_PICKLE5, tuple(parts)


def payload_length(payload):
    """The bytes ``payload`` (one bytes-like object, or a tuple of parts) takes in a slot."""
    if type(payload) is not tuple:
        return len(payload)
    return sum(map(len, payload))


def write_payload(buf, offset, parts):
    """Copy a payload's ``parts`` (a tuple) into ``buf`` (a writable byte memoryview) at
    ``offset``, one after the other; return their length. This is the one copy of a put:
    the parts are the item's own memory. (A payload that is not a tuple is written with one
    slice assignment; the put lock section does that itself.)"""
    start = offset
    for part in parts:
        n = len(part)
        buf[offset:offset + n] = part
        offset += n
    return offset - start


# -- decoding ---------------------------------------------------------------------------------

def decode(tag, payload):
    """Inverse of :func:`encode`. ``payload`` is a buffer of the stored bytes; a bytearray is
    taken over by the item, anything else is copied at most once. Raises ValueError (and
    others) for bytes no encode writes, NeedsNumpy for an ndarray without numpy."""
    if tag == TAG_BYTES:
        return bytes(payload)
    if tag == TAG_STR:
        return str(payload, "utf-8", "surrogatepass")
    if tag == TAG_INT:
        return int.from_bytes(payload, "little", signed=True)
    if tag == TAG_PICKLE:
        return pickle.loads(payload)
    if tag == TAG_BYTEARRAY:
        return _owned(payload, 0)[0]
    if tag == TAG_NDARRAY:
        return _decode_ndarray(payload)
    if tag == TAG_MEMORYVIEW:
        return _decode_memoryview(payload)
    if tag == TAG_ARRAY:
        return _decode_array(payload)
    if tag == TAG_PICKLE5:
        return _decode_pickle5(payload)
    raise ValueError(f"unknown item type tag {tag}")


def _decode_ndarray(payload):
    fields = code, shape, order, offset = array_fields(payload)
    if not _DTYPE.match(code):
        raise ValueError(f"dtype {code!r} is not the name of a plain dtype")
    try:
        import numpy
    except ImportError:
        raise NeedsNumpy(fields) from None
    try:
        dtype = numpy.dtype(code)
    except TypeError:
        raise ValueError(f"numpy knows no dtype {code!r}") from None
    if dtype.str != code or dtype.hasobject or dtype.fields is not None or not dtype.itemsize:
        raise ValueError(f"dtype {code!r} is not one an array is sent with")
    count = _check_size(shape, dtype.itemsize, len(memoryview(payload)) - offset, "an array")
    data, offset = _owned(payload, offset)
    flat = numpy.frombuffer(data, dtype, count, offset)
    if order == "F":
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


def _decode_memoryview(payload):
    fmt, shape, _, offset = array_fields(payload)
    if fmt not in _CAST_FORMATS:
        raise ValueError(f"format {fmt!r} is not one memoryview.cast() rebuilds here")
    _check_size(shape, struct.calcsize(fmt), memoryview(payload).nbytes - offset, "a view")
    data, offset = _owned(payload, offset)
    view = memoryview(data)[offset:]
    return view.cast(fmt) if len(shape) == 1 else view.cast(fmt, shape)


def _decode_array(payload):
    typecode, shape, _, offset = array_fields(payload)
    if typecode not in array.typecodes or len(typecode) != 1 or len(shape) != 1:
        raise ValueError(f"typecode {typecode!r} with {len(shape)} dimensions is not an array's")
    item = array.array(typecode)
    _check_size(shape, item.itemsize, memoryview(payload).nbytes - offset, "an array")
    item.frombytes(memoryview(payload)[offset:])
    return item


def _decode_pickle5(payload):
    view = memoryview(payload)
    total = view.nbytes
    if total < PICKLE5_HEADER.size:
        raise ValueError(f"{total} bytes cannot hold its {PICKLE5_HEADER.size}-byte header")
    length, count = PICKLE5_HEADER.unpack_from(view)
    lengths_end = PICKLE5_HEADER.size + count * LENGTH.size
    if lengths_end > total:
        raise ValueError(f"{total} bytes cannot hold {count} buffer lengths")
    lengths = [n for (n,) in LENGTH.iter_unpack(view[PICKLE5_HEADER.size:lengths_end])]
    spans = []
    end = _round_up(lengths_end) + length
    for n in lengths:
        start = _round_up(end)
        end = start + n
        spans.append((start, end))
    if end != total:
        raise ValueError(f"its header describes {end} bytes, it has {total}")
    data, _ = _owned(payload, 0)
    whole = memoryview(data)
    stream_start = _round_up(lengths_end)
    return pickle.loads(whole[stream_start:stream_start + length],
                        buffers=[whole[a:b] for a, b in spans])
