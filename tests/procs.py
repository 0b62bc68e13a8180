"""Real processes for tests: spawn ``python -m shmfifo ...``, wait for a line by handshake
(never a fixed sleep), and reap everything, whatever happens.

Every wait takes a timeout; the default comes from ``WAIT``.
"""

import itertools
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

WAIT = 10.0          # default bound of any single wait in a test, seconds
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The daemon's readiness: its one "ready" line (stderr), as cli.py writes it.
READY = r"ready: FIFO"
# A test agent's (chaos_agents.py, mix_agents.py): the line it prints once attached.
AGENT_READY = "ready"
# Every log line, in the one format of log.py.
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
                  r"(?P<role>fifo|producer|consumer|bridge|demo)\[(?P<pid>\d+)\]: "
                  r"(?P<level>warning: |error: )?(?P<message>\S.*)$")


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
    printed = json.loads("\n".join(proc.out))
    assert printed["schema"] == 1 and len(printed["fifos"]) == 1, printed
    return printed["fifos"][0]


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

    def spawn(self, *args, env=None, stdin=None):
        """Start ``python -m shmfifo ARGS``."""
        proc = Proc([sys.executable, "-m", "shmfifo", *map(str, args)], env=env, stdin=stdin)
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
        proc.wait_for(READY)
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


# -- reading a FIFO's state and a consumer's output ---------------------------------------------

def records(proc):
    """The JSON records a ``consumer --json`` printed."""
    return [json.loads(line) for line in proc.out if line.startswith("{")]


def client_of(st, pid):
    """The client of ``pid`` in a status dict, or None."""
    found = [c for c in st["clients"] if c["pid"] == pid]
    return found[0] if found else None


def state_of(name, pid):
    """The state ``status`` shows for client ``pid`` of FIFO ``name`` (None if absent)."""
    c = client_of(status_of(name), pid)
    return c and c["state"]


def assert_consistent(st, expected_items=None):
    """The semaphores equal what the ring holds (fill = items, empty = the free slots, locks
    free) and no dead entry is left. ``st`` is a status dict or a FIFO name."""
    if isinstance(st, str):
        st = status_of(st)
    sems = st["semaphores"]
    assert sems["fill"] == st["items"], st
    assert sems["empty"] == max(0, st["capacity"] - st["items"]), st
    if st["in_flight_max"] < st["max_clients"] * st["batch_max"]:     # the limit can bind
        assert sems["loans"] == st["in_flight_max"] - st["in_flight"], st
    assert sems["mutex"] == 1, st
    if "take" in sems:
        assert sems["take"] == 1, st
    assert not [c for c in st["clients"] if c["state"].startswith("dead")], st
    if expected_items is not None:
        assert st["items"] == expected_items, st
    return st


def assert_slots_accounted(name):
    """Every slot of the pool is named exactly once by the ring, the free list or a client's
    record (taken or lent): none lost, none twice. Only while no operation runs."""
    from shmfifo import layout
    from shmfifo.segment import Segment
    from shmfifo.table import entries
    seg = Segment.open(name, require_daemon=False, writable=False, semaphores=False)
    try:
        w, g = seg.words, seg.geometry
        named = [w[g.ring_offset // 8 + p % g.nslots] for p in range(w[layout.H_TAIL],
                                                                      w[layout.H_HEAD])]
        named += [w[g.free_offset // 8 + p % g.nslots]
                  for p in range(w[layout.H_FREE_TAIL], w[layout.H_FREE_HEAD])]
        for entry in entries(seg):
            if entry.state != layout.FREE and entry.inflight in (layout.TAKEN, layout.WRITING):
                named += entry.record_slots()
        assert sorted(named) == list(range(g.nslots)), (len(named), g.nslots, sorted(named))
    finally:
        seg.close()


def settle(name):
    """Wait until a FIFO with no clients is consistent (a recovery may still be running)."""
    def ok():
        st = status_of(name)
        return (not st["clients"] and st["daemon"] == "running"
                and st["semaphores"]["fill"] == st["items"]
                and st["semaphores"]["mutex"] == 1 and st)
    return wait_until(ok, what=f"FIFO {name} to settle")


def drain(procs, name, expected):
    """Take exactly ``expected`` items with a fresh consumer; return its records."""
    if expected == 0:
        return []
    consumer = procs.spawn("consumer", "--fifo", name, "rate=max", f"count={expected}",
                           "--json")
    assert consumer.wait() == 0, consumer.err
    return records(consumer)


def stop(proc, timeout=WAIT):
    """SIGTERM ``proc`` and check it exits 0."""
    proc.signal(signal.SIGTERM)
    code = proc.wait(timeout)
    assert code == 0, proc.err[-5:]
    return code


def holder_code(name, hold_file):
    """A library client that takes one item, reports it, and holds it without acking."""
    return (
        "import shmfifo, sys, time\n"
        f"q = shmfifo.attach({name!r})\n"
        "item = q.get(timeout=10)\n"
        f"open({hold_file!r}, 'w').write(str(item))\n"
        "time.sleep(60)\n"
    )


# -- a real terminal ------------------------------------------------------------------------------

_sockets = itertools.count()
TMUX = shutil.which("tmux")


def __getattr__(name):
    # needs_tmux is made on first use, so that the test agents importing this module do not
    # pay for importing pytest.
    if name == "needs_tmux":
        import pytest
        return pytest.mark.skipif(TMUX is None, reason="tmux is not installed: the live view "
                                                       "is tested in a tmux pane")
    raise AttributeError(name)

ESC = "\x1b"


class Tmux:
    """A command in a detached 80x24 tmux pane on a private server (its own socket).

    After the command, the pane prints ``EXIT=<code>`` and whether the terminal is back in
    canonical mode with echo (``MODES=icanon echo``), then stays open to be read.
    """

    def __init__(self, command, width=80, height=24):
        self.socket = f"shmfifo-test-{os.getpid()}-{next(_sockets)}"
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("TMUX", None)
        shell = (f"{command}; echo EXIT=$?; "
                 f"echo MODES=$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon "
                 f"-e echo -e -echo | tr '\\n' ' '); sleep 60")
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t",
                   shell, env=env)

    def _tmux(self, *args, env=None):
        return subprocess.run([TMUX, "-u", "-L", self.socket, "-f", "/dev/null", *args],
                              env=env, capture_output=True, text=True, timeout=WAIT,
                              check=True).stdout

    def screen(self):
        return self._tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, check, timeout=WAIT, what=""):
        """Poll the screen until ``check(screen)`` is true; return the screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what or check} within "
                                     f"{timeout} s; it shows:\n{screen}")
            time.sleep(0.1)

    def keys(self, *keys):
        self._tmux("send-keys", "-t", "t", *keys)

    def close(self):
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=WAIT)


def shmfifo_command(*args):
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "shmfifo", *map(str, args)))
