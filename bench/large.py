"""Large items: 1P/1C throughput in GB/s through shmfifo and its peers, beside a memcpy.

    $ .venv/bin/python -m bench.large
    Large items, 1P/1C: 1 MiB (1,048,576 B) items, capacity 8; the FIFO's segment takes ...
    transport               GB/s  spread (min-max)  items/s  vs os.pipe
    ---------------------  -----  ----------------  -------  ----------
    shmfifo get             2.55         2.04-2.71    2,431       1.37x
    shmfifo get_view         n/a
    ...
    os.pipe                 1.86         1.09-2.03    1,770       1.00x
    mp.Queue                0.48         0.44-0.88      458       0.26x
    faster-fifo             1.79         1.25-2.47    1,704       0.96x
    memcpy, in cache       22.04       21.66-24.44   21,019      11.87x
    memcpy, out of cache    5.20         4.99-5.28    4,960       2.80x

    target                                          measured        ratio                 result
    ...
    - shmfifo get_view: not available in this build (shmfifo.Fifo has no get_view)

A producer process puts N items of SIZE bytes, made once before the run and put in turn; a
consumer process takes them. Each transport runs as the suite's throughput cells do (the same
forked workers, handshake, clock and delivery check; bench/workloads.py), each run sized to
about TARGET_S seconds unless ``--items`` says otherwise, in passes over all the transports,
and the median of ``--runs`` is shown with the slowest and fastest run. GB is 10^9 bytes.
The memcpy rows copy SIZE bytes in this one process. ``python -m bench`` runs the same as its
"large" section.

Each consumer ends with what a program would hold: a new bytes object (or ndarray) of the item,
except with ``get_view``, where the item is read in place and only what the consumer touches
is fetched: the minimum (its header and one byte of each page), or all of it (``bytes(v)``,
the work of a ``get``). Rows that this build cannot run say why in the notes.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np

from . import delivery, ipc_names, peers, report, suite, workloads
from .workloads import log

__all__ = ["run", "parse_size", "DEFAULT_SIZE", "CAPACITY", "TARGET_S"]

DEFAULT_SIZE = 1 << 20
CAPACITY = 8
TARGET_S = 0.5              # seconds a run lasts, calibrated; the defaults take about 15 s
# The FIFO's other geometry: the defaults, as a user gets them. An item in flight keeps its
# pool slot and the pool has capacity + in_flight slots, in_flight limited by default to a
# quarter of the queue's bytes (or 1 MiB): a FIFO of eight 1 MiB items takes about 10 MiB.
GEOMETRY = {}
PAGE = os.sysconf("SC_PAGE_SIZE")
START_BYTES = 32 << 20      # the first calibration run moves about this much
PROBE_ITEM_SIZE = 4096      # holds a small pickled ndarray
MEMCPY_RUN_S = 0.1


def parse_size(text):
    """'1M' -> 1048576: a number of bytes, with K, M or G (powers of 1024; 'KiB', 'MB' too)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([KMG])(?:i?B)?|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size: use bytes, or a number with K, M or G")
    unit = {None: 0, "K": 10, "M": 20, "G": 30}[(match.group(2) or "").upper() or None]
    return int(match.group(1)) << unit


# --- shmfifo consumers ---------------------------------------------------------------------------

class ShmfifoPeer(peers.Shmfifo):
    """peers.Shmfifo with the small geometry above, noting what its segment takes."""

    def __init__(self, capacity, item_size):
        super().__init__(capacity, item_size, 1, 1, **GEOMETRY)
        self.segment_bytes = None

    def create(self):
        import shmfifo.names

        super().create()
        # The file's size, not a formula: it stays true whatever the layout becomes.
        self.segment_bytes = os.stat(shmfifo.names.shm_path(self.name)).st_size


class ShmfifoView(ShmfifoPeer):
    """A consumer that takes each item with ``get_view`` and hands ``use(view)`` to the
    harness, which reads the 16-byte header of what it gets (delivery.py)."""

    def __init__(self, capacity, item_size, use):
        super().__init__(capacity, item_size)
        self.use = use

    @contextlib.contextmanager
    def connect(self):
        with super().connect():
            get_view, use = self.queue.get_view, self.use

            def get():
                with get_view() as view:
                    return use(view)

            self.get = get
            yield self


class ShmfifoInPlace(ShmfifoView):
    """Both sides in place: the producer writes each item with ``put_view`` (its header and
    one byte of each page, the least a producer making the item there would touch), the
    consumer reads it with ``get_view`` (``_read_pages``). No copy on either side."""

    def __init__(self, capacity, item_size):
        super().__init__(capacity, item_size, _read_pages)

    @contextlib.contextmanager
    def connect(self):
        with super().connect():
            put_view = self.queue.put_view

            def put(item):
                with put_view(len(item)) as buf:
                    buf[::PAGE] = item[::PAGE]
                    buf[:delivery.HEADER.size] = item[:delivery.HEADER.size]

            self.put = put
            yield self


def _read_pages(view):
    """The least a consumer does with an item: the header, and one byte of each page (so every
    page is mapped and one cache line of it fetched)."""
    view[::PAGE].tobytes()
    return view[:delivery.HEADER.size].tobytes()


# --- the transports ------------------------------------------------------------------------------

class Transport(typing.NamedTuple):
    label: str
    what: str                                   # what its two sides do, for the report
    make_peer: typing.Callable[[], peers.Peer]  # a peer of this run's geometry
    kind: str                                   # "bytes" or "ndarray": what the producer puts
    skipped: str | None                         # why it is not run here; None: it runs


def _transports(size, capacity):
    """Every transport, in report order."""
    import shmfifo

    no_fifo = _unfit(size, capacity)
    no_view = no_fifo or (None if hasattr(shmfifo.Fifo, "get_view")
                          else "not available in this build (shmfifo.Fifo has no get_view)")
    no_put_view = no_view or (None if hasattr(shmfifo.Fifo, "put_view")
                              else "not available in this build (shmfifo.Fifo has no put_view)")
    ndarray_size, no_ndarray = _ndarray_item_size(size, capacity)
    no_ff = (None if importlib.util.find_spec("faster_fifo")
             else "not installed (bin/setup bench installs it)")
    return [Transport(*fields) for fields in (
        ("shmfifo get", "q.put(bytes); q.get() returns bytes",
         lambda: ShmfifoPeer(capacity, size), "bytes", no_fifo),
        ("shmfifo get_view", f"with q.get_view() as v: reads v's header and one byte of each "
         f"{PAGE} B page", lambda: ShmfifoView(capacity, size, _read_pages), "bytes", no_view),
        ("shmfifo get_view+copy", "with q.get_view() as v: bytes(v), the work of a get",
         lambda: ShmfifoView(capacity, size, bytes), "bytes", no_view),
        ("shmfifo put_view+get_view", f"with q.put_view(SIZE) as b: writes b's header and "
         f"one byte of each {PAGE} B page; the consumer as for get_view: no copy at all",
         lambda: ShmfifoInPlace(capacity, size), "bytes", no_put_view),
        ("shmfifo ndarray", "q.put(a float64 ndarray of SIZE bytes); q.get() returns an ndarray",
         lambda: ShmfifoPeer(capacity, ndarray_size), "ndarray", no_ndarray),
        ("os.pipe", "os.write of the whole item; io.BufferedReader.read(SIZE) reads it into a "
         "new bytes (one copy each way)", lambda: peers.PipeStream(capacity, size, 1, 1),
         "bytes", None),
        ("mp.Queue", "multiprocessing.Queue(maxsize=capacity): pickles, a feeder thread writes "
         "a pipe", lambda: peers.MpQueue(capacity, size, 1, 1), "bytes", None),
        ("faster-fifo", "faster_fifo.Queue: pickles into a byte ring in shared memory",
         lambda: peers.FasterFifo(capacity, size, 1, 1), "bytes", no_ff),
    )]


def _unfit(item_size, capacity):
    """Why this build can make no FIFO of `item_size` here, or None."""
    import shmfifo

    try:
        shmfifo.daemon.geometry_for(capacity=capacity, item_size=item_size, **GEOMETRY)
    except shmfifo.UsageError as error:
        return f"no FIFO of {item_size:,} B items can be made in this build: {error}"
    return None


def _ndarray_item_size(size, capacity):
    """(item_size a FIFO needs for a float64 ndarray of `size` bytes, None) when the FIFO
    round-trips ndarrays as ndarrays and can be made that large; else (None, the reason)."""
    import shmfifo

    if size % 8:
        return None, f"{size:,} B is not a whole number of float64"
    name = ipc_names.unique("probe")
    # Small items: a full-size ndarray that does not fit says in ItemTooLarge what it needs.
    needed = PROBE_ITEM_SIZE
    with shmfifo.serve(name, capacity=1, item_size=needed, max_clients=1, batch_max=1), \
            shmfifo.attach(name) as q:
        q.put(np.arange(4.0))
        back = q.get()
        if not (isinstance(back, np.ndarray) and np.array_equal(back, np.arange(4.0))):
            return None, f"the FIFO returns {type(back).__name__} for an ndarray"
        try:
            q.put(np.zeros(size // 8))
        except shmfifo.ItemTooLarge as error:
            needed = error.size
        else:
            q.get()
    unfit = _unfit(needed, capacity)
    if unfit:
        return None, f"an ndarray of {size:,} B takes {needed:,} B in a slot: {unfit}"
    return needed, None


def _items(kind, size, count):
    """`count` items of `size` bytes, item k carrying word k (delivery.check_cycle)."""
    make = delivery.item_maker(0, size)
    if kind == "ndarray":
        return [np.frombuffer(make(k), dtype=np.float64).copy() for k in range(count)]
    return [make(k) for k in range(count)]


def _impl(label, make_peer, items, segments):
    """A suite.Impl running `make_peer()` peers; `segments[label]`: a FIFO's segment size."""
    notes = {}

    def throughput(workload, count, workdir, timeout):
        peer = make_peer()
        try:
            return workloads.run_prepared(peer, items, count, workdir, timeout)
        finally:
            notes["capacity"] = peer.capacity_note
            if getattr(peer, "segment_bytes", None):
                segments[label] = peer.segment_bytes

    return suite.Impl(label, False, throughput, None, lambda workload: notes.get("capacity", ""))


# --- memcpy --------------------------------------------------------------------------------------

def _last_level_cache():
    index = Path("/sys/devices/system/cpu/cpu0/cache")
    sizes = [parse_size(path.read_text()) for path in index.glob("index*/size")]
    return max(sizes, default=32 << 20)


def memcpy_rates(size, runs):
    """GB/s of copying `size` bytes with one memcpy (memoryview slice assignment), in this
    process: {"in cache": [per run], "out of cache": [...], "working_set": bytes}. In cache:
    the same `size` bytes each time; out of cache: the next `size` bytes of a source and a
    target that are four times the largest CPU cache together."""
    span = max(2, -(-2 * _last_level_cache() // size)) * size
    # Filled, not zeroed: a fresh bytearray's pages may all map the kernel's one zero page.
    source = memoryview(bytearray(b"\x5a") * span)
    target = memoryview(bytearray(b"\xa5") * span)
    rates = {"in cache": [], "out of cache": [], "working_set": 2 * span}
    for _ in range(runs):
        for key, end in (("in cache", size), ("out of cache", span)):
            copies, started = 0, time.perf_counter()
            while True:
                for offset in range(0, end, size):
                    target[offset:offset + size] = source[offset:offset + size]
                copies += end // size
                elapsed = time.perf_counter() - started
                if elapsed >= MEMCPY_RUN_S:
                    break
            rates[key].append(copies * size / elapsed / 1e9)
    return rates


# --- the section ---------------------------------------------------------------------------------

def run(size, capacity, runs, target_s, workdir, items=None):
    """Measure every transport; return the JSON-ready section that report.large_* formats."""
    loadavg_start = os.getloadavg()
    transports = _transports(size, capacity)
    running = [t for t in transports if t.skipped is None]
    # A few more items than the FIFO holds, so the check would see one dropped or repeated.
    pools = {kind: _items(kind, size, capacity + 2) for kind in {t.kind for t in running}}
    segments = {}
    impls = [_impl(t.label, t.make_peer, pools[t.kind], segments) for t in running]
    workload = workloads.Workload(1, 1, capacity, size, group="large")
    measured = suite.run_throughput(
        impls, [workload], runs, target_s, workdir,
        start_items=max(4, START_BYTES // size), items=items)[0]["results"]
    log(f"  memcpy of {size:,} B")
    memcpy = memcpy_rates(size, runs)
    rows = []
    for t in transports:
        result = measured.get(t.label, {"items_per_s": None, "runs": [], "failure": ""})
        ok = result["items_per_s"] and not result["failure"]
        rows.append({
            "label": t.label, "what": t.what, "skipped": t.skipped or "",
            "gbps": result["items_per_s"] * size / 1e9 if ok else None,
            "gbps_runs": [rate * size / 1e9 for rate in result["runs"]],
            "items_per_s": result["items_per_s"], "runs": result["runs"],
            "items": result.get("items", 0), "failure": result["failure"],
            "capacity_note": result.get("capacity_note", ""),
            "segment_bytes": segments.get(t.label)})
    return {
        "size": size, "capacity": capacity, "repeat": runs, "target_s": target_s,
        "items": items, "pool": capacity + 2, "geometry": GEOMETRY, "page": PAGE,
        "rows": rows,
        "memcpy": {"working_set": memcpy.pop("working_set"),
                   "rows": [{"label": f"memcpy, {key}", "gbps": statistics.median(gbps),
                             "gbps_runs": gbps} for key, gbps in memcpy.items()]},
        "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg(),
    }


def _size_argument(text):
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.large",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--size-bytes", type=_size_argument, default=DEFAULT_SIZE, metavar="SIZE",
                        help="bytes per item: a number, or with K, M, G (default 1M)")
    parser.add_argument("--items", type=int, default=None,
                        help=f"items per run (default: enough for about {TARGET_S} s)")
    parser.add_argument("--runs", type=int, default=5, help="runs per transport (default 5)")
    parser.add_argument("--capacity", type=int, default=CAPACITY,
                        help=f"items the FIFO holds (default {CAPACITY})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.size_bytes < delivery.MIN_ITEM_SIZE:
        parser.error(f"--size-bytes must be at least {delivery.MIN_ITEM_SIZE} (the header)")
    for option in ("items", "runs", "capacity"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-large-") as workdir:
        try:
            large = run(args.size_bytes, args.capacity, args.runs, TARGET_S, workdir,
                        args.items)
        finally:
            leftovers = ipc_names.sweep()
    large["leftovers"] = leftovers
    print(json.dumps(large, indent=1) if args.json else report.large_text(large))
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
