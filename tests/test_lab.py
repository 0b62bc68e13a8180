"""The lab's scenario and the multi-process behaviour of the FIFO, with real processes.

A daemon, producers and consumers are each ``python -m shmfifo ...``; the test reads the FIFO's
state from its shared memory (``shmfifo status``) to know when something has happened, and
checks delivery from the consumers' ``--json`` lines and the producers' summaries.
"""

import json
from collections import defaultdict

import pytest

from procs import (assert_consistent, client_of as client, records, state_of, status_json,
                   status_of as snap, stop, summary, wait_until)



def assert_exactly_once_in_order(consumers, put_counts):
    """Every producer's items 1..N arrived exactly once across the consumers, and each
    consumer saw each producer's items in increasing seq order."""
    seen = defaultdict(list)
    for consumer in consumers:
        per_producer = defaultdict(list)
        for r in records(consumer):
            per_producer[r["producer"]].append(r["seq"])
            seen[r["producer"]].append(r["seq"])
        for pid, seqs in per_producer.items():
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), \
                f"consumer {consumer.pid}: items of {pid} out of order"
    assert set(seen) == set(put_counts), (set(seen), put_counts)
    for pid, n in put_counts.items():
        assert sorted(seen[pid]) == list(range(1, n + 1)), \
            f"producer {pid}: {len(seen[pid])} items delivered, {n} put"


# -- the lab -----------------------------------------------------------------------------------

def test_lab_scenario_two_producers_two_consumers(procs, fifo_name):
    """insmod fifo.ko; two producers (a at 50/s, b at 30/s); two consumers; ~3 s; rmmod."""
    daemon = procs.daemon(fifo_name)
    consumers = [procs.spawn("consumer", "--fifo", fifo_name, "rate=120", "--json"),
                 procs.spawn("consumer", "--fifo", fifo_name, "--rate", "90", "--json")]
    for c in consumers:
        c.wait_for("attached to")
    producers = {"a": procs.spawn("producer", "--fifo", fifo_name, "item=a", "rate=50"),
                 "b": procs.spawn("producer", "--fifo", fifo_name, "--item", "b", "--rate",
                                  "30")}
    for p in producers.values():
        p.wait_for("attached to")
    st = snap(fifo_name)
    roles = sorted((c["role"], c["item"], c["rate"]) for c in st["clients"])
    assert roles == [("consumer", "", 90.0), ("consumer", "", 120.0), ("producer", "a", 50.0),
                     ("producer", "b", 30.0)]

    # Run about 3 s: until producer a has put 150 items.
    wait_until(lambda: client(snap(fifo_name), producers["a"].pid)["puts"] >= 150,
               "producer a puts 150 items")
    for p in producers.values():
        stop(p)
    puts = {}
    for item, rate in (("a", 50), ("b", 30)):
        s = summary(producers[item])
        assert s["reason"] == "SIGTERM"
        achieved = int(s["n"]) / float(s["secs"])
        assert abs(achieved - rate) <= 0.15 * rate, (item, achieved, s.group(0))
        puts[producers[item].pid] = int(s["n"])
    assert 2.5 * 50 <= puts[producers["a"].pid]

    # Consumers drain what is left, then stop.
    wait_until(lambda: snap(fifo_name)["items"] == 0, "the consumers drain the FIFO")
    for c in consumers:
        stop(c)
    assert_exactly_once_in_order(consumers, puts)
    for c in consumers:
        got = records(c)
        assert len(got) > 0, "both consumers take items"
        assert int(summary(c)["n"]) == len(got)
        assert all(r["item"] == "a" for r in got if r["producer"] == producers["a"].pid)
        assert all(r["item"] == "b" for r in got if r["producer"] == producers["b"].pid)
        assert all(r["type"] == "str" and r["latency_us"] >= 0 for r in got)

    st = status_json(procs, fifo_name)
    assert st["clients"] == []
    assert (st["puts"], st["taken"], st["items"]) == (sum(puts.values()),) * 2 + (0,)
    assert_consistent(st)
    stop(daemon)
    assert any("stopped; no item discarded" in line for line in daemon.err)


@pytest.mark.parametrize("locks", [[], ["--split-locks"]], ids=["single-mutex", "split-locks"])
def test_many_items_through_a_small_fifo_arrive_exactly_once_in_order(procs, fifo_name, locks):
    daemon = procs.daemon(fifo_name, "--size", "8", *locks)
    consumers = [procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "--json")
                 for _ in range(2)]
    for c in consumers:
        c.wait_for("attached to")
    producers = [procs.spawn("producer", "--fifo", fifo_name, f"item={item}", "rate=max",
                             "count=1500") for item in ("p", "q")]
    for p in producers:
        assert p.wait(30) == 0, p.err
        assert summary(p)["reason"] == "count 1500 reached"
    wait_until(lambda: snap(fifo_name)["items"] == 0, "the consumers drain the FIFO")
    for c in consumers:
        stop(c)
    assert_exactly_once_in_order(consumers, {p.pid: 1500 for p in producers})
    st = status_json(procs, fifo_name)
    assert (st["puts"], st["taken"], st["clients"]) == (3000, 3000, [])
    assert_consistent(st)
    if locks:
        assert st["semaphores"]["take"] == 1
    stop(daemon)


# -- blocking ----------------------------------------------------------------------------------

def test_a_producer_blocks_on_a_full_queue(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=a", "rate=max")
    wait_until(lambda: state_of(fifo_name, producer.pid) == "blocked on full",
               "the producer blocks on the full FIFO")
    st = status_json(procs, fifo_name)
    assert (st["items"], st["capacity"]) == (4, 4)
    assert st["semaphores"] == {"empty": 0, "fill": 4, "mutex": 1, "loans": st["in_flight_max"]}
    [c] = st["clients"]
    assert (c["role"], c["pid"], c["item"], c["rate"], c["puts"], c["state"]) == \
        ("producer", producer.pid, "a", None, 4, "blocked on full")
    text = procs.spawn("status", fifo_name)
    assert text.wait() == 0
    assert "4/4" in "\n".join(text.out)
    assert any(str(producer.pid) in line and "blocked on full" in line for line in text.out)

    # A consumer that takes two frees two slots; the producer fills them and blocks again.
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=2", "--json")
    assert consumer.wait() == 0
    assert [r["seq"] for r in records(consumer)] == [1, 2]
    wait_until(lambda: client(snap(fifo_name), producer.pid)["puts"] == 6,
               "the producer refills the FIFO")
    wait_until(lambda: state_of(fifo_name, producer.pid) == "blocked on full", "blocked again")
    st = status_json(procs, fifo_name)
    assert st["items"] == 4
    assert_consistent(st)
    stop(producer)
    # Its summary counts the two items of the batch that the stop cut short.
    assert summary(producer)["n"] == "6"
    stop(daemon)
    assert any("discarded 4 item(s)" in line for line in daemon.err)


def test_a_consumer_blocks_on_an_empty_queue(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "--json")
    wait_until(lambda: state_of(fifo_name, consumer.pid) == "blocked on empty",
               "the consumer blocks on the empty FIFO")
    st = status_json(procs, fifo_name)
    assert st["items"] == 0
    assert st["semaphores"] == {"empty": 4, "fill": 0, "mutex": 1, "loans": st["in_flight_max"]}
    [c] = st["clients"]
    assert (c["role"], c["pid"], c["gets"], c["state"]) == \
        ("consumer", consumer.pid, 0, "blocked on empty")
    assert consumer.out == []

    producer = procs.spawn("producer", "--fifo", fifo_name, "item=one", "count=1")
    assert producer.wait() == 0
    line = consumer.wait_for(r'"item": "one"', stream="out")
    assert json.loads(line)["producer"] == producer.pid
    wait_until(lambda: state_of(fifo_name, consumer.pid) == "blocked on empty",
               "the consumer blocks again")
    st = status_json(procs, fifo_name)
    assert (st["items"], client(st, consumer.pid)["gets"]) == (0, 1)
    assert_consistent(st)
    stop(consumer)
    stop(daemon)


def test_the_semaphores_count_the_items_present(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "6")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=max", "count=4")
    assert producer.wait() == 0
    st = status_json(procs, fifo_name)
    assert (st["items"], st["semaphores"]["empty"], st["semaphores"]["fill"]) == (4, 2, 4)
    assert_consistent(st)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=3")
    assert consumer.wait() == 0
    assert consumer.out == [f"item='x' producer={producer.pid} seq={n}" for n in (1, 2, 3)]
    st = status_json(procs, fifo_name)
    assert (st["items"], st["semaphores"]["empty"], st["semaphores"]["fill"]) == (1, 5, 1)
    assert (st["puts"], st["taken"], st["clients"]) == (4, 3, [])
    assert_consistent(st)
    stop(daemon)
    assert any("discarded 1 item(s)" in line for line in daemon.err)


def test_a_blocked_producer_resumes_when_a_consumer_takes(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=z", "rate=max", "count=25")
    wait_until(lambda: state_of(fifo_name, producer.pid) == "blocked on full",
               "the producer blocks")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=25", "--json")
    assert producer.wait() == 0
    assert consumer.wait() == 0
    assert [r["seq"] for r in records(consumer)] == list(range(1, 26))
    assert summary(producer)["n"] == "25"
    stop(daemon)


def test_consumer_prints_items_escaped_on_one_line(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=tab\there\x1b[2J",
                           "count=1")
    assert producer.wait() == 0
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=1")
    assert consumer.wait() == 0
    assert consumer.out == [f"item='tab\\there\\x1b[2J' producer={producer.pid} seq=1"]
    stop(daemon)


# -- several FIFOs -----------------------------------------------------------------------------

def test_several_fifos_side_by_side_keep_their_items_apart(procs, fifo_names):
    fifos = {tag: fifo_names(tag) for tag in ("red", "green", "blue")}
    daemons = {tag: procs.daemon(name, "--size", str(size))
               for (tag, name), size in zip(fifos.items(), (2, 4, 8))}
    consumers = {tag: procs.spawn("consumer", "--fifo", name, "rate=max", "count=30", "--json")
                 for tag, name in fifos.items()}
    producers = {tag: procs.spawn("producer", "--fifo", name, f"item={tag}", "rate=max",
                                  "count=30") for tag, name in fifos.items()}
    for tag in fifos:
        assert producers[tag].wait() == 0, producers[tag].err
        assert consumers[tag].wait() == 0, consumers[tag].err
        got = records(consumers[tag])
        assert [(r["item"], r["producer"]) for r in got] == [(tag, producers[tag].pid)] * 30
        assert [r["seq"] for r in got] == list(range(1, 31))
    listing = procs.spawn("status", "--json")
    assert listing.wait() == 0
    listed = {st["name"]: st for st in json.loads("\n".join(listing.out))["fifos"]}
    for (tag, name), size in zip(fifos.items(), (2, 4, 8)):
        st = listed[name]
        assert (st["capacity"], st["puts"], st["taken"], st["clients"]) == (size, 30, 30, [])
        assert st["daemon_pid"] == daemons[tag].pid
    for d in daemons.values():
        stop(d)


def test_a_full_fifo_does_not_block_its_neighbour(procs, fifo_names):
    full, free = fifo_names("full"), fifo_names("free")
    daemons = [procs.daemon(full, "--size", "2"), procs.daemon(free, "--size", "2")]
    blocked = procs.spawn("producer", "--fifo", full, "item=stuck", "rate=max")
    wait_until(lambda: state_of(full, blocked.pid) == "blocked on full", "full blocks")
    consumer = procs.spawn("consumer", "--fifo", free, "rate=max", "count=10", "--json")
    producer = procs.spawn("producer", "--fifo", free, "item=flows", "rate=max", "count=10")
    assert producer.wait() == 0
    assert consumer.wait() == 0
    assert {r["item"] for r in records(consumer)} == {"flows"}
    assert snap(full)["items"] == 2
    stop(blocked)
    for d in daemons:
        stop(d)
