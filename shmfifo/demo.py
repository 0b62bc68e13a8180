"""``shmfifo demo``: the whole lab in one command, on defaults.

    $ shmfifo demo
    2026-11-27 00:28:52.925 demo[17306]: FIFO 'demo.17306' ready (daemon 17308)
    2026-11-27 00:28:53.044 demo[17306]: started producer 17310 item=a rate=5/s
    2026-11-27 00:28:53.044 demo[17306]: started producer 17311 item=b rate=3/s
    2026-11-27 00:28:53.045 demo[17306]: started consumer 17312 rate=10/s
    ... the live view (shmfifo status --watch) for about 10 s, its last frame kept ...
    2026-11-27 00:29:03.050 demo[17306]: stopping producers, consumer, daemon

    demo.17306 after 10.3 s:
      PRODUCER  ITEM    RATE  PRODUCED  CONSUMED
      17310     'a'      5/s        48        48
      17311     'b'      3/s        27        27
      total                         75        75   lost 0, duplicates 0
    every process stopped cleanly; nothing left in /dev/shm

Every part is a real process (``python -m shmfifo ...``): a daemon with 16
slots, producers ``item=a rate=5`` and ``item=b rate=3``, and a consumer ``rate=10 --json``.
At 40 % of the run the demo steers, as ``shmfifo set`` would: the consumer is slowed to 4/s,
so the FIFO fills up and the producers block on full. The children's output and logs go to
files in a temporary directory, so they cannot garble the view; the view shows the last
items taken and the last log lines from those files.

The stop is orderly, each step bounded (SIGKILL as a last resort): SIGTERM to the producers;
the consumer set to ``max`` drains what is queued; SIGTERM to the consumer, then to the
daemon, which removes every name. Ctrl-C (or SIGTERM) at any point stops the demo the same
way. The summary counts, per producer, the items it reported on stopping and the items the
consumer printed, by their sequence numbers: lost and duplicated items would show there.
"""

import collections
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from . import control, log as logs, names, status
from .errors import ShmfifoError
from .segment import unlink_names
from .watch import watch

__all__ = ["run_demo", "PRODUCERS", "CONSUMER_RATE", "SLOW_RATE", "SIZE"]

SIZE = 16                                   # small, so that the FIFO visibly fills up
PRODUCERS = (("a", 5.0), ("b", 3.0))        # (item, rate/s)
CONSUMER_RATE = 10.0                        # faster than both producers together ...
SLOW_RATE = 4.0                             # ... until the demo steers it below them
STEER_AT = 0.4                              # fraction of the run

# Bounds of every wait, in seconds.
START_TIMEOUT = 10.0                        # a fresh interpreter imports psutil, posix_ipc
STOP_TIMEOUT = 5.0                          # per process, after SIGTERM, before SIGKILL
DRAIN_TIMEOUT = 3.0                         # the consumer at max rate empties 16 slots fast
DAEMON_STOP_TIMEOUT = 10.0                  # the daemon waits up to 3 s for clients to leave
KILL_TIMEOUT = 2.0

_STOPPED = re.compile(r"stopped \(([^)]*)\) after (\d+) items")
_READY = re.compile(r"ready: FIFO|attached to")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Child:
    """One process of the demo, its stdout and stderr in files of the demo's directory."""

    def __init__(self, tag, argv, directory, preexec):
        self.tag = tag
        self.out_path = os.path.join(directory, tag + ".out")
        self.log_path = os.path.join(directory, tag + ".log")
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as err:
            # Its own session: a Ctrl-C at the terminal reaches the demo only, which then stops
            # the children in order instead of all of them at once.
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "shmfifo", *argv], stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, env=env, start_new_session=True, preexec_fn=preexec)
        self.pid = self.popen.pid
        self.code = None
        self.terminated = False

    def poll(self):
        if self.code is None:
            self.code = self.popen.poll()
        return self.code

    def log_text(self):
        with open(self.log_path, errors="backslashreplace") as f:
            return f.read()

    def ready(self):
        """Whether it said it was ready: a SIGTERM before that (a Ctrl-C during the start)
        kills it by the default action, which is no fault of its."""
        return bool(_READY.search(self.log_text()))

    def terminate(self):
        """Send SIGTERM, once: a second one could arrive while the child's interpreter shuts
        down, after Python has put the default handlers back, and kill it."""
        if not self.terminated and self.poll() is None:
            self.terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def stop(self, log, timeout=STOP_TIMEOUT):
        """SIGTERM, wait up to ``timeout``; SIGKILL as the last resort. Returns the code."""
        self.terminate()
        if self.poll() is None:
            try:
                self.code = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s %d did not stop within %.0f s of SIGTERM; killing it",
                            self.tag, self.pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                try:
                    self.code = self.popen.wait(KILL_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log.error("%s %d survived SIGKILL", self.tag, self.pid)
        return self.code


def _parent_death_signal():
    """A preexec function that makes a child get SIGTERM if the demo dies (Linux), so a
    SIGKILLed demo leaves no producer running for ever; None where unsupported."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (ImportError, OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec():
        prctl(pr_set_pdeathsig, signal.SIGTERM)
    return preexec


class _Tail:
    """The complete lines appended to a file since the last call."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "backslashreplace") for line in complete]


class _Feed:
    """What the view shows under the clients, read from the children's files."""

    def __init__(self, consumer, children, started, seconds, steer):
        self.consumer = consumer
        self.taken = _Tail(consumer.out_path)
        self.logs = [_Tail(child.log_path) for child in children]
        self.last_items = collections.deque(maxlen=20)
        self.last_logs = collections.deque(maxlen=2)
        self.started = started
        self.seconds = seconds
        self.steer = steer

    def __call__(self):
        for line in self.taken.lines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.last_items.append(repr(json.loads(line)["item"]))
        fresh = [line for tail in self.logs for line in tail.lines()]
        for line in sorted(fresh):             # each line starts with its timestamp
            self.last_logs.append(line[11:] if line[:4].isdigit() else line)
        left = max(0, round(self.started + self.seconds - time.monotonic()))
        lines = [f"demo: {left} s left, then everything stops cleanly",
                 self.steer(),
                 "last taken: " + (" ".join(list(self.last_items)[-16:]) or "-")]
        lines += ["log " + line for line in self.last_logs]
        return lines


class _Steer:
    """At STEER_AT of the run, slow the consumer below the producers, as `shmfifo set` does."""

    def __init__(self, name, consumer, at):
        self.name = name
        self.consumer = consumer
        self.at = at
        self.command = f"shmfifo set {name} {consumer.pid} rate={SLOW_RATE:g}"
        self.due = time.monotonic() + at
        self.done = None
        self.timer = threading.Timer(at, self._run)
        self.timer.daemon = True

    def _run(self):
        try:
            control.set_rate(self.name, self.consumer.pid, SLOW_RATE)
            self.done = "done"
        except (ShmfifoError, OSError) as error:
            self.done = f"failed: {error}"

    def __call__(self):
        if self.done is None:
            left = max(1, math.ceil(self.due - time.monotonic()))
            return f"in {left} s: {self.command}  (slows the consumer)"
        if self.done == "done":
            return f"steered: {self.command}  (the FIFO fills up)"
        return f"steering {self.done}"


def run_demo(seconds=10.0, *, verbosity=logs.NORMAL, out=None):
    """Run the demo for about ``seconds``; return the exit code (0 if all went cleanly)."""
    out = out or sys.stdout
    log = logs.setup("demo", verbosity)
    name = f"demo.{os.getpid()}"
    directory = tempfile.mkdtemp(prefix="shmfifo-demo.")
    preexec = _parent_death_signal()
    children = {}
    started = time.monotonic()
    interrupted = False
    previous = {signum: signal.getsignal(signum)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    ok = False
    try:
        try:
            _start(name, directory, preexec, children, log)
            steer = _Steer(name, children["consumer"], seconds * STEER_AT)
            feed = _Feed(children["consumer"], list(children.values()), time.monotonic(),
                         seconds, steer)
            steer.timer.start()
            try:
                watch(name, duration=seconds, footer=feed, out=out)
            finally:
                steer.timer.cancel()
                steer.timer.join(KILL_TIMEOUT)
            ok = True
        except KeyboardInterrupt:
            interrupted = True
            log.info("interrupted; stopping everything")
        except BrokenPipeError:
            # The reader of the view went away (``| head``): stop as cleanly, say nothing more.
            interrupted = True
            out = open(os.devnull, "w")
        except (_StartFailed, ShmfifoError, OSError) as error:
            log.error("%s", error)
        finally:
            # Nothing interrupts the stop itself: it is bounded, and leaving processes or
            # names behind would be worse than a second Ctrl-C being ignored.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            clean = _stop_all(name, children, log)
        elapsed = time.monotonic() - started
        summary_ok = _summary(name, children, elapsed, interrupted, clean, out)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # Stopped early (Ctrl-C, q, SIGTERM, a closed pipe) is a success if the stop was clean.
    success = (ok or interrupted) and clean and summary_ok
    if success:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        log.warning("the logs of every process are kept in %s", directory)
    return 0 if success else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class _StartFailed(Exception):
    pass


def _start(name, directory, preexec, children, log):
    daemon = children["daemon"] = _Child(
        "daemon", ["fifo", "--name", name, "--size", str(SIZE)], directory, preexec)
    _wait(lambda: _READY.search(daemon.log_text()), [daemon], "the daemon to be ready")
    log.info("FIFO %r ready (daemon %d)", name, daemon.pid)
    for item, rate in PRODUCERS:
        children[f"producer.{item}"] = _Child(
            f"producer.{item}", ["producer", "--fifo", name, f"item={item}", f"rate={rate:g}"],
            directory, preexec)
    children["consumer"] = _Child(
        "consumer", ["consumer", "--fifo", name, f"rate={CONSUMER_RATE:g}", "--json"],
        directory, preexec)

    def attached():
        pids = {c.pid for c in status.snapshot(name).clients}
        return all(child.pid in pids for child in children.values() if child is not daemon)
    _wait(attached, list(children.values()), "the producers and the consumer to attach")
    for item, rate in PRODUCERS:
        log.info("started producer %d item=%s rate=%g/s", children["producer." + item].pid,
                 item, rate)
    log.info("started consumer %d rate=%g/s", children["consumer"].pid, CONSUMER_RATE)


def _wait(done, watched, what, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        for child in watched:
            if child.poll() is not None:
                raise _StartFailed(f"{child.tag} {child.pid} exited with {child.code} while "
                                   f"waiting for {what}: {child.log_text().strip()[-500:]}")
        with contextlib.suppress(ShmfifoError):
            if done():
                return
        if time.monotonic() > deadline:
            raise _StartFailed(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _stop_all(name, children, log):
    """Producers, then the consumer once it drained, then the daemon; True if clean."""
    if not children:
        return True
    log.info("stopping producers, consumer, daemon")
    producers = [c for tag, c in children.items() if tag.startswith("producer.")]
    for child in producers:
        child.terminate()
    for child in producers:
        child.stop(log)
    consumer = children.get("consumer")
    if consumer is not None and consumer.poll() is None:
        with contextlib.suppress(ShmfifoError, OSError):
            control.set_rate(name, consumer.pid, None)
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while status.snapshot(name).items and time.monotonic() < deadline \
                    and consumer.poll() is None:
                time.sleep(0.02)
        consumer.stop(log)
    daemon = children.get("daemon")
    if daemon is not None:
        daemon.stop(log, DAEMON_STOP_TIMEOUT)
    left = [path for path in [names.shm_path(name)] +
            [names.sem_path(name, which) for which in names.SEMAPHORES]
            if os.path.exists(path)]
    if left:
        log.warning("removing what the daemon left: %s", ", ".join(left))
        unlink_names(name)
    failed = [f"{c.tag} {c.pid} ({_code_text(c.code)})" for c in children.values()
              if c.code != 0 and (c.code != -signal.SIGTERM or c.ready())]
    if failed:
        log.warning("not every process exited 0: %s", ", ".join(failed))
    return not (left and daemon is not None and daemon.ready()) and not failed


def _code_text(code):
    if code is None:
        return "still running"
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"


def _summary(name, children, elapsed, interrupted, clean, out):
    """Print items produced and consumed per producer; True if every item is accounted for."""
    consumed = collections.defaultdict(list)
    consumer = children.get("consumer")
    if consumer is not None:
        with open(consumer.out_path, errors="backslashreplace") as f:
            for line in f:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(line)
                    consumed[record["producer"]].append(record["seq"])
    rows = [("PRODUCER", "ITEM", "RATE", "PRODUCED", "CONSUMED")]
    total_made = total_taken = lost = duplicates = 0
    known = True
    for item, rate in PRODUCERS:
        child = children.get(f"producer.{item}")
        if child is None:
            continue
        match = _STOPPED.search(child.log_text())
        made = int(match.group(2)) if match else None if child.ready() else 0
        seqs = consumed.pop(child.pid, [])
        if made is None:
            known = False
        else:
            total_made += made
            lost += len(set(range(1, made + 1)) - set(seqs))
        duplicates += len(seqs) - len(set(seqs))
        total_taken += len(seqs)
        rows.append((str(child.pid), repr(item), f"{rate:g}/s",
                     "?" if made is None else str(made), str(len(seqs))))
    strays = sum(len(seqs) for seqs in consumed.values())
    widths = (10, 6, 6, 10, 10)
    lines = ["", f"{name} after {elapsed:.1f} s{' (interrupted)' if interrupted else ''}:"]
    for row in rows:
        lines.append("  " + "".join(v.ljust(w) if i < 2 else v.rjust(w)
                                    for i, (v, w) in enumerate(zip(row, widths))).rstrip())
    lines.append("  " + "total".ljust(sum(widths[:3])) + str(total_made if known else "?")
                 .rjust(widths[3]) + str(total_taken).rjust(widths[4]) +
                 f"   lost {lost if known else '?'}, duplicates {duplicates}" +
                 (f", from elsewhere {strays}" if strays else ""))
    lines.append("every process stopped cleanly; nothing left in /dev/shm" if clean else
                 "the stop was not clean: see the warnings above")
    out.write("\n".join(lines) + "\n")
    out.flush()
    return known and not lost and not duplicates and not strays
