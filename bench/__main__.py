"""Run the benchmark suite and write bench/results.md and bench/results.png.

    $ .venv/bin/python -m bench --quick
    throughput
      1P/1C cap 32 64 B single           shmfifo              412,345 items/s (1.2 s)
      ...
    Throughput, items/s (ratio to mp.Queue in the same workload; ...)
    workload                     shmfifo     shm split  mp.Queue ...
    1P/1C cap 32 64 B single     412k 2.6x   ...

Progress goes to stderr, the final table to stdout. ``--quick`` is a smoke run (under a minute,
one repeat, fewer workloads and shorter windows); the default takes about eleven minutes on
2 cores. Its "large" section is ``python -m bench.large`` with the defaults (1 MiB items, GB/s).
Only a default run (no ``--quick``, no ``--only``) writes bench/results.md and
bench/results.png; other runs write them to bench/out/. Raw results: bench/out/results.json.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from . import cli_checks, cring, ipc_names, large, report, suite, workloads
from .workloads import log

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
SECTIONS = ("throughput", "large", "latency", "cli")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewer workloads, shorter runs (under a minute)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per cell, the median is reported (default 5; 1 with --quick)")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only these sections (repeatable); the others stay empty")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sections = set(args.only or SECTIONS)
    started = time.monotonic()
    OUT.mkdir(exist_ok=True)
    workdir = OUT / f"work-{os.getpid()}"
    workdir.mkdir()
    target_s = 0.15 if args.quick else 0.8

    binary, build_note = cring.build(OUT)
    log(f"C ring: {build_note}")
    impls = suite.implementations(binary)
    results = {
        "meta": _meta(args, target_s),
        "impls": [impl.label for impl in impls],
        "notes": [f"C ring: {build_note}"] if binary is None else [],
        "throughput": [], "latency": {}, "cli": {}, "leftovers": [],
    }
    try:
        if "throughput" in sections:
            log("throughput")
            results["throughput"] = suite.run_throughput(
                impls, workloads.throughput_workloads(args.quick), args.repeat, target_s,
                workdir)
        if "large" in sections:
            log("large items")
            results["large"] = large.run(large.DEFAULT_SIZE, large.CAPACITY, args.repeat,
                                         0.1 if args.quick else large.TARGET_S,
                                         workdir)
        if "latency" in sections:
            log("latency")
            count = 300 if args.quick else 3000
            results["latency"] = suite.run_latency(impls, count, workdir)
        if "cli" in sections:
            log("shmfifo command line clients")
            results["cli"] = cli_checks.run_cli_checks(args.quick, workdir)
    finally:
        results["leftovers"] = ipc_names.sweep()
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()

    results["meta"]["runtime_s"] = time.monotonic() - started
    results["meta"]["loadavg_end"] = os.getloadavg()
    # Only a complete default run replaces the committed results; a smoke or partial run
    # writes next to the raw data instead.
    final = BENCH if not (args.quick or args.only) else OUT
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(report.text_report(results))
    (final / "results.md").write_text(report.markdown_report(results))
    report.chart(results, final / "results.png")
    log(f"wrote {final / 'results.md'}, {final / 'results.png'} and {OUT / 'results.json'} "
        f"in {results['meta']['runtime_s']:.0f} s")
    return 1 if results["leftovers"] else 0


def _meta(args, target_s):
    command = ".venv/bin/python -m bench" + "".join(
        f" {shlex.quote(a)}" for a in sys.argv[1:])
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "repeat": args.repeat,
        "quick": args.quick,
        "target_s": target_s,
        "command": command,
        # Other work on the machine skews every number; the report shows how busy it was.
        "loadavg_start": os.getloadavg(),
    }


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    sys.exit(main())
