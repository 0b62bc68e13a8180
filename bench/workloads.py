"""The throughput and latency workloads, and the harness that runs one of them on one peer.

A run forks the consumers and producers, waits until every worker has connected (handshake, not
a sleep), then starts the clock and releases them all at once. Producers put their items and
exit. The parent then sends one stop marker per consumer, one at a time, waiting for a consumer
to finish before sending the next: a batched consumer could otherwise swallow several markers
and leave the others blocked forever. Each consumer writes a words file (see delivery.py); the
run's time is from the release to the last real item received by any consumer, so start-up and
the stop phase are not counted. Every run is checked with delivery.check_delivery; a run that
fails the check, crashes or exceeds its time bound is a failure, never a number.
"""

import dataclasses
import itertools
import multiprocessing.connection
import os
import statistics
import sys
import time
import traceback
from array import array
from pathlib import Path

import numpy as np

from . import delivery
from .peers import CTX

__all__ = ["Workload", "RunFailed", "throughput_workloads", "run_peer", "run_prepared",
           "run_latency_peer", "checked_rate", "calibrate", "run_again", "Measurement", "log"]


@dataclasses.dataclass(frozen=True)
class Workload:
    producers: int
    consumers: int
    capacity: int
    item_size: int
    batch: int = 1          # 1: put/get; >1: put_many/get_many of up to this many items
    group: str = "scaling"  # "scaling" (64 B, 1..8 pairs) or "sizes" (1P/1C, 16 B..4 KiB)

    @property
    def label(self):
        mode = f"batch {self.batch}" if self.batch > 1 else "single"
        return (f"{self.producers}P/{self.consumers}C cap {self.capacity} "
                f"{self.item_size} B {mode}")


def batch_for(capacity):
    """Batches of up to 64, but at most half the capacity, so a producer and a consumer can each
    hold a batch at once (faster-fifo's put_many waits until the whole batch fits)."""
    return min(64, capacity // 2)


def throughput_workloads(quick):
    """The workload list: quick keeps one of each kind so every code path still runs."""
    pairs = (1, 2) if quick else (1, 2, 4, 8)
    sizes = (16, 4096) if quick else (16, 256, 1024, 4096)
    scaling = [
        Workload(n, n, capacity, 64, batch)
        for capacity in (32, 1024)
        for n in pairs
        for batch in (1, batch_for(capacity))
        if not (quick and n > 1 and (capacity, batch) != (32, 1))
    ]
    by_size = [Workload(1, 1, 32, size, group="sizes") for size in sizes]
    return scaling + by_size


class RunFailed(Exception):
    """A run that did not produce a trustworthy number; the message says why."""


@dataclasses.dataclass
class Measurement:
    """The median of the repeats, or the reason the workload failed."""

    items_per_s: float = None
    runs: list = dataclasses.field(default_factory=list)
    items: int = 0
    failure: str = ""

    @property
    def ok(self):
        return not self.failure

    def finish(self):
        """Set the median, once every run is in."""
        if self.ok and self.runs:
            self.items_per_s = statistics.median(self.runs)


# --- workers (run in forked processes) ---------------------------------------------------------

def _worker(body, peer, ready, go, error_path, *args):
    """Common worker frame: connect, report ready, wait for the start, run; record any error."""
    try:
        with peer.connect() as ep:
            ready.release()
            go.wait()
            body(ep, *args)
    except BaseException:
        Path(error_path).write_text(traceback.format_exc())
        os._exit(1)


def _produce(ep, producer, count, item_size, batch):
    make = delivery.item_maker(producer, item_size)
    if batch == 1:
        put = ep.put
        for seq in range(count):
            put(make(seq))
    else:
        put_many = ep.put_many
        for start in range(0, count, batch):
            put_many([make(seq) for seq in range(start, min(count, start + batch))])


def _produce_prepared(ep, producer, count, items):
    put = ep.put
    for item in itertools.islice(itertools.cycle(items), count):
        put(item)


def _produce_paced(ep, producer, count, item_size, rate):
    """Put `count` items at `rate`/s on absolute deadlines, stamping each with its put time."""
    make = delivery.item_maker(producer, item_size)
    put, now, sleep = ep.put, time.monotonic_ns, time.sleep
    period = 1e9 / rate
    start = now()
    for seq in range(count):
        delay = start + seq * period - now()
        if delay > 0:
            sleep(delay / 1e9)
        put(make(seq, now()))


def _consume(ep, words_path, batch, latency_path=None):
    words = array("Q")
    latencies = array("q")
    unpack = delivery.HEADER.unpack_from
    now = time.monotonic_ns
    end_ns = 0
    done = False
    while not done:
        got = [ep.get()] if batch == 1 else ep.get_many(batch)
        t = now()
        for item in got:
            word, put_ns = unpack(item)
            if word == delivery.STOP:
                done = True  # nothing real follows a stop marker (module docstring)
                break
            words.append(word)
            if latency_path:
                latencies.append(t - put_ns)
            end_ns = t
    delivery.write_words(words_path, end_ns, words)
    if latency_path:
        with open(latency_path, "wb") as f:
            latencies.tofile(f)


# --- the harness --------------------------------------------------------------------------------

def _run(peer, workdir, producers, consumers, producer_body, producer_args, batch,
         timeout, latency=False):
    """Run one set of workers on `peer`; return (t0_ns, [(end_ns, words)], latencies or None)."""
    workdir = Path(workdir)
    ready = CTX.Semaphore(0)
    go = CTX.Event()
    procs = []
    try:
        peer.create()
        consumer_procs = []
        for index in range(consumers):
            args = (workdir / f"c{index}.words", batch,
                    (workdir / f"c{index}.lat") if latency else None)
            consumer_procs.append(CTX.Process(
                target=_worker, name=f"consumer {index}",
                args=(_consume, peer, ready, go, workdir / f"c{index}.err", *args)))
        producer_procs = [
            CTX.Process(target=_worker, name=f"producer {index}",
                        args=(producer_body, peer, ready, go, workdir / f"p{index}.err",
                              index, *producer_args))
            for index in range(producers)]
        procs = consumer_procs + producer_procs
        for proc in procs:
            proc.start()

        deadline = time.monotonic() + timeout
        waiting = len(procs)
        while waiting:
            if ready.acquire(timeout=0.05):
                waiting -= 1
            elif any(p.exitcode is not None for p in procs) or time.monotonic() > deadline:
                raise RunFailed("workers did not connect" + _errors(workdir, procs))
        t0 = time.monotonic_ns()
        go.set()

        _join_all(producer_procs, deadline, workdir, procs)
        with peer.connect() as ep:
            stop = delivery.stop_item(peer.item_size)
            running = list(consumer_procs)
            while running:
                ep.put(stop)
                finished = multiprocessing.connection.wait(
                    [p.sentinel for p in running], timeout=max(0.0, deadline - time.monotonic()))
                if not finished:
                    raise RunFailed("consumers did not finish in time" + _errors(workdir, procs))
                running = [p for p in running if p.sentinel not in finished]
        _join_all(consumer_procs, deadline, workdir, procs)

        results = [delivery.read_words(workdir / f"c{index}.words") for index in range(consumers)]
        latencies = None
        if latency:
            latencies = np.concatenate([np.fromfile(workdir / f"c{index}.lat", dtype="<i8")
                                        for index in range(consumers)])
        return t0, results, latencies
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
        peer.destroy()
        for path in workdir.iterdir():
            path.unlink()


def _join_all(group, deadline, workdir, procs):
    """Wait for every process of `group` to exit 0; fail as soon as any worker of the run
    fails (a dead consumer would otherwise leave producers blocked until the time bound)."""
    while True:
        # One snapshot for both lists: a process that exits after it is still in the wait list,
        # and its sentinel stays readable, so no exit can be missed.
        alive = [p for p in procs if p.exitcode is None]
        for proc in procs:
            if proc.exitcode not in (None, 0):
                raise RunFailed(f"{proc.name} exited with {proc.exitcode}"
                                + _errors(workdir, procs))
        running = [p for p in group if p in alive]
        if not running:
            return
        if time.monotonic() >= deadline:
            raise RunFailed(f"{running[0].name} still running at the time bound"
                            + _errors(workdir, procs))
        multiprocessing.connection.wait([p.sentinel for p in alive],
                                        timeout=max(0.0, deadline - time.monotonic()))


def _errors(workdir, procs):
    """The last line of each worker's traceback, so a failure says what broke."""
    lines = []
    for path in sorted(Path(workdir).glob("*.err")):
        text = path.read_text().strip().splitlines()
        if text:
            lines.append(f"{path.stem}: {text[-1]}")
    return (": " + "; ".join(lines)) if lines else ""


def run_peer(peer, workload, per_producer, workdir, timeout):
    """One throughput run; return items/s or raise RunFailed."""
    t0, results, _ = _run(
        peer, workdir, workload.producers, workload.consumers, _produce,
        (per_producer, workload.item_size, workload.batch), workload.batch, timeout)
    return checked_rate(t0, results, workload.producers, per_producer)


def run_prepared(peer, items, count, workdir, timeout):
    """One 1P/1C throughput run that puts `count` items taken in turn from `items`, made
    beforehand (item k carrying word k: delivery.check_cycle); return items/s or raise
    RunFailed."""
    t0, [(end, words)], _ = _run(peer, workdir, 1, 1, _produce_prepared, (count, items), 1,
                                 timeout)
    try:
        delivery.check_cycle(words, count, len(items))
    except delivery.DeliveryError as error:
        raise RunFailed(f"delivery check: {error}") from None
    return count / ((end - t0) / 1e9)


def checked_rate(t0, results, producers, per_producer):
    """Items/s from the release (t0) to the last item received, if the delivery check passes."""
    try:
        delivery.check_delivery([words for _, words in results], producers, per_producer)
    except delivery.DeliveryError as error:
        raise RunFailed(f"delivery check: {error}") from None
    end = max(end_ns for end_ns, _ in results)
    return producers * per_producer / ((end - t0) / 1e9)


def run_latency_peer(peer, count, rate, workdir):
    """One paced 1P/1C run; return the latencies in ns (numpy array) or raise RunFailed."""
    t0, results, latencies = _run(
        peer, workdir, 1, 1, _produce_paced, (count, peer.item_size, rate), 1,
        timeout=30 + 3 * count / rate, latency=True)
    checked_rate(t0, results, 1, count)
    return latencies


def calibrate(run_once, target_s, max_items, start_items=2000):
    """Find the item count that makes a run last about `target_s`: a Measurement with `items`
    set, or with `failure`. ``run_once(total_items) -> items/s`` may raise RunFailed. The
    calibration runs double as warm-up and are not reported."""
    result = Measurement()
    try:
        total = start_items
        while True:
            rate = run_once(total)
            # A run much shorter than the target is dominated by noise: grow it and re-estimate.
            if total / rate >= target_s / 10 or total >= max_items:
                break
            total = int(min(max_items, max(total * 2, rate * target_s / 5)))
        result.items = int(min(max_items, max(start_items, rate * target_s)))
    except Exception as error:
        _fail(result, error)
    return result


def run_again(result, run_once):
    """One more reported run of a calibrated cell; a failure ends the cell."""
    if not result.ok:
        return
    try:
        result.runs.append(run_once(result.items))
    except Exception as error:
        _fail(result, error)


def _fail(result, error):
    if isinstance(error, RunFailed):
        result.failure = str(error)
    else:                       # a broken peer must not stop the rest of the suite
        result.failure = f"{type(error).__name__}: {error}"


def log(message):
    print(message, file=sys.stderr, flush=True)
