"""This checkout against an earlier revision, 64 B cells, interleaved in one run.

    $ .venv/bin/python -m bench.regress --runs 7
    64 B items/s, median of 7 interleaved runs (min-max); baseline 688bc37
    workload                       688bc37                  this checkout            ratio
    1P/1C cap 32 64 B single       1,012k (901k-1,104k)     1,034k (950k-1,120k)     1.02
    ...

A regression check needs both sides measured under the same conditions: on a shared machine
the speed of the same code moves by tens of percent from one hour to the next, so a figure
from an older bench/results.md is no baseline. This builds the baseline's package (its
``shmfifo/`` and C extension, from ``git archive``) in a temporary directory and runs each
cell on the two packages in turn, alternating which goes first, with the same harness
(``bench.cell``: every item checked delivered exactly once and in order). The default baseline
is the last revision before items stayed in their slots (the slot pool, issue 13).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import workloads

REPO = Path(__file__).resolve().parent.parent
BASELINE = "688bc37"     # the last commit before the slot pool: items were copied per take


def build(revision, into):
    """The baseline's shmfifo package, with its C extension built in place, under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "shmfifo", "setup.py"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"bench.regress: git archive {revision}: "
                 f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    built = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=into,
                           capture_output=True, text=True, check=False)
    if built.returncode != 0 or not list((into / "shmfifo").glob("_fastpath*.so")):
        sys.exit(f"bench.regress: building {revision}'s C extension failed:\n"
                 + built.stderr[-2000:])


def measure(package_dir, cell, items):
    """items/s of one run of `cell` with the shmfifo package found in `package_dir`."""
    pairs, capacity, batch = cell
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SHMFIFO_PURE", None)        # both sides on their C path
    # python -m puts the working directory first on sys.path: its shmfifo/ is the one used
    out = subprocess.run(
        [sys.executable, "-m", "bench.cell", "--raw", "--runs", "1", "--pairs", str(pairs),
         "--capacity", str(capacity), "--batch", str(batch), "--items", str(items // pairs)],
        cwd=package_dir, env=env, capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{cell} in {package_dir}: {tail}")
    return float(out.stdout.split()[0])


def cells(quick):
    pairs = (1, 8) if quick else (1, 2, 4, 8)
    return [(n, capacity, batch)
            for capacity in (32, 1024)
            for n in pairs
            for batch in (1, workloads.batch_for(capacity))]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.regress",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BASELINE,
                        help=f"git revision to compare with (default {BASELINE})")
    parser.add_argument("--runs", type=int, default=5, help="runs per cell and side (default 5)")
    parser.add_argument("--items", type=int, default=400_000,
                        help="items per run, over all producers (default 400,000)")
    parser.add_argument("--quick", action="store_true", help="1 and 8 pairs only")
    parser.add_argument("--cell", action="append", metavar="PAIRS,CAPACITY,BATCH",
                        help="only this cell (repeatable), e.g. 1,1024,1")
    args = parser.parse_args(argv)
    chosen = cells(args.quick)
    if args.cell:
        try:
            chosen = [tuple(int(n) for n in cell.split(",")) for cell in args.cell]
        except ValueError:
            parser.error("--cell takes PAIRS,CAPACITY,BATCH, e.g. 1,1024,1")
        if any(len(cell) != 3 or min(cell) < 1 for cell in chosen):
            parser.error("--cell takes three whole numbers of 1 or more: PAIRS,CAPACITY,BATCH")
    with tempfile.TemporaryDirectory(prefix="bench-regress-") as tmp:
        base_dir = Path(tmp)
        build(args.baseline, base_dir)
        sides = [(args.baseline, base_dir), ("this checkout", REPO)]
        rates = {(cell, label): [] for cell in chosen for label, _ in sides}
        for run in range(args.runs):
            for cell in chosen:
                for label, where in (sides if run % 2 == 0 else sides[::-1]):
                    rates[cell, label].append(measure(where, cell, args.items))
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
    print(f"64 B items/s, median of {args.runs} interleaved runs (min-max); "
          f"baseline {args.baseline}")
    print(f"{'workload':30} {args.baseline:26} {'this checkout':26} ratio")
    for cell in chosen:
        pairs, capacity, batch = cell
        label = workloads.Workload(pairs, pairs, capacity, 64, batch).label
        medians = []
        columns = []
        for side, _ in sides:
            got = rates[cell, side]
            medians.append(statistics.median(got))
            columns.append(f"{medians[-1] / 1e3:,.0f}k ({min(got) / 1e3:,.0f}k-"
                           f"{max(got) / 1e3:,.0f}k)")
        print(f"{label:30} {columns[0]:26} {columns[1]:26} {medians[1] / medians[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
