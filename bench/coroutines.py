"""asyncio: shmfifo's aget/aput against the usual alternatives, in one run.

    $ .venv/bin/python -m bench.coroutines
    | measure                                         | shmfifo aget/aput | ... |

Measures, on this machine:

* **wake-up latency**: a producer process puts its clock reading (CLOCK_MONOTONIC, shared by
  all processes) at 1,000 items/s; a coroutine awaits each item and takes the difference
  (p50 / p99 of 3,000). Against ``run_in_executor(None, q.get)`` on the same FIFO and on a
  ``multiprocessing.Queue``, which is what programs do without a native API, and against a
  plain blocking ``get`` in a thread of its own: one wake-up of a sleeping thread, where an
  awaiting coroutine needs two (the watcher's, then the event loop's).
* **100 waiters**: 100 coroutines await ``aget`` on one handle; 100 items are put by another
  process; the time until every coroutine has its item.
* **CPU while idle**: the CPU time of the whole process (every thread, the watchers
  included) while 100 coroutines wait 3 s on an empty FIFO, in % of one core.
* **producer throughput**: one coroutine puts 64-byte items with ``aput_many`` in batches
  of 64 while another process takes them with ``get_many``.
"""

import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

import shmfifo

RATE, LATENCY_ITEMS = 1000, 3000
THROUGHPUT_ITEMS, BATCH = 1_000_000, 64


def _paced_producer(put, n, rate):
    started = time.monotonic()
    for i in range(n):
        pause = started + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        put(time.monotonic_ns())


def _shmfifo_producer(name, n, rate):
    with shmfifo.attach(name) as q:
        _paced_producer(q.put, n, rate)


def _mp_producer(queue, n, rate):
    _paced_producer(queue.put, n, rate)


def _percentiles(samples):
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def _latency(ctx, get, producer, source):
    """p50/p99 in µs from a paced producer process to ``await get()`` returning."""
    async def measure():
        samples = []
        for _ in range(LATENCY_ITEMS):
            sent = await get()
            samples.append((time.monotonic_ns() - sent) / 1000)
        return samples
    proc = ctx.Process(target=producer, args=(source, LATENCY_ITEMS, RATE))
    proc.start()
    samples = asyncio.run(measure())
    proc.join()
    return _percentiles(samples[10:])


def _blocking_latency(ctx, name):
    """The same producer into a plain blocking get: one wake-up, the floor for the rest."""
    with shmfifo.attach(name) as q:
        proc = ctx.Process(target=_shmfifo_producer, args=(name, LATENCY_ITEMS, RATE))
        proc.start()
        samples = []
        for _ in range(LATENCY_ITEMS):
            sent = q.get()
            samples.append((time.monotonic_ns() - sent) / 1000)
        proc.join()
    return _percentiles(samples[10:])


def latency(ctx, name):
    async def in_executor(get):
        return await asyncio.get_running_loop().run_in_executor(None, get)

    results = {"shmfifo blocking get, no asyncio (one wake-up)": _blocking_latency(ctx, name)}
    with shmfifo.attach(name) as q:
        results["shmfifo aget"] = _latency(ctx, q.aget, _shmfifo_producer, name)
        results["shmfifo run_in_executor(get)"] = _latency(
            ctx, lambda: in_executor(q.get), _shmfifo_producer, name)
    mpq = ctx.Queue()
    results["mp.Queue run_in_executor(get)"] = _latency(
        ctx, lambda: in_executor(mpq.get), _mp_producer, mpq)
    return results


def _put_items(name, n):
    with shmfifo.attach(name) as q:
        q.put_many(list(range(n)))


async def _many_waiters(name, ctx):
    q = shmfifo.attach(name)
    tasks = [asyncio.ensure_future(q.aget()) for _ in range(100)]
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    proc = ctx.Process(target=_put_items, args=(name, 100))
    proc.start()
    got = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    proc.join()
    assert sorted(got) == list(range(100))
    # idle: 100 waiters on an empty FIFO for 3 s
    tasks = [asyncio.ensure_future(q.aget()) for _ in range(100)]
    await asyncio.sleep(0.5)
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(3.0)
    idle = (time.process_time() - cpu) / (time.monotonic() - wall) * 100
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    q.close()
    return elapsed, idle


def _drain(name, n, done):
    with shmfifo.attach(name) as q:
        got = 0
        while got < n:
            got += len(q.get_many(BATCH))
    done.set()


async def _throughput(name, ctx):
    q = shmfifo.attach(name)
    item = b"x" * 64
    batch = [item] * BATCH
    done = ctx.Event()
    proc = ctx.Process(target=_drain, args=(name, THROUGHPUT_ITEMS, done))
    proc.start()
    started = time.perf_counter()
    for _ in range(THROUGHPUT_ITEMS // BATCH):
        await q.aput_many(batch)
    rest = THROUGHPUT_ITEMS % BATCH
    if rest:
        await q.aput_many([item] * rest)
    proc.join()
    elapsed = time.perf_counter() - started
    q.close()
    return THROUGHPUT_ITEMS / elapsed


def _daemon(name):
    """The FIFO daemon as its own process, as users run it (its polling is not ours)."""
    proc = subprocess.Popen([sys.executable, "-m", "shmfifo", "fifo", "--name", name,
                             "--size", "1024", "--item-size", "64"],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "ready" in line:
            return proc
    raise RuntimeError("the daemon did not start")


def main(argv=None):
    ctx = multiprocessing.get_context("fork")
    name = f"bench.coroutines.{os.getpid()}"
    daemon = _daemon(name)
    try:
        lat = latency(ctx, name)
        wake_all, idle = asyncio.run(_many_waiters(name, ctx))
        rate = asyncio.run(_throughput(name, ctx))
    finally:
        daemon.terminate()
        daemon.wait()
    path = "pure Python" if os.environ.get("SHMFIFO_PURE") == "1" else "C fast path"
    print(f"asyncio with shmfifo ({path}), 2-core machine")
    print()
    print(f"| put→await latency at {RATE:,} items/s | p50 | p99 |")
    print("|---|---:|---:|")
    for label, (p50, p99) in lat.items():
        print(f"| {label} | {p50:.1f} µs | {p99:.1f} µs |")
    print()
    print("| measure | shmfifo |")
    print("|---|---:|")
    print(f"| 100 coroutines awaiting aget on one handle: 100 items to all of them | "
          f"{wake_all * 1000:.1f} ms |")
    print(f"| CPU while 100 coroutines wait on an empty FIFO | {idle:.2f} % of a core |")
    print(f"| one producer coroutine, aput_many of {BATCH} × 64 B items | "
          f"{rate / 1000:.0f}k items/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
