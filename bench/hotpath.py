"""The cost of the hot path in one process: a put+get pair and batched items, in µs.

    $ .venv/bin/python -m bench.hotpath
    put+get pair, 64 B bytes, one mutex:   0.19 us (median of 15 x 50,000)
    put_many / get_many, batches of 64:    0.02 / 0.02 us per item

Both sides run in this process, so this measures the work per operation (what a profile of
the data path is about), without cross-core wake-ups or cache traffic. SHMFIFO_PURE=1 measures
the pure-Python path (2.8 us; 0.40 / 0.32 us per item).
"""

import os
import statistics
import sys
import time

import shmfifo

PAIRS, REPEATS, BATCH, BATCHES = 50_000, 15, 64, 500


def main():
    name = f"bench.hotpath.{os.getpid()}"
    item = b"x" * 64
    with shmfifo.serve(name, capacity=1024, item_size=64), shmfifo.attach(name) as q:
        pairs = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            for _ in range(PAIRS):
                q.put(item)
                q.get()
            pairs.append((time.perf_counter() - started) / PAIRS * 1e6)
        items = [item] * BATCH
        puts, gets = [], []
        for _ in range(REPEATS):
            put_s = get_s = 0.0
            for _ in range(BATCHES):
                a = time.perf_counter()
                q.put_many(items)
                b = time.perf_counter()
                q.get_many(BATCH)
                put_s += b - a
                get_s += time.perf_counter() - b
            puts.append(put_s / (BATCHES * BATCH) * 1e9)
            gets.append(get_s / (BATCHES * BATCH) * 1e9)
    print(f"put+get pair, 64 B bytes, one mutex:   {statistics.median(pairs):.2f} us "
          f"(median of {REPEATS} x {PAIRS:,})")
    print(f"put_many / get_many, batches of {BATCH}:    {statistics.median(puts):.0f} / "
          f"{statistics.median(gets):.0f} ns per item (median of {REPEATS} x {BATCHES:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
