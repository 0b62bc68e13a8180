"""Measurements of the shmfifo command line clients as a user runs them.

* rate accuracy: ``python -m shmfifo producer --fifo F item=a rate=R --count N`` against a
  daemon, drained by a library consumer (``get_message``) in a forked process that keeps the
  put times of the first and the last item. With N = R * window + 1 items, the k-th due at
  start + k/R, the achieved rate is (N - 1) / (put_last - put_first), so the result does not
  depend on start-up and its resolution is the producer's timer jitter, not one item in
  R * window.
* producer CPU: CPU time (schedstat, ns) of the producer process over a window that starts
  after its start line, so interpreter start-up is not counted.
* idle consumer CPU: the CLI consumer on an empty FIFO next to a multiprocessing.Queue consumer
  blocked in get(), measured over the same window.
* start-up: from just before launching ``python -m shmfifo producer ... --count 1`` to the
  moment a consumer that is already blocked in get() receives the item.
* memory: RSS (and USS) of an attached, idle CLI producer and consumer, and of a plain python
  process that has imported multiprocessing.

The daemons are library daemons in forked processes (peers.Shmfifo), so the geometry is exactly
what each check needs. Every child is terminated and reaped in a ``finally``.
"""

import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .peers import CTX, Shmfifo
from .workloads import log

__all__ = ["run_cli_checks"]

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
START_LINE_TIMEOUT = 20.0
RATE_CAPACITY = 1024


def run_cli_checks(quick, workdir):
    """Run every check; a check that breaks is reported with its reason, the others still run."""
    workdir = Path(workdir)
    results = {}
    checks = [
        ("rate", lambda: _rate_accuracy(quick, workdir)),
        ("idle_cpu", lambda: _idle_cpu(quick, workdir)),
        ("startup", lambda: _startup(quick, workdir)),
        ("memory", lambda: _memory(workdir)),
    ]
    for key, check in checks:
        try:
            results[key] = check()
        except Exception as error:  # report and carry on: one broken check must not hide others
            results[key] = {"failure": f"{type(error).__name__}: {error}"}
            log(f"  {key}: FAILED: {error}")
    return results


# --- helpers -------------------------------------------------------------------------------------

class Child:
    """A command-line child whose output goes to files, so it never blocks on a full pipe and
    the parent needs no reader thread (the suite forks, and forking with threads is unsafe)."""

    def __init__(self, args, workdir, tag):
        self.out_path = Path(workdir) / f"{tag}.out"
        self.err_path = Path(workdir) / f"{tag}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([PYTHON, *args], cwd=REPO, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)

    def text(self):
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def wait_for(self, marker, timeout=START_LINE_TIMEOUT):
        """Wait until `marker` appears in stdout or stderr (the start line)."""
        deadline = time.monotonic() + timeout
        while marker not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.describe()} exited with {self.proc.returncode} "
                                   f"before printing {marker!r}: {self.text().strip()[-300:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.describe()} printed no {marker!r} within {timeout} s")
            time.sleep(0.005)

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL if it does not exit; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def describe(self):
        return " ".join(self.proc.args[1:])


def cpu_seconds(pid):
    """CPU time of every thread of `pid`, in seconds.

    From /proc/PID/task/*/schedstat (nanoseconds) where the kernel has it: psutil's cpu_times
    counts clock ticks (10 ms), too coarse to tell 0.1 % from 0.5 % of a core over 5 s.
    """
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


def _shmfifo(*args):
    return ["-m", "shmfifo", *args]


def _timestamp_consumer(name, expected, conn):
    """Forked: take `expected` items; send (first put_ns, last put_ns, count, bad items).

    The put times are the ones the library stamps into each slot at the put, so the consumer's
    own wake-up jitter does not enter the measured rate; a wrong item or a sequence gap counts
    as bad.
    """
    import shmfifo

    with shmfifo.attach(name) as fifo:
        conn.send("ready")
        first = last = None
        count = bad = 0
        while count < expected:
            message = fifo.get_message()
            if first is None:
                first = message
            last = message
            count += 1
            bad += message.item != "a" or message.seq != first.seq + count - 1
    conn.send((first.put_ns, last.put_ns, count, bad))


def _forked(target, *args):
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    child.close()
    return proc, parent


def _receive(conn, timeout, what):
    if not conn.poll(timeout):
        raise RuntimeError(f"no {what} within {timeout:.0f} s")
    return conn.recv()


def _reap(proc):
    if proc.is_alive():
        proc.kill()
    proc.join(timeout=5)


# --- the checks ---------------------------------------------------------------------------------

def _rate_accuracy(quick, workdir):
    targets = (10, 1_000, 10_000) if quick else (1, 10, 100, 1_000, 10_000, 100_000)
    window = 1.0 if quick else 5.0
    rows = []
    for rate in targets:
        expected = int(rate * window) + 1
        fifo = Shmfifo(RATE_CAPACITY, 64, 1, 1)
        consumer = producer = None
        try:
            fifo.create()
            consumer, conn = _forked(_timestamp_consumer, fifo.name, expected)
            _receive(conn, START_LINE_TIMEOUT, "ready from the timestamp consumer")
            producer = Child(_shmfifo("producer", "--fifo", fifo.name, "item=a", f"rate={rate}",
                                      "--count", str(expected)), workdir, f"producer{rate}")
            producer.wait_for("attached")
            # The CPU window skips the first tenth and stops before the last item is due.
            time.sleep(window * 0.1)
            cpu_0, wall_0 = producer.cpu_seconds(), time.monotonic()
            time.sleep(window * 0.8)
            cpu_1, wall_1 = producer.cpu_seconds(), time.monotonic()
            first, last, count, bad = _receive(conn, window + 30, "result from the consumer")
            code = producer.proc.wait(timeout=30)
            if code != 0 or count != expected or bad:
                raise RuntimeError(f"rate {rate}: producer exit {code}, {count}/{expected} items, "
                                   f"{bad} wrong: {producer.text().strip()[-300:]}")
            achieved = (count - 1) / ((last - first) / 1e9)
            row = {"target": rate, "items": count, "achieved": achieved,
                   "error_pct": (achieved / rate - 1) * 100,
                   "producer_cpu_pct": 100 * (cpu_1 - cpu_0) / (wall_1 - wall_0)}
            log(f"  rate {rate:>7}/s: achieved {achieved:12.3f}/s ({row['error_pct']:+.4f} %), "
                f"producer CPU {row['producer_cpu_pct']:.1f} %")
        except Exception as error:
            row = {"target": rate, "failure": f"{type(error).__name__}: {error}"}
            log(f"  rate {rate:>7}/s: FAILED: {error}")
        finally:
            if producer is not None:
                producer.stop()
            if consumer is not None:
                _reap(consumer)
            fifo.destroy()
        rows.append(row)
    return {"window_s": window, "rows": rows}


def _blocked_mp_consumer(queue, conn):
    conn.send("ready")
    queue.get()


def _idle_cpu(quick, workdir):
    window = 1.0 if quick else 5.0
    fifo = Shmfifo(32, 64, 1, 1)
    queue = CTX.Queue()
    cli = mp_consumer = None
    try:
        fifo.create()
        cli = Child(_shmfifo("consumer", "--fifo", fifo.name, "rate=max", "--json"),
                    workdir, "idle-consumer")
        mp_consumer, conn = _forked(_blocked_mp_consumer, queue)
        _receive(conn, START_LINE_TIMEOUT, "ready from the mp.Queue consumer")
        cli.wait_for("attached")
        time.sleep(0.5)  # let both settle into their blocking waits
        cpu_0 = cli.cpu_seconds(), cpu_seconds(mp_consumer.pid)
        wall_0 = time.monotonic()
        time.sleep(window)
        cpu_1 = cli.cpu_seconds(), cpu_seconds(mp_consumer.pid)
        wall = time.monotonic() - wall_0
        result = {
            "window_s": window,
            "shmfifo_cli_pct": 100 * (cpu_1[0] - cpu_0[0]) / wall,
            "mp_queue_pct": 100 * (cpu_1[1] - cpu_0[1]) / wall,
        }
        code = cli.stop()
        result["cli_exit_on_sigterm"] = code
        log(f"  idle consumer CPU: shmfifo CLI {result['shmfifo_cli_pct']:.3f} %, "
            f"mp.Queue {result['mp_queue_pct']:.3f} % (SIGTERM exit {code})")
        return result
    finally:
        if cli is not None:
            cli.stop()
        if mp_consumer is not None:
            _reap(mp_consumer)
        queue.close()
        queue.join_thread()
        fifo.destroy()


def _arrival_consumer(name, count, conn):
    """Forked: blocked in get(); report the arrival time of each item."""
    import shmfifo

    with shmfifo.attach(name) as fifo:
        conn.send("ready")
        for _ in range(count):
            fifo.get()
            conn.send(time.monotonic_ns())


def _startup(quick, workdir):
    tries = 3 if quick else 7
    fifo = Shmfifo(32, 64, 1, 1)
    consumer = None
    samples = []
    try:
        fifo.create()
        consumer, conn = _forked(_arrival_consumer, fifo.name, tries)
        _receive(conn, START_LINE_TIMEOUT, "ready from the consumer")
        for attempt in range(tries):
            launched = time.monotonic_ns()
            producer = Child(_shmfifo("producer", "--fifo", fifo.name, "item=a", "rate=max",
                                      "--count", "1"), workdir, f"startup{attempt}")
            try:
                arrived = _receive(conn, START_LINE_TIMEOUT, "first put")
                samples.append((arrived - launched) / 1e6)
                if producer.proc.wait(timeout=10) != 0:
                    raise RuntimeError(f"producer exited with {producer.proc.returncode}: "
                                       f"{producer.text().strip()[-300:]}")
            finally:
                producer.stop()
    finally:
        if consumer is not None:
            _reap(consumer)
        fifo.destroy()
    baseline = []
    for _ in range(tries):
        launched = time.monotonic_ns()
        subprocess.run([PYTHON, "-c", "pass"], check=True)
        baseline.append((time.monotonic_ns() - launched) / 1e6)
    result = {"samples_ms": samples, "median_ms": statistics.median(samples),
              "python_c_pass_ms": statistics.median(baseline)}
    log(f"  start-up to first put: median {result['median_ms']:.1f} ms of {samples} "
        f"(python -c pass: {result['python_c_pass_ms']:.1f} ms)")
    return result


def _memory(workdir):
    fifo = Shmfifo(32, 64, 1, 1)
    children = []
    try:
        fifo.create()
        # rate=0.01: one put at start, then asleep for 100 s: attached and idle.
        producer = Child(_shmfifo("producer", "--fifo", fifo.name, "item=a", "rate=0.01"),
                         workdir, "mem-producer")
        children.append(producer)
        consumer = Child(_shmfifo("consumer", "--fifo", fifo.name, "rate=max", "--json"),
                         workdir, "mem-consumer")
        children.append(consumer)
        reference = Child(["-c", "import multiprocessing, time; print('ready', flush=True); "
                                 "time.sleep(120)"], workdir, "mem-reference")
        children.append(reference)
        for child in children:
            child.wait_for("ready" if child is reference else "attached")
        time.sleep(0.5)
        result = {}
        for key, child in (("shmfifo_producer", producer), ("shmfifo_consumer", consumer),
                           ("python_import_multiprocessing", reference)):
            info = child.ps.memory_full_info()
            result[key] = {"rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20}
        log("  memory: " + ", ".join(f"{k} RSS {v['rss_mb']:.1f} MB (USS {v['uss_mb']:.1f})"
                                     for k, v in result.items()))
        return result
    finally:
        for child in children:
            child.stop()
        fifo.destroy()
