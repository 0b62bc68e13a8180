"""Latency of a waiting consumer: sleeping on the semaphore against spinning (``spin_us``).

    $ .venv/bin/python -m bench.polling
    | consumer wait, producer at 1,000 items/s | p50 | p99 | consumer CPU |

A producer process puts its clock reading (CLOCK_MONOTONIC, shared by all processes, as 8
bytes: the C fast path on both sides) at 1,000 items/s; a consumer process takes each item with a plain blocking ``get`` and records
the difference (p50 / p99 of 3,000), and the CPU time it used over the run, in % of one
core. The consumer waits three ways, one after the other in the same run:

* the default: a short spin (microseconds), then it sleeps in ``sem_timedwait`` and the
  producer's ``sem_post`` wakes it: a futex wake-up each item;
* ``spin_us=50``: it polls for 50 µs before it sleeps (items arrive every 1,000 µs, so this
  only shows what a short bound costs);
* ``spin_us=2000`` (busy-poll): longer than the gap between items, so it never sleeps.

Two more rows put the busy-poll in context, measured the same way in the same run:

* iceoryx2's Python binding (a zero-copy publish-subscribe over shared memory, when
  installed: the bench extra), its subscriber polling ``receive()``;
* the floor: the producer stores the stamp into a word of a shared mapping and the consumer
  polls that word in a Python loop. No queue can deliver faster between two Python processes;
  most of it is the producer's Python waking from its 1 ms sleep, on a cold core.
"""

import ctypes
import mmap
import multiprocessing
import os
import resource
import struct
import sys
import time

import shmfifo
from bench.coroutines import LATENCY_ITEMS, RATE, _daemon, _paced_producer, _percentiles

STAMP = struct.Struct("<Q")


def _producer(name, n, rate):
    with shmfifo.attach(name) as q:
        _paced_producer(lambda ns: q.put(STAMP.pack(ns)), n, rate)

WAYS = (("sleeps on the semaphore (default)", 0), ("spins 50 µs, then sleeps", 50),
        ("spins 2,000 µs (busy-poll: never sleeps)", 2000))


def _consumer(name, spin_us, out):
    with shmfifo.attach(name, spin_us=spin_us) as q:
        q.get(timeout=30)                             # the first item: warm-up
        unpack = STAMP.unpack
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        samples = []
        for _ in range(LATENCY_ITEMS - 1):
            sent, = unpack(q.get(timeout=30))
            samples.append((time.monotonic_ns() - sent) / 1000)
    _report(samples, cpu, started, out)


def _word_producer(word, n, rate):
    stamp = ctypes.c_uint64.from_buffer(word)         # one aligned 8-byte store
    _paced_producer(lambda ns: setattr(stamp, "value", ns), n, rate)


def _word_consumer(word, _, out):
    stamp = ctypes.c_uint64.from_buffer(word)
    last = stamp.value
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    samples = []
    while len(samples) < LATENCY_ITEMS - 1 and time.monotonic() < started + 30:
        sent = stamp.value
        if sent != last:
            samples.append((time.monotonic_ns() - sent) / 1000)
            last = sent
    del stamp
    _report(samples, cpu, started, out)


def _iceoryx2_service(name):
    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Error)   # not "no config file was loaded"
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    service = (node.service_builder(iox2.ServiceName.new(name))
               .publish_subscribe(ctypes.c_uint64).open_or_create())
    return node, service


def _iceoryx2_producer(name, n, rate):
    node, service = _iceoryx2_service(name)
    publisher = service.publisher_builder().create()
    time.sleep(0.5)                                   # the subscriber is connected
    _paced_producer(
        lambda ns: publisher.loan_uninit().write_payload(ctypes.c_uint64(ns)).send(), n, rate)


def _iceoryx2_consumer(name, _, out):
    node, service = _iceoryx2_service(name)
    subscriber = service.subscriber_builder().create()
    receive = subscriber.receive
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    samples = []
    while len(samples) < LATENCY_ITEMS and time.monotonic() < started + 30:
        sample = receive()
        if sample is not None:
            samples.append((time.monotonic_ns() - sample.payload().contents.value) / 1000)
            del sample                                # gives the loan back
    _report(samples, cpu, started, out)


def _report(samples, cpu, started, out):
    elapsed = time.monotonic() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    busy = (used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime) / elapsed
    out.put((_percentiles(samples[10:]), busy))


def measure(ctx, name, spin_us, consumer=_consumer, producer=_producer):
    out = ctx.Queue()
    consumer = ctx.Process(target=consumer, args=(name, spin_us, out))
    consumer.start()
    time.sleep(0.3)                                   # attached and waiting
    producer = ctx.Process(target=producer, args=(name, LATENCY_ITEMS, RATE))
    producer.start()
    result = out.get(timeout=60)
    producer.join()
    consumer.join()
    return result


def main(argv=None):
    ctx = multiprocessing.get_context("fork")
    name = f"bench.polling.{os.getpid()}"
    daemon = _daemon(name)
    try:
        results = [(label, measure(ctx, name, spin_us)) for label, spin_us in WAYS]
        try:
            import iceoryx2  # noqa: F401  (the bench extra)
        except ImportError:
            print("iceoryx2 is not installed (pip install -e '.[bench]'): its row is left out",
                  file=sys.stderr)
        else:
            results.append(("iceoryx2 subscriber, polling `receive()`",
                            measure(ctx, f"shmfifo-bench/{os.getpid()}", None,
                                    _iceoryx2_consumer, _iceoryx2_producer)))
        word = mmap.mmap(-1, STAMP.size)              # shared with the forked processes
        results.append(("the floor: one shared word, polled in Python",
                        measure(ctx, word, None, _word_consumer, _word_producer)))
    finally:
        daemon.terminate()
        daemon.wait()
    path = "pure Python" if os.environ.get("SHMFIFO_PURE") == "1" else "C fast path"
    print(f"A consumer waiting for items ({path}); a producer process at {RATE:,} items/s, "
          f"{LATENCY_ITEMS:,} items")
    print()
    print("| consumer | p50 | p99 | consumer CPU |")
    print("|---|---:|---:|---:|")
    for label, ((p50, p99), busy) in results:
        print(f"| {label} | {p50:.1f} µs | {p99:.1f} µs | {busy * 100:.0f} % of a core |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
