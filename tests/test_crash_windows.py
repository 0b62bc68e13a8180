"""SIGKILL at every step of put, get and ack, and of the daemon's recovery.

A client is made to kill itself at exactly one named step (SHMFIFO_CRASH_AT, see
shmfifo/crashpoints.py) while survivors run. Afterwards: the survivors kept going, no item
whose put returned is lost, an item is delivered twice only when its consumer died after
printing it and before acknowledging it, the semaphores equal what the ring holds, and the
dead client's entry is free again.
"""

import os
import signal
import time

import pytest

from procs import (assert_consistent, drain, holder_code, records, settle, status_of as status,
                   summary, wait_until)

PUT_STEPS = {
    # step: is the dying put's item committed (present in the ring) afterwards?
    "put.empty": False, "put.lock": False, "put.written": False, "put.popped": False,
    "put.commit": True, "put.unlock": True, "put.done": True,
}
GET_STEPS = {
    # step: (was the item printed by the victim, is it delivered twice). The consumer
    # acknowledges each item after printing it (ack.*), and takes the next one (get.*).
    "get.fill": (False, False), "get.lock": (False, False), "get.prepared": (False, False),
    "get.copied": (False, False), "get.commit": (False, False), "get.taken": (False, False),
    "get.unlock": (False, False), "get.done": (False, False),
    "consumer.handled": (True, True),
    # Its slot pushed back onto the free list, but the record still names it: re-queued.
    "ack.lock": (True, True), "ack.pushed": (True, True),
    "ack.cleared": (True, False), "ack.unlock": (True, False), "ack.done": (True, False),
    "ack": (True, False),
}
RECOVERY_STEPS = ["recovery.epoch", "recovery.quiescent", "recovery.journal",
                  "recovery.copied", "recovery.tail", "recovery.record", "recovery.reset",
                  "recovery.freed"]


# The victim runs the C fast path (shmfifo/_fastpath.c) or the pure-Python path: both have
# the same steps and crash points.
IMPLS = {"c": {}, "python": {"SHMFIFO_PURE": "1"}}


def through_a_crash(procs, name, split, consumer_rate, victim_args, victim_env):
    """Run a survivor producer and consumer, let a victim kill itself at its crash point, and
    check the survivors move again after the recovery; then stop the producer, let the
    consumer drain, stop it. Returns (daemon, producer, consumer, victim, items put by the
    producer, seconds from the death to the survivors moving again)."""
    opts = ["--size", "8"] + (["--split-locks"] if split else [])
    daemon = procs.daemon(name, *opts)
    producer = procs.spawn("producer", "--fifo", name, "item=s", "rate=200")
    consumer = procs.spawn("consumer", "--fifo", name, f"rate={consumer_rate}", "--json")
    producer.wait_for("attached")
    consumer.wait_for("attached")
    victim = procs.spawn(*victim_args, env=victim_env)
    assert victim.wait() == -signal.SIGKILL
    died = time.monotonic()
    # A victim that died holding nothing (after its last step, or after an ack) is only
    # detached; one that held a token, a lock or an item is recovered.
    daemon.wait_for(rf"recovery \d+ done|pid {victim.pid} exited holding nothing")
    seen = len(records(consumer))
    wait_until(lambda: len(records(consumer)) >= seen + 20, what="survivors to keep going")
    resumed = time.monotonic() - died
    producer.signal()
    assert producer.wait() == 0
    put = int(summary(producer)["n"])
    wait_until(lambda: status(name)["items"] == 0, what="the consumer to drain")
    consumer.signal()
    assert consumer.wait() == 0
    return daemon, producer, consumer, victim, put, resumed


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("split", [False, True], ids=["mutex", "split"])
@pytest.mark.parametrize("step", list(PUT_STEPS))
def test_producer_killed_at_put_step(procs, fifo_name, step, split, impl):
    daemon, survivor, consumer, victim, put_by_survivor, resumed = through_a_crash(
        procs, fifo_name, split, "max",
        ("producer", "--fifo", fifo_name, "item=v", "rate=100", "count=10"),
        {"SHMFIFO_CRASH_AT": f"{step}:3", **IMPLS[impl]})
    got = records(consumer)
    victim_seqs = [r["seq"] for r in got if r["producer"] == victim.pid]
    survivor_seqs = [r["seq"] for r in got if r["producer"] == survivor.pid]
    committed = PUT_STEPS[step]
    assert victim_seqs == ([1, 2, 3] if committed else [1, 2]), (step, victim_seqs)
    assert survivor_seqs == list(range(1, put_by_survivor + 1))
    assert resumed < 5.0
    assert_consistent(fifo_name, expected_items=0)
    daemon.signal()
    assert daemon.wait() == 0


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("split", [False, True], ids=["mutex", "split"])
@pytest.mark.parametrize("step", list(GET_STEPS))
def test_consumer_killed_at_get_step(procs, fifo_name, step, split, impl):
    daemon, producer, survivor, victim, put, resumed = through_a_crash(
        procs, fifo_name, split, "100",
        ("consumer", "--fifo", fifo_name, "rate=100", "--json"),
        {"SHMFIFO_CRASH_AT": f"{step}:3", **IMPLS[impl]})
    assert resumed < 5.0
    by_victim = [r["seq"] for r in records(victim)]
    by_survivor = [r["seq"] for r in records(survivor)]
    printed, duplicated = GET_STEPS[step]
    # The victim printed 2 items, plus the third when it died after printing it.
    assert len(by_victim) == (3 if printed else 2), by_victim
    delivered = by_victim + by_survivor
    # Nothing lost: every item the producer put was delivered.
    assert set(delivered) == set(range(1, put + 1))
    duplicates = len(delivered) - len(set(delivered))
    # A duplicate only when the victim printed the item and died before its record said
    # acknowledged.
    assert duplicates == (1 if duplicated else 0), (step, duplicates)
    if duplicated:
        assert by_victim[-1] in by_survivor
    assert_consistent(fifo_name, expected_items=0)
    daemon.signal()
    assert daemon.wait() == 0


@pytest.mark.parametrize("step", RECOVERY_STEPS)
def test_daemon_killed_at_recovery_step(procs, fifo_name, step):
    """A consumer dies holding an item; the daemon dies at one step of the recovery; a new
    daemon adopts the FIFO and completes it without losing or duplicating the item."""
    daemon = procs.daemon(fifo_name, "--size", "8", env={"SHMFIFO_CRASH_AT": step})
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=max", "count=6")
    assert producer.wait() == 0
    victim = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "--json",
                         env={"SHMFIFO_CRASH_AT": "get.taken:3"})
    assert victim.wait() == -signal.SIGKILL
    assert daemon.wait() == -signal.SIGKILL        # died at its crash point
    restarted = procs.daemon(fifo_name)
    restarted.wait_for(r"recovery \d+ done")
    by_victim = [r["seq"] for r in records(victim)]
    assert by_victim == [1, 2]
    st = settle(fifo_name)
    assert st["items"] == 4
    assert_consistent(fifo_name, expected_items=4)
    rest = [r["seq"] for r in drain(procs, fifo_name, 4)]
    # item 3 was re-queued at the front, exactly once
    assert sorted(rest) == [3, 4, 5, 6]
    assert rest[0] == 3
    assert_consistent(fifo_name, expected_items=0)
    restarted.signal()
    assert restarted.wait() == 0


def test_two_clients_dying_together(procs, fifo_name, tmp_path):
    daemon = procs.daemon(fifo_name, "--size", "8")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=max", "count=6")
    assert producer.wait() == 0
    holders = []
    for k in range(2):
        path = str(tmp_path / f"held{k}")
        holders.append((procs.python(holder_code(fifo_name, path)), path))
        wait_until(lambda: os.path.exists(path) and open(path).read(), what="a held item")
    for proc, _ in holders:
        os.kill(proc.pid, signal.SIGKILL)
    for proc, _ in holders:
        assert proc.wait() == -signal.SIGKILL
    daemon.wait_for(r"recovery \d+ done")
    st = settle(fifo_name)
    assert st["items"] == 6 and st["requeued"] == 2
    got = drain(procs, fifo_name, 6)
    assert sorted(r["seq"] for r in got) == [1, 2, 3, 4, 5, 6]
    assert_consistent(fifo_name, expected_items=0)
    daemon.signal()
    assert daemon.wait() == 0


def test_zombie_client_counts_as_dead(procs, fifo_name, tmp_path):
    """A client that exited but was not reaped by its parent (a zombie) has released its
    lease: the daemon recovers its item while the zombie still has its pid."""
    daemon = procs.daemon(fifo_name, "--size", "8")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=max", "count=3")
    assert producer.wait() == 0
    held = str(tmp_path / "held")
    code = (
        "import os, sys, time, shmfifo\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    q = shmfifo.attach({fifo_name!r})\n"
        "    q.get(timeout=10)\n"
        "    os._exit(0)               # dies without close: the item is not acknowledged\n"
        f"open({held!r}, 'w').write(str(pid))\n"
        "time.sleep(60)                # never reaps the child: it stays a zombie\n"
    )
    parent = procs.python(code)
    child = int(wait_until(lambda: os.path.exists(held) and open(held).read(), what="fork"))
    daemon.wait_for(r"recovery \d+ done")
    import psutil
    assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    st = settle(fifo_name)
    assert st["items"] == 3 and st["requeued"] == 1
    got = drain(procs, fifo_name, 3)
    assert [r["seq"] for r in got] == [1, 2, 3]
    parent.kill()
    daemon.signal()
    assert daemon.wait() == 0


def test_pid_reuse_does_not_fool_the_daemon(procs, fifo_name, tmp_path):
    """A dead client's entry that names a live pid (with that process's real start time) is
    still recovered: liveness is the kernel lease, not the pid."""
    import psutil
    from shmfifo.layout import E_PID, E_START
    from shmfifo.segment import Segment

    daemon = procs.daemon(fifo_name, "--size", "8", "--keep")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=max", "count=3")
    assert producer.wait() == 0
    os.kill(daemon.pid, signal.SIGKILL)
    assert daemon.wait() == -signal.SIGKILL
    held = str(tmp_path / "held")
    holder = procs.python(holder_code(fifo_name, held).replace(
        "q = shmfifo.attach", "import shmfifo.segment as s; s.Segment.daemon_alive = "
        "lambda self: True\nq = shmfifo.attach"))
    wait_until(lambda: os.path.exists(held) and open(held).read(), what="a held item")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    # Make the dead entry name a live process: this test's own, with its real start time.
    seg = Segment.open(fifo_name, require_daemon=False)
    try:
        g = seg.geometry
        index = next(i for i in range(g.max_clients)
                     if seg.words[g.entry_offset(i) // 8] == 1)
        base = g.entry_offset(index) // 8
        me = psutil.Process()
        seg.words[base + E_PID] = me.pid
        seg.words[base + E_START] = int(me.create_time() * 1000)
    finally:
        seg.close()
    restarted = procs.daemon(fifo_name)
    restarted.wait_for(r"recovery \d+ done")
    st = settle(fifo_name)
    assert st["items"] == 3 and st["requeued"] == 1
    assert [r["seq"] for r in drain(procs, fifo_name, 3)] == [1, 2, 3]
    restarted.signal()
    assert restarted.wait() == 0


BATCH_TAKER = (
    "import sys, shmfifo\n"
    "q = shmfifo.attach(sys.argv[1])\n"
    "got = q.get_many(3, timeout=10)\n"
    "print(got, flush=True)\n"
    "import time; time.sleep(60)\n"       # holds the batch, unacknowledged
)


@pytest.mark.parametrize("step", ["get.prepared", "get.copied", "get.commit", "get.taken",
                                  "get.done", None])
def test_consumer_killed_holding_a_batch(procs, fifo_name, step):
    """A get_many batch is taken, recorded and re-queued as a unit, in order, at the front."""
    daemon = procs.daemon(fifo_name, "--size", "8")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=max",
                       "count=6").wait() == 0
    env = {"SHMFIFO_CRASH_AT": step} if step else None
    taker = procs.python(BATCH_TAKER, fifo_name, env=env)
    if step is None:
        taker.wait_for(r"\['p', 'p', 'p'\]")
        os.kill(taker.pid, signal.SIGKILL)
    assert taker.wait() == -signal.SIGKILL
    daemon.wait_for(r"recovery \d+ done")
    st = settle(fifo_name)
    assert st["items"] == 6
    assert st["requeued"] == (0 if step in ("get.prepared", "get.copied") else 3)
    assert [r["seq"] for r in drain(procs, fifo_name, 6)] == [1, 2, 3, 4, 5, 6]
    assert_consistent(fifo_name, expected_items=0)
    daemon.signal()
    assert daemon.wait() == 0
