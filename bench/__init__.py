"""shmfifo's benchmark suite: the same workloads through shmfifo and its peers, in one run.

Run ``python -m bench`` from the repository root (``--quick`` for a smoke run under a minute).
It measures throughput (1..8 producer/consumer pairs, capacities 32 and 1024, single and batched
operations, 16 B to 4 KiB items), 1 MiB items in GB/s beside a memcpy (bench/large.py),
put-to-get latency at 1,000 items/s, and the shmfifo command line clients' rate accuracy, CPU
use, start-up time and memory. Every throughput and latency run is checked for exactly-once,
in-order delivery before its number is used. Results go to bench/results.md and
bench/results.png; raw data and build products to bench/out/.

Benchmarks are not tests: nothing here asserts; the report says PASS or MISS against targets.
"""

import os

# The suite forks its workers, so the parent must stay single-threaded; numpy's OpenBLAS would
# otherwise start a thread pool at import (the suite never uses BLAS).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
