"""The bridge end to end: FIFO A -> Redis stream -> FIFO B, beside what Redis itself does.

    $ .venv/bin/python -m bench.bridge
    | measure, 64-byte items | items/s | spread (min-max) |

One redis-server on a free loopback port (no persistence: what is measured is the bridge,
not the disk), two FIFOs of 4,096 items with batches of 1,024, a ``shmfifo bridge`` from A to
the stream and one from the stream to B (``--batch 1024``), all real processes. A producer
process puts N 64-byte items into A with put_many (batches of 1,024) as fast as A takes them;
a consumer process takes them from B with get_many and checks that it got N. Twice: with an
entry per item (the default), and with ``--pack 64``. Items/s is N over the time
from the first put to the last get (CLOCK_MONOTONIC, shared by all processes); the median of
``--runs`` runs is shown with the slowest and fastest.

Beside it, in the same run and on the same server:

* ``redis-benchmark`` XADD of the same item, 64 commands pipelined on each of its 50
  connections (C, no Python): the most Redis takes on this machine, the limit;
* XADD of the same item from one Python process through redis-py's pipeline, 1,024 per
  round trip: what a bridge built on the pipeline could send at most, before any FIFO work (the
  bridge encodes its XADDs itself for that reason; bridge.py).

On this 2-core machine every process shares two cores: redis-server, both bridges, the
producer and the consumer.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ITEM = b"x" * 64
BATCH = 1024                # the FIFOs' batch size and the bridges' --batch
PACK = 64
PRODUCER = """
import sys, time, shmfifo
q = shmfifo.attach(sys.argv[1])
n, batch = int(sys.argv[2]), [b"x" * 64] * 1024
print(time.monotonic(), flush=True)
for _ in range(n // 1024):
    q.put_many(batch)
q.close()
"""
CONSUMER = """
import sys, time, shmfifo
q = shmfifo.attach(sys.argv[1])
n, got = int(sys.argv[2]), 0
print("ready", flush=True)
while got < n:
    items = q.get_many(1024, timeout=60)
    got += len(items)
q.ack()
print(time.monotonic(), got, flush=True)
q.close()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python(*args, **kwargs):
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_line(proc, pattern, stream="stderr"):
    regex = re.compile(pattern)
    source = getattr(proc, stream)
    for line in source:
        if regex.search(line):
            return line
    raise RuntimeError(f"{proc.args} ended without {pattern!r}: {proc.stderr.read()}")


class Redis:
    def __init__(self, directory):
        self.port = _free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory], stdout=subprocess.DEVNULL)
        import redis
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def redis_benchmark(port, n):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-P", "64",
                          "--csv", "XADD", "bench:limit", "*", "item", ITEM.decode()],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1].split(",")[1].strip('"'))


def redis_py_pipeline(port, n):
    import redis
    r = redis.Redis(port=port)
    start = time.perf_counter()
    for _ in range(n // BATCH):
        pipe = r.pipeline(transaction=False)
        for _ in range(BATCH):
            pipe.xadd("bench:redis-py", {"item": ITEM, "type": b"bytes",
                                         "origin": b"host 4711 1"})
        pipe.execute()
    return n // BATCH * BATCH / (time.perf_counter() - start)


def end_to_end(port, n, run, pack):
    a, b = f"bench-bridge-a-{os.getpid()}-{run}", f"bench-bridge-b-{os.getpid()}-{run}"
    url = f"redis://127.0.0.1:{port}/0/bench:e2e:{run}:{pack}"
    procs = []
    try:
        for name in (a, b):
            daemon = _python("-m", "shmfifo", "fifo", "--name", name, "--size", "4096",
                             "--batch", str(BATCH))
            procs.append(daemon)
            _wait_line(daemon, "ready: FIFO")
        for args in ((a, url, "--maxlen", "10000000", "--batch", str(BATCH), "--pack",
                      str(pack)), (url, b, "--batch", str(BATCH))):
            bridge = _python("-m", "shmfifo", "bridge", *args)
            procs.append(bridge)
            _wait_line(bridge, "connected to redis")
        consumer = _python("-c", CONSUMER, b, str(n))
        _wait_line(consumer, "ready", "stdout")
        producer = _python("-c", PRODUCER, a, str(n))
        start = float(producer.stdout.readline())
        producer.wait()
        end, got = consumer.stdout.readline().split()
        consumer.wait()
        if int(got) != n:
            raise RuntimeError(f"the consumer got {got} of {n} items")
        return n / (float(end) - start)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
        sys.exit("bench.bridge needs redis-server and redis-benchmark (apt-get install "
                 "redis-server)")
    n = args.items // BATCH * BATCH
    rows = {"redis-benchmark XADD, pipelined 64 (the limit)": [],
            "redis-py pipeline XADD, one Python process": [],
            "shmfifo FIFO A -> bridge -> Redis -> bridge -> FIFO B, an entry per item": [],
            f"the same, --pack {PACK} (up to {PACK} items an entry)": []}
    with tempfile.TemporaryDirectory() as directory:
        server = Redis(directory)
        try:
            for run in range(args.runs):
                print(f"run {run + 1}/{args.runs}", file=sys.stderr)
                measures = list(rows.values())
                measures[0].append(redis_benchmark(server.port, n))
                measures[1].append(redis_py_pipeline(server.port, n // 4))
                measures[2].append(end_to_end(server.port, n, run, 1))
                measures[3].append(end_to_end(server.port, n, run, PACK))
                server.client.flushall()
        finally:
            server.stop()
    print(f"\nBridge, 64-byte items, {n:,} per run, median of {args.runs} runs "
          f"(`python -m bench.bridge`)\n")
    print("| measure | items/s | spread (min-max) |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):,.0f} | "
              f"{min(values):,.0f}-{max(values):,.0f} |")


if __name__ == "__main__":
    main()
