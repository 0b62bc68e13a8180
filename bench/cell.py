"""One throughput cell of the benchmark, run a few times: for trying a change quickly.

    $ .venv/bin/python -m bench.cell --pairs 8 --capacity 1024 --runs 5
    shmfifo 8P/8C cap 1024 64 B single: 1,209k 1,207k 1,349k 1,275k 1,183k items/s

Runs shmfifo only (the peers are in the full `python -m bench`), with the same harness and the
same delivery check as the full run.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from . import peers, workloads


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.cell", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1, help="producers = consumers (default 1)")
    parser.add_argument("--capacity", type=int, default=32)
    parser.add_argument("--item-size", type=int, default=64)
    parser.add_argument("--split", action="store_true", help="split put/take locks")
    parser.add_argument("--batch", type=int, default=1,
                        help="put_many/get_many of up to this many items (default 1: put/get)")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--raw", action="store_true", help="print only the items/s, one per run")
    args = parser.parse_args(argv)
    workload = workloads.Workload(args.pairs, args.pairs, args.capacity, args.item_size,
                                  args.batch)
    work = Path(tempfile.mkdtemp(prefix="bench-cell-"))
    rates = []
    for _ in range(args.runs):
        peer = peers.Shmfifo(args.capacity, args.item_size, args.pairs, args.pairs,
                             split_locks=args.split)
        rates.append(workloads.run_peer(peer, workload, args.items, work, 60))
    if args.raw:
        print(" ".join(f"{r:.0f}" for r in rates))
        return 0
    print(f"shmfifo{' split' if args.split else ''} {workload.label}: "
          + " ".join(f"{r / 1e3:,.0f}k" for r in rates) + " items/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
