"""One log format for every process, on stderr, like dmesg; -v adds each put and take, -q
keeps only warnings and errors."""

import re
import time

import pytest

from procs import LINE, WAIT
from shmfifo import status
from shmfifo.errors import FifoNotFound

# 2026-11-26 23:58:25.123 producer[4711]: attached to 'lab' (item='a', rate=5/s)

def messages(proc, role):
    """The messages of every stderr line of ``proc``, each checked against the format."""
    found = []
    for line in proc.err:
        m = LINE.match(line)
        assert m, f"not in the log format: {line!r}"
        assert m["role"] == role and int(m["pid"]) == proc.pid, line
        found.append((m["level"] or "").rstrip(": ") + "|" + m["message"])
    return found


def test_every_role_logs_in_one_format(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=100", "count=3")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=3")
    assert producer.wait() == 0 and consumer.wait() == 0
    daemon.signal()
    assert daemon.wait() == 0

    fifo = messages(daemon, "fifo")
    assert fifo[0].startswith(f"|ready: FIFO {fifo_name!r}, 32 slots"), fifo
    assert fifo[-1] == "|stopped; no item discarded", fifo
    made = messages(producer, "producer")
    assert made[0] == f"|attached to {fifo_name!r} (item='x', rate=100/s)"
    assert re.match(r"\|stopped \(count 3 reached\) after 3 items in [\d.]+ s", made[-1])
    assert len(made) == 2, "without -v, no line per put"
    taken = messages(consumer, "consumer")
    assert taken[0] == f"|attached to {fifo_name!r} (rate=max)"
    assert re.match(r"\|stopped \(count 3 reached\) after 3 items", taken[-1])
    assert len(taken) == 2, "without -v, no line per take"


def test_verbose_logs_each_put_and_take(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "-v")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=100", "count=3",
                           "-v")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=3",
                           "--verbose")
    assert producer.wait() == 0 and consumer.wait() == 0
    made = messages(producer, "producer")
    assert made[1:4] == ["|put 'x' (#1)", "|put 'x' (#2)", "|put 'x' (#3)"], made
    taken = messages(consumer, "consumer")
    assert taken[1:4] == [f"|took 'x' (producer {producer.pid}, seq {n}, #{n})"
                          for n in (1, 2, 3)], taken
    daemon.signal()
    assert daemon.wait() == 0
    messages(daemon, "fifo")


def wait_until_running(name):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            if status.snapshot(name).daemon == "running":
                return
        except FifoNotFound:
            pass
        time.sleep(0.02)
    pytest.fail(f"the daemon of {name!r} did not start within {WAIT} s")


def test_quiet_keeps_only_warnings_and_errors(procs, fifo_name):
    # -q silences the "ready" line, so readiness is read from the shared memory instead.
    daemon = procs.spawn("fifo", "--name", fifo_name, "-q")
    wait_until_running(fifo_name)
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=100", "count=3",
                           "-q")
    assert producer.wait() == 0
    assert producer.err == []
    # A warning still shows under -q: the daemon dies and the clients notice (within about
    # a second, after an operation: a client blocked on an empty FIFO does not look).
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=20", "-q")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "-q")
    consumer.wait_for(rf"item='x' producer={producer.pid} ", stream="out")
    daemon.popen.kill()
    daemon.wait()
    warned = {proc: proc.wait_for(r"warning: the daemon of FIFO .* is gone", stream="err")
              for proc in (producer, consumer)}
    for proc, role in ((producer, "producer"), (consumer, "consumer")):
        line = warned[proc]
        proc.signal()
        assert proc.wait() == 0
        assert proc.err == [line], "nothing but the warning under -q"
        assert messages(proc, role)[0].startswith("warning|the daemon of FIFO")
    assert daemon.err == []
    cleaner = procs.spawn("clean", fifo_name)        # the killed daemon left its names
    assert cleaner.wait() == 0, cleaner.err
