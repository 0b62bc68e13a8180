"""``shmfifo set NAME PID rate=R``: a writable parameter of a running producer or consumer."""

import time

from shmfifo import status

MEASURE = 1.5      # seconds over which an achieved rate is measured


def client(name, pid):
    return next(c for c in status.snapshot(name).clients if c.pid == pid)


def achieved(name, pid, seconds=MEASURE):
    """The client's achieved rate, from its counter in shared memory, over ``seconds``."""
    t0, n0 = time.monotonic(), client(name, pid).count
    time.sleep(seconds)
    t1, n1 = time.monotonic(), client(name, pid).count
    return (n1 - n0) / (t1 - t0)


def test_set_changes_a_running_producers_rate(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=20")
    producer.wait_for("attached to")
    consumer.wait_for("attached to")
    before = achieved(fifo_name, producer.pid)
    assert 12 <= before <= 28, f"{before:.1f}/s at rate=20"

    setter = procs.spawn("set", fifo_name, producer.pid, "rate=80")
    assert setter.wait() == 0
    assert setter.out == [f"rate of pid {producer.pid} on FIFO {fifo_name!r} set to 80/s"]
    assert client(fifo_name, producer.pid).rate == 80.0
    producer.wait_for(r"rate changed to 80/s")
    after = achieved(fifo_name, producer.pid)
    assert 55 <= after <= 100, f"{after:.1f}/s at rate=80"

    # The human status shows the new value too.
    shown = procs.spawn("status", fifo_name)
    assert shown.wait() == 0
    row = next(line.split() for line in shown.out if str(producer.pid) in line)
    assert row[3] == "80/s", row

    for p in (producer, consumer, daemon):
        p.signal()
        assert p.wait() == 0


def test_set_refuses_bad_values_and_unknown_pids_and_changes_nothing(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=20")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max")
    producer.wait_for("attached to")
    consumer.wait_for("attached to")
    gone = procs.spawn("producer", "--fifo", fifo_name, "item=y", "rate=50", "count=1")
    assert gone.wait() == 0          # attached once, now detached: its pid is no client
    pid = producer.pid
    cases = {
        "rate=abc": ([pid, "rate=abc"], r"rate: 'abc' is not allowed"),
        "rate=0": ([pid, "rate=0"], r"rate: '0' is not allowed"),
        "rate=-5": ([pid, "rate=-5"], r"rate: '-5' is not allowed"),
        "rate=nan": ([pid, "rate=nan"], r"rate: 'nan' is not allowed"),
        "rate=": ([pid, "rate="], r"rate: '' is not allowed"),
        "count": ([pid, "count=3"], r"unknown parameter 'count'"),
        "no =": ([pid, "rate"], r"is not KEY=VALUE"),
        "pid abc": (["abc", "rate=5"], r"pid: 'abc' is not allowed"),
        "pid 0": ([0, "rate=5"], r"pid: '0' is not allowed"),
        "daemon pid": ([daemon.pid, "rate=5"], rf"pid: {daemon.pid} is not allowed; it is "
                                               rf"not a producer or consumer"),
        "detached pid": ([gone.pid, "rate=5"], rf"pid: {gone.pid} is not allowed"),
        "second param bad": ([pid, "rate=5", "rate=abc"], r"rate: 'abc' is not allowed"),
    }
    setters = {case: procs.spawn("set", fifo_name, *args) for case, (args, _) in cases.items()}
    for case, setter in setters.items():
        assert setter.wait() == 2, (case, setter.err)
        assert setter.out == [], case
        assert len(setter.err) == 1 and setter.err[0].startswith("shmfifo set: error: "), \
            (case, setter.err)
        setter.wait_for(cases[case][1], timeout=0.1, stream="err")
    missing = procs.spawn("set", fifo_name + ".none", pid, "rate=5")
    assert missing.wait() == 3
    assert "no FIFO named" in missing.err[0]

    assert client(fifo_name, pid).rate == 20.0
    assert "rate changed" not in "\n".join(producer.err)
    for p in (producer, consumer, daemon):
        p.signal()
        assert p.wait() == 0


def test_set_a_consumer_to_max_and_back(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=50")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=2")
    consumer.wait_for("attached to")
    for value, stored, text in (("max", None, "max"), ("0.5", 0.5, "0.5/s")):
        setter = procs.spawn("set", fifo_name, consumer.pid, f"rate={value}")
        assert setter.wait() == 0, setter.err
        assert setter.out[0].endswith(f"set to {text}")
        assert client(fifo_name, consumer.pid).rate == stored
        consumer.wait_for(rf"rate changed to {text}$")
    for p in (producer, consumer, daemon):
        p.signal()
        assert p.wait() == 0
