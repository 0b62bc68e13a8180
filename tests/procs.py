"""Real processes for tests: spawn ``python -m shmfifo ...``, wait for a line by handshake
(never a fixed sleep), and reap everything, whatever happens.

Every wait takes a timeout; the default comes from ``WAIT``.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

WAIT = 10.0          # default bound of any single wait in a test, seconds
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(predicate, what="condition", timeout=WAIT, interval=0.02):
    """Poll ``predicate`` (a read of shared state) until it returns something true; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


# The last log line of a stopped producer or consumer.
SUMMARY = re.compile(r"stopped \((?P<reason>[^)]*)\) after (?P<n>\d+) items in "
                     r"(?P<secs>[\d.]+) s \((?P<rate>[\d.]+)/s")


def summary(proc):
    """The numbers of a stopped producer's or consumer's summary line (a regex match)."""
    for line in reversed(proc.err):
        match = SUMMARY.search(line)
        if match:
            return match
    raise AssertionError(f"no summary in {proc.err[-5:]}")


def status_json(procs, name):
    """``shmfifo status NAME --json``, run as a user runs it."""
    proc = procs.spawn("status", name, "--json")
    assert proc.wait() == 0, proc.err
    return json.loads("\n".join(proc.out))


def status_of(name):
    """A FIFO's status as ``shmfifo status NAME --json`` prints it, read in this process."""
    from shmfifo import status
    return status.status_dict(status.snapshot(name))


class Proc:
    """A child process whose stdout and stderr lines are collected as they arrive."""

    def __init__(self, argv, env=None, stdin=None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.pop("SHMFIFO_CRASH_AT", None)
        full_env.update(env or {})
        self.argv = argv
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                      env=full_env, text=True, errors="backslashreplace")
        self.pid = self.popen.pid
        self.out, self.err = [], []
        self._lines = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(s, dest, tag), daemon=True)
                         for s, dest, tag in ((self.popen.stdout, self.out, "out"),
                                              (self.popen.stderr, self.err, "err"))]
        for t in self._readers:
            t.start()

    def _read(self, stream, dest, tag):
        for line in stream:
            line = line.rstrip("\n")
            dest.append(line)
            self._lines.put((tag, line))
        self._lines.put((tag, None))

    def wait_for(self, pattern, timeout=WAIT, stream=None):
        """Wait until a line matching ``pattern`` appears (in stdout or stderr); return it."""
        regex = re.compile(pattern)
        for line in list(self.err if stream != "out" else []) + \
                list(self.out if stream != "err" else []):
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout
        closed = set()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(closed) == 2:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s from {self.argv}\n"
                    f"stdout: {self.out[-10:]}\nstderr: {self.err[-10:]}")
            try:
                tag, line = self._lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            if line is None:
                closed.add(tag)
                continue
            if (stream is None or stream == tag) and regex.search(line):
                return line

    def wait(self, timeout=WAIT):
        """Wait for exit; return the exit code (AssertionError on timeout)."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv} still running after {timeout} s\n"
                                 f"stderr: {self.err[-10:]}") from None
        for t in self._readers:
            t.join(timeout)
        return code

    def signal(self, signum=signal.SIGTERM):
        try:
            self.popen.send_signal(signum)
        except ProcessLookupError:
            pass

    def alive(self):
        return self.popen.poll() is None

    def kill(self):
        if self.alive():
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pass


class Procs:
    """The processes of one test; ``reap()`` kills whatever is still running."""

    def __init__(self):
        self.all = []

    def spawn(self, *args, env=None):
        """Start ``python -m shmfifo ARGS``."""
        proc = Proc([sys.executable, "-m", "shmfifo", *map(str, args)], env=env)
        self.all.append(proc)
        return proc

    def python(self, code, *args, env=None):
        """Start ``python -c CODE ARGS``."""
        proc = Proc([sys.executable, "-c", code, *map(str, args)], env=env)
        self.all.append(proc)
        return proc

    def daemon(self, name, *options, env=None):
        """Start a FIFO daemon and wait until it is ready."""
        proc = self.spawn("fifo", "--name", name, *options, env=env)
        proc.wait_for(r"ready: FIFO")
        return proc

    def reap(self):
        left = []
        for proc in self.all:
            if proc.alive():
                left.append(proc.argv)
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            proc.kill()
        return left


def log_lines(path):
    """The complete lines of a log that a killed process may have left half-written."""
    try:
        with open(path) as f:
            return [line.rstrip("\n") for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


ATTACH_PATIENCE = 20.0     # a daemon may be down for a restart: keep trying this long


def attach_patiently(name):
    """shmfifo.attach, retried while the daemon is being restarted (for chaos agents)."""
    import shmfifo
    deadline = time.monotonic() + ATTACH_PATIENCE
    while True:
        try:
            return shmfifo.attach(name)
        except (shmfifo.DaemonNotRunning, shmfifo.CorruptSegment):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
