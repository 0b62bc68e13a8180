"""rmmod: SIGTERM and SIGINT to each role, while it is blocked, and the daemon's graceful stop.

A stopped client exits 0 promptly, prints its summary, frees its client entry and holds no
token (empty + fill == capacity, mutex == 1). A stopped daemon tells producers to stop, lets
consumers drain (bounded by --drain-timeout), reports what it discarded and removes every name.
"""

import json
import os
import re
import signal
import time
from collections import defaultdict

import pytest

from procs import (WAIT, assert_consistent, state_of, status_json, status_of as snap, stop,
                   summary, wait_until)
from shmfifo import names

PROMPT = 2.0          # "exits promptly": seconds from the signal to the exit
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def signal_and_time_exit(proc, signum):
    """Send ``signum``; return (exit code, seconds until the process exited)."""
    started = time.monotonic()
    proc.signal(signum)
    code = proc.wait(WAIT)
    return code, time.monotonic() - started


def assert_names_gone(name):
    left = [e for e in os.listdir(names.SHM_DIR)
            if e == names.PREFIX + name or e.startswith("sem." + names.PREFIX + name + ".")]
    assert left == []


# -- clients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_producer_blocked_on_full_stops_cleanly(procs, fifo_name, signum):
    daemon = procs.daemon(fifo_name, "--size", "4")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=a", "rate=max")
    producer.wait_for("attached to")
    wait_until(lambda: state_of(fifo_name, producer.pid) == "blocked on full",
               "the producer blocks on the full FIFO")
    code, took = signal_and_time_exit(producer, signum)
    assert code == 0, producer.err
    assert took < PROMPT
    s = summary(producer)
    assert (s["reason"], s["n"]) == (signum.name, "4")
    assert not any("Traceback" in line for line in producer.err)
    st = status_json(procs, fifo_name)
    assert st["clients"] == []
    assert st["items"] == 4
    assert_consistent(st)
    # The FIFO still works: a consumer takes what the producer left.
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=4")
    assert consumer.wait() == 0
    assert len(consumer.out) == 4
    stop(daemon)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_consumer_blocked_on_empty_stops_cleanly(procs, fifo_name, signum):
    daemon = procs.daemon(fifo_name, "--size", "4")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max")
    consumer.wait_for("attached to")
    wait_until(lambda: state_of(fifo_name, consumer.pid) == "blocked on empty",
               "the consumer blocks on the empty FIFO")
    code, took = signal_and_time_exit(consumer, signum)
    assert code == 0, consumer.err
    assert took < PROMPT
    s = summary(consumer)
    assert (s["reason"], s["n"]) == (signum.name, "0")
    assert consumer.out == []
    st = status_json(procs, fifo_name)
    assert st["clients"] == []
    assert st["items"] == 0
    assert_consistent(st)
    # The stopped get took no fill token: an item put now is there for the next consumer.
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=kept", "count=1")
    assert producer.wait() == 0
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=1")
    assert consumer.wait() == 0
    assert consumer.out == [f"item='kept' producer={producer.pid} seq=1"]
    stop(daemon)


@pytest.mark.parametrize("role", ["producer", "consumer"])
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_slow_client_between_two_items_stops_promptly(procs, fifo_name, role, signum):
    """rate=0.01: the next item is 100 s away; the stop must not wait for it."""
    daemon = procs.daemon(fifo_name, "--size", "4")
    feeder = None
    if role == "consumer":
        feeder = procs.spawn("producer", "--fifo", fifo_name, "item=f", "count=2")
        assert feeder.wait() == 0
    args = ["item=slow"] if role == "producer" else []
    proc = procs.spawn(role, "--fifo", fifo_name, *args, "rate=0.01")
    wait_until(lambda: (snap(fifo_name)["puts"] == 1 if role == "producer"
                        else snap(fifo_name)["items"] == 1), "the first item is done")
    code, took = signal_and_time_exit(proc, signum)
    assert code == 0, proc.err
    assert took < PROMPT
    assert summary(proc)["n"] == "1"
    st = status_json(procs, fifo_name)
    assert (st["clients"], st["items"]) == ([], 1)
    assert_consistent(st)
    stop(daemon)


def test_stopping_one_client_leaves_the_others_running(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4")
    stays = procs.spawn("producer", "--fifo", fifo_name, "item=stays", "rate=max")
    goes = procs.spawn("producer", "--fifo", fifo_name, "item=goes", "rate=max")
    for p in (stays, goes):
        wait_until(lambda p=p: state_of(fifo_name, p.pid) == "blocked on full", "both block")
    stop(goes)
    st = snap(fifo_name)
    assert [(c["pid"], c["state"]) for c in st["clients"]] == [(stays.pid, "blocked on full")]
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=10", "--json")
    assert consumer.wait() == 0
    got = [json.loads(line) for line in consumer.out]
    assert sum(r["item"] == "stays" for r in got) >= 6     # stays keeps putting
    stop(stays)
    stop(daemon)


# -- the daemon --------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_daemon_without_clients_stops_and_removes_every_name(procs, fifo_name, signum):
    daemon = procs.daemon(fifo_name, "--size", "4", "--split-locks")
    assert os.path.exists(names.shm_path(fifo_name))
    assert os.path.exists(names.sem_path(fifo_name, "take"))
    code, took = signal_and_time_exit(daemon, signum)
    assert code == 0, daemon.err
    assert took < PROMPT
    assert "stopped; no item discarded" in daemon.err[-1]
    assert_names_gone(fifo_name)
    late = procs.spawn("producer", "--fifo", fifo_name, "item=late")
    assert late.wait() == 3


def test_graceful_daemon_stop_lets_consumers_drain_everything(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "8")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "--json")
    producers = [procs.spawn("producer", "--fifo", fifo_name, "item=a", "rate=300"),
                 procs.spawn("producer", "--fifo", fifo_name, "item=b", "rate=200")]
    for p in producers:
        p.wait_for("attached to")
    wait_until(lambda: snap(fifo_name)["taken"] >= 50, "items flow")

    code, took = signal_and_time_exit(daemon, signal.SIGTERM)
    assert code == 0, daemon.err
    assert took < PROMPT
    for p in producers:
        assert p.wait() == 0, p.err
        assert summary(p)["reason"] == "the FIFO is shutting down"
    assert consumer.wait() == 0, consumer.err
    assert summary(consumer)["reason"] == "the FIFO is shutting down"
    assert any("stopped; no item discarded" in line for line in daemon.err)
    assert_names_gone(fifo_name)

    put = {p.pid: int(summary(p)["n"]) for p in producers}
    seen = defaultdict(list)
    for line in consumer.out:
        r = json.loads(line)
        seen[r["producer"]].append(r["seq"])
    assert {pid: seqs for pid, seqs in seen.items()} == \
        {pid: list(range(1, n + 1)) for pid, n in put.items()}


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_graceful_daemon_stop_discards_what_a_slow_consumer_cannot_drain(procs, fifo_name,
                                                                         signum):
    daemon = procs.daemon(fifo_name, "--size", "8", "--drain-timeout", "0.5")
    producers = [procs.spawn("producer", "--fifo", fifo_name, f"item={i}", "rate=max")
                 for i in ("x", "y")]
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=4", "--json")
    consumer.wait_for("attached")
    wait_until(lambda: all(state_of(fifo_name, p.pid) == "blocked on full" for p in producers),
               "the producers block on the full FIFO")

    code, took = signal_and_time_exit(daemon, signum)
    assert code == 0, daemon.err
    assert took < 0.5 + PROMPT
    for p in producers:
        assert p.wait() == 0, p.err
    assert consumer.wait() == 0, consumer.err
    assert_names_gone(fifo_name)

    reported = [re.search(r"discarded (\d+) item\(s\)", line) for line in daemon.err]
    discarded = [int(m.group(1)) for m in reported if m]
    assert len(discarded) == 1 and discarded[0] > 0, daemon.err
    put = sum(int(summary(p)["n"]) for p in producers)
    taken = len(consumer.out)
    assert int(summary(consumer)["n"]) == taken
    assert put == taken + discarded[0]            # nothing lost, nothing invented


def test_daemon_stop_with_keep_leaves_the_items_for_the_next_daemon(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4", "--keep")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=k", "rate=max", "count=3")
    assert producer.wait() == 0
    stop(daemon)
    assert any("kept FIFO" in line and "3 item(s)" in line for line in daemon.err)
    assert os.path.exists(names.shm_path(fifo_name))
    refused = procs.spawn("consumer", "--fifo", fifo_name)
    assert refused.wait() == 3
    assert "not running" in refused.err[-1]

    again = procs.daemon(fifo_name)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=3", "--json")
    assert consumer.wait() == 0
    assert [json.loads(line)["seq"] for line in consumer.out] == [1, 2, 3]
    stop(again)
    assert_names_gone(fifo_name)
