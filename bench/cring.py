"""Build and run bench/cring.c, the C three-semaphore ring, as a peer of the Python adapters.

The C program forks its own producers and consumers (the workers are C, so it cannot share the
Python harness), but it follows the same protocol and writes the same words files, so its runs
go through the same delivery check and the same timing rule (release to last item received).
It is compiled at bench time with the system ``cc``; without a compiler its rows are skipped
with a note rather than failing the suite.
"""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np

from . import delivery, ipc_names
from .workloads import RunFailed, checked_rate

__all__ = ["build", "CRing"]

SOURCE = Path(__file__).with_name("cring.c")


def build(out_dir):
    """Compile cring into out_dir; return (path or None, note for the report)."""
    cc = shutil.which("cc")
    if cc is None:
        return None, "no C compiler (`cc`) found: C ring rows skipped"
    binary = Path(out_dir) / "cring"
    command = [cc, "-O2", "-Wall", "-o", str(binary), str(SOURCE), "-pthread", "-lrt"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return None, f"`{' '.join(command)}` failed: C ring rows skipped\n{result.stderr}"
    return binary, f"compiled with `{' '.join(command)}`"


class CRing:
    """One locking mode of the C ring; runs one workload per call."""

    def __init__(self, binary, split_locks):
        self.binary = binary
        self.mode = "split" if split_locks else "mutex"
        self.label = "C ring split" if split_locks else "C ring"
        self.capacity_note = ""

    def _run(self, args, workdir, timeout):
        workdir = Path(workdir)
        out = workdir / "cring"
        command = [str(self.binary), *map(str, args[:1]), self.mode, *map(str, args[1:]),
                   ipc_names.unique("c"), str(out)]
        # Its own session, so a timeout can end the C parent and all its forked workers at once.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RunFailed(f"C ring still running after {timeout:.0f} s; killed") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.returncode != 0:
            raise RunFailed(f"cring exited with {proc.returncode}: {stderr.strip()}")
        return json.loads(stdout)["t0_ns"], out

    def run(self, workload, per_producer, workdir, timeout):
        """One throughput run; items/s or RunFailed (single put/get only)."""
        if workload.batch != 1:
            raise ValueError("the C ring has no batched mode")
        try:
            t0, out = self._run(["throughput", workload.producers, workload.consumers,
                                 workload.capacity, workload.item_size, per_producer],
                                workdir, timeout)
            results = [delivery.read_words(f"{out}.c{index}.words")
                       for index in range(workload.consumers)]
            return checked_rate(t0, results, workload.producers, per_producer)
        finally:
            _clear(workdir)

    def run_latency(self, count, rate, item_size, capacity, workdir):
        """One paced 1P/1C run; latencies in ns or RunFailed."""
        try:
            t0, out = self._run(["latency", capacity, item_size, count, rate],
                                workdir, timeout=30 + 3 * count / rate)
            checked_rate(t0, [delivery.read_words(f"{out}.c0.words")], 1, count)
            return np.fromfile(f"{out}.lat", dtype="<i8")
        finally:
            _clear(workdir)


def _clear(workdir):
    for path in Path(workdir).iterdir():
        path.unlink()
