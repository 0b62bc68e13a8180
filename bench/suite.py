"""The implementations under test and the throughput and latency sections of the suite.

Each implementation is an :class:`Impl`: a label, whether it has a native batch API, and how to
run one throughput or latency run. Python peers go through the forked-worker harness in
workloads.py; the C ring runs its own workers (cring.py). Both produce words files that pass the
same delivery check.
"""

import dataclasses
import time

import numpy as np

from . import cring, peers, workloads
from .workloads import log

__all__ = ["Impl", "implementations", "run_throughput", "run_latency", "LATENCY_RATE"]

LATENCY_RATE = 1000          # items/s, as the latency target is stated
LATENCY_CAPACITY = 32
LATENCY_ITEM_SIZE = 64
MAX_ITEMS = 20_000_000       # bounds a run even if calibration misjudges a very fast peer


@dataclasses.dataclass
class Impl:
    label: str
    batching: bool
    throughput: object        # (workload, per_producer, workdir, timeout) -> items/s
    latency: object           # (count, rate, workdir) -> latencies in ns
    capacity_note: object     # (workload) -> str


def _python_impl(label, factory):
    notes = {}  # workload -> the peer's capacity note, recorded when it ran

    def throughput(workload, per_producer, workdir, timeout):
        peer = factory(workload.capacity, workload.item_size, workload.producers,
                       workload.consumers)
        try:
            return workloads.run_peer(peer, workload, per_producer, workdir, timeout)
        finally:
            notes[workload] = peer.capacity_note

    def latency(count, rate, workdir):
        peer = factory(LATENCY_CAPACITY, LATENCY_ITEM_SIZE, 1, 1)
        return workloads.run_latency_peer(peer, count, rate, workdir)

    batching = factory(32, 64, 1, 1).batching
    return Impl(label, batching, throughput, latency, lambda workload: notes.get(workload, ""))


def _c_impl(binary, split_locks):
    ring = cring.CRing(binary, split_locks)

    def latency(count, rate, workdir):
        return ring.run_latency(count, rate, LATENCY_ITEM_SIZE, LATENCY_CAPACITY, workdir)

    return Impl(ring.label, False, ring.run, latency, lambda workload: "")


def implementations(cring_binary):
    """All implementations, in report order (the C ring only when it compiled)."""
    impls = [_python_impl(label, factory) for label, factory in peers.python_peers()]
    if cring_binary is not None:
        impls += [_c_impl(cring_binary, False), _c_impl(cring_binary, True)]
    return impls


def run_throughput(impls, workload_list, repeat, target_s, workdir, start_items=2000,
                   items=None):
    """Measure every workload on every implementation; return JSON-ready rows.

    Pass 1 calibrates each cell (workload x implementation), from runs of `start_items` up,
    and runs it once; with `items` given, every run has that many items and nothing is
    calibrated. Passes 2 to `repeat` run every cell once more, in the same order, and the
    median is reported. A cell's repeats are thus minutes apart: slow spells of this shared
    machine last from seconds to a minute, and with the repeats back to back one spell could
    lower every run of one cell (a 1P/1C cell at 0.5x of its usual rate, say) and so the ratio
    of two cells; now a spell costs each cell it touches one run.
    """
    cells = []                  # (workload, impl, run_once, Measurement)
    for workload in workload_list:
        for impl in impls:
            if workload.batch > 1 and not impl.batching:
                continue        # shown with its single-item result, below
            run_once = _run_once(impl, workload, workdir, target_s)
            started = time.monotonic()
            if items is None:
                measured = workloads.calibrate(run_once, target_s, MAX_ITEMS, start_items)
            else:
                measured = workloads.Measurement(items=items)
            workloads.run_again(measured, run_once)
            cells.append((workload, impl, run_once, measured))
            _log_cell(workload, impl, measured, f"run 1 of {repeat}",
                      time.monotonic() - started)
    for n in range(2, repeat + 1):
        log(f"throughput, pass {n} of {repeat}")
        for workload, impl, run_once, measured in cells:
            started = time.monotonic()
            workloads.run_again(measured, run_once)
            _log_cell(workload, impl, measured, f"run {n} of {repeat}",
                      time.monotonic() - started)

    measured_by = {}
    for workload, impl, _, measured in cells:
        measured.finish()
        result = dataclasses.asdict(measured)
        result["capacity_note"] = impl.capacity_note(workload)
        measured_by[workload, impl.label] = result
    rows = []
    for workload in workload_list:
        row = {"workload": dataclasses.asdict(workload), "label": workload.label, "results": {}}
        for impl in impls:
            result = measured_by.get((workload, impl.label))
            if result is None:
                single = measured_by.get((dataclasses.replace(workload, batch=1), impl.label))
                result = dict(single or {"items_per_s": None, "runs": [],
                                         "failure": "no single-item run to stand in"},
                              note="single put/get: no batch API")
            row["results"][impl.label] = result
        rows.append(row)
    return rows


def _run_once(impl, workload, workdir, target_s):
    def run_once(total):
        per_producer = max(1, total // workload.producers)
        # Generous: calibration keeps runs near target_s, so only a hang gets near it.
        timeout = 60 + 20 * target_s
        return impl.throughput(workload, per_producer, workdir, timeout)
    return run_once


def _log_cell(workload, impl, measured, which, seconds):
    shown = (f"{measured.runs[-1]:12,.0f} items/s" if measured.ok
             else f"FAILED: {measured.failure}")
    log(f"  {workload.label:34} {impl.label:15} {shown} ({which}, {seconds:.1f} s)")


def run_latency(impls, count, workdir, rate=LATENCY_RATE):
    """Put-to-get latency at `rate` items/s, consumer blocked on an empty FIFO."""
    results = {}
    for impl in impls:
        try:
            ns = impl.latency(count, rate, workdir)
        except Exception as error:  # one broken peer must not stop the suite
            results[impl.label] = {"failure": f"{type(error).__name__}: {error}"}
            log(f"  latency {impl.label:15} FAILED: {error}")
            continue
        us = ns / 1000.0
        results[impl.label] = {
            "count": int(us.size),
            "p50_us": float(np.percentile(us, 50)),
            "p99_us": float(np.percentile(us, 99)),
            "max_us": float(us.max()),
            "failure": "",
        }
        log(f"  latency {impl.label:15} p50 {results[impl.label]['p50_us']:8.1f} us  "
            f"p99 {results[impl.label]['p99_us']:8.1f} us  max {results[impl.label]['max_us']:8.1f} us")
    return results
