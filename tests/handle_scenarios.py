"""Programs that use the library the way applications do, run as
``python handle_scenarios.py SCENARIO FIFO`` (by test_handles.py, once with the C fast path and
once with SHMFIFO_PURE=1). Each runs a daemon in-process with ``shmfifo.serve``, checks what
it must, prints one JSON line of figures, and exits 0; a crash shows as the exit status.
"""

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
import traceback

import shmfifo
from shmfifo import layout, ring, status

WAIT = 10.0

VICTIM = """
import sys, time, shmfifo
q = shmfifo.attach(sys.argv[1])
q.put("held")
assert q.get(timeout=5) == "held"     # taken and not acknowledged: a recovery re-queues it
print("holding", flush=True)
time.sleep(60)
"""


def several_handles_during_recovery(name):
    """Several handles in one process, opened and closed around a recovery that the
    in-process daemon runs for a SIGKILLed client holding an item."""
    with shmfifo.serve(name, capacity=8) as daemon:
        with shmfifo.attach(name) as first:        # the README's pattern: open, use, close
            first.put("a")
            assert first.get() == "a"
        q = shmfifo.attach(name)
        extra = [shmfifo.attach(name) for _ in range(3)]
        extra.pop().close()
        victim = subprocess.Popen([sys.executable, "-c", VICTIM, name], stdout=subprocess.PIPE,
                                  text=True)
        assert victim.stdout.readline().strip() == "holding"
        victim.kill()
        victim.wait()
        assert q.get(timeout=WAIT) == "held"          # re-queued by the recovery
        for h in extra:
            h.put(b"x")
        assert sorted(h.get(timeout=WAIT) for h in extra) == [b"x", b"x"]
        for h in extra:
            h.close()
        q.put("after")
        assert q.get() == "after"
        q.close()
        recoveries = daemon.seg.words[layout.H_RECOVERIES]
    assert daemon.report.unlinked and daemon.report.discarded == 0
    return {"recoveries": recoveries}


def threads_and_handles(name):
    """Threads, each with its own handle or sharing one; a handle closed while its thread
    waits in get. Every item is accounted for."""
    producers, per_producer = 4, 3000
    taken = []
    errors = []
    with shmfifo.serve(name, capacity=16):
        shared = shmfifo.attach(name)
        done = threading.Event()

        def produce(handle, p):
            items = [f"{p}:{i}" for i in range(per_producer)]
            if p % 2:
                handle.put_many(items, timeout=WAIT)
            else:
                for item in items:
                    handle.put(item, timeout=WAIT)

        def consume(handle):
            mine = []
            try:
                while not done.is_set():
                    try:
                        if random.random() < 0.5:
                            mine.append(handle.get(timeout=0.1))
                        else:
                            mine.extend(handle.get_many(5, timeout=0.1))
                    except shmfifo.Empty:
                        pass
            except shmfifo.HandleClosed:
                pass
            except BaseException:
                errors.append(traceback.format_exc())
            taken.extend(mine)

        own = [shmfifo.attach(name) for _ in range(2)]
        doomed = shmfifo.attach(name)
        threads = [threading.Thread(target=produce, args=(shared if p < 2 else own[p - 2], p))
                   for p in range(producers)]
        threads += [threading.Thread(target=consume, args=(h,))
                    for h in (shared, shared, own[0], own[1])]
        waiting = threading.Thread(target=consume, args=(doomed,))
        for t in threads + [waiting]:
            t.start()
        time.sleep(0.05)
        doomed.close()                   # while its thread takes or waits: it stops at once
        waiting.join(WAIT)
        assert not waiting.is_alive()
        deadline = time.monotonic() + 60
        for t in threads[:producers]:
            t.join(60)
        while shared.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)
        # one client per (handle, thread): this thread's three, the four consumer threads'
        # (the producer threads ended and freed theirs, the closed handle's are gone)
        during = len(status.snapshot(name).clients)
        done.set()
        for t in threads:
            t.join(WAIT)
        after = len(status.snapshot(name).clients)
        shared.close()
        for h in own:
            h.close()
    expected = {f"{p}:{i}" for p in range(producers) for i in range(per_producer)}
    assert not errors, errors
    assert len(taken) == len(set(taken)), "duplicates"
    assert set(taken) == expected, f"lost {len(expected - set(taken))}"
    return {"items": len(taken), "clients": during, "clients_after_threads_end": after}


def fork_shared_handle(name):
    """A handle attached before fork() and used by parent and child at once."""
    total = 20000
    with shmfifo.serve(name, capacity=64):
        q = shmfifo.attach(name)
        q.put("warm")
        assert q.get() == "warm"                 # the parent holds an entry and a record
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            mine = []
            code = 0
            try:
                while True:
                    item = q.get(timeout=WAIT)
                    if item == "END":
                        break
                    mine.append(item)
                with os.fdopen(write, "w") as out:
                    json.dump(mine, out)
                q.close()
            except BaseException as error:
                print(f"child: {error!r}", file=sys.stderr)
                code = 1
            os._exit(code)
        os.close(write)
        def produce():
            with shmfifo.attach(name) as p:
                p.put_many(list(range(total)) + ["END", "END"], timeout=60)
        producer = threading.Thread(target=produce)
        producer.start()
        mine = []
        while True:
            item = q.get(timeout=WAIT)
            if item == "END":
                break
            mine.append(item)
        with os.fdopen(read) as f:
            theirs = json.load(f)
        _, status = os.waitpid(pid, 0)
        producer.join(WAIT)
        assert os.waitstatus_to_exitcode(status) == 0
        q.close()
    together = mine + theirs
    assert len(together) == len(set(together)), f"{len(together) - len(set(together))} twice"
    assert set(together) == set(range(total)), f"lost {total - len(set(together))}"
    return {"parent": len(mine), "child": len(theirs)}


def put_range(q, start, n):
    q.put_many(list(range(start, start + n)), timeout=WAIT)
    return os.getpid()


def take_some(q, n):
    return [q.get(timeout=WAIT) for _ in range(n)]


def pickled_handles(name):
    """A handle passed to multiprocessing children under each start method, and to pools."""
    figures = {}
    with shmfifo.serve(name, capacity=32):
        q = shmfifo.attach(name)
        base = 0
        for method in ("fork", "spawn", "forkserver"):
            ctx = multiprocessing.get_context(method)
            children = [ctx.Process(target=put_range, args=(q, base + 100 * i, 100))
                        for i in range(2)]
            for child in children:
                child.start()
            got = [q.get(timeout=WAIT) for _ in range(200)]
            for child in children:
                child.join(WAIT)
                assert child.exitcode == 0, (method, child.exitcode)
            assert sorted(got) == list(range(base, base + 200)), method
            base += 1000
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
                puts = [pool.submit(put_range, q, base + 50 * i, 50) for i in range(4)]
                got = sorted(q.get(timeout=WAIT) for _ in range(200))
                pids = {f.result(timeout=WAIT) for f in puts}
                assert got == list(range(base, base + 200)), method
                q.put_many(list(range(20)))
                takes = [pool.submit(take_some, q, 5) for _ in range(4)]
                taken = sorted(x for f in takes for x in f.result(timeout=WAIT))
                assert taken == list(range(20)), method
            base += 1000
            figures[method] = len(pids)
        assert q.qsize() == 0
        q.close()
    return figures


async def _asyncio_main(name):
    q = shmfifo.attach(name)
    feeder = shmfifo.attach(name)
    loop = asyncio.get_running_loop()

    # 100 coroutines wait on one handle; half are cancelled; 50 items then go to the others.
    waiters = [asyncio.ensure_future(q.aget()) for _ in range(100)]
    await asyncio.sleep(0.1)
    for t in waiters[::2]:
        t.cancel()
    await loop.run_in_executor(None, lambda: feeder.put_many(list(range(50)), timeout=WAIT))
    got = await asyncio.wait_for(asyncio.gather(*waiters[1::2]), WAIT)
    assert sorted(got) == list(range(50)), got
    assert q.qsize() == 0

    # A timed-out aget takes nothing: the item put after it is still there.
    try:
        await q.aget(timeout=0.05)
        raise AssertionError("aget on an empty FIFO returned")
    except shmfifo.Empty:
        pass
    feeder.put("later")
    assert q.get_nowait() == "later"

    # Cancelled at random moments around the arrival of an item: the item is either
    # returned by the task or still in the FIFO, never lost.
    delivered = 0
    for i in range(200):
        task = asyncio.ensure_future(q.aget())
        await asyncio.sleep(random.random() * 0.002)
        feeder.put(i)
        await asyncio.sleep(random.random() * 0.002)
        task.cancel()
        try:
            assert await task == i
            delivered += 1
        except asyncio.CancelledError:
            assert q.get(timeout=WAIT) == i, "a cancelled aget took the item"
    assert q.qsize() == 0

    # aput on a full FIFO: a timeout and a cancellation put nothing.
    feeder.put_many(list(range(q.capacity)))
    try:
        await q.aput("over", timeout=0.05)
        raise AssertionError("aput on a full FIFO returned")
    except shmfifo.Full:
        pass
    task = asyncio.ensure_future(q.aput("cancelled"))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert feeder.get_many(q.capacity) == list(range(q.capacity))
    assert q.qsize() == 0

    # A producer coroutine with batches and a consumer coroutine: every item, in order.
    total = 20000

    async def produce():
        for start in range(0, total, 100):
            await q.aput_many(list(range(start, start + 100)))

    async def consume():
        out = []
        while len(out) < total:
            out.extend(await q.aget_many(64))
        return out

    _, out = await asyncio.wait_for(asyncio.gather(produce(), consume()), 60)
    assert out == list(range(total)), "order or count"
    q.close()
    feeder.close()
    return {"cancel_races_delivered": delivered}


def asyncio_handles(name):
    with shmfifo.serve(name, capacity=16):
        return asyncio.run(_asyncio_main(name))


def asyncio_lifecycles(name):
    """One handle across event loops: asyncio.run more than once, two loops in two threads at
    once, close() while coroutines wait, a closed handle in a new loop (and no descriptor of
    anyone else's closed by it), and a watcher that found the table full retrying."""
    figures = {}
    with shmfifo.serve(name, capacity=8, max_clients=6):
        q = shmfifo.attach(name)
        for _ in range(3):                       # a new loop each time
            q.put("x")
            assert asyncio.run(q.aget(timeout=WAIT)) == "x"

        results = {}

        def in_thread(tag):
            results[tag] = asyncio.run(q.aget(timeout=WAIT))
        threads = [threading.Thread(target=in_thread, args=(t,)) for t in "AB"]
        for t in threads:
            t.start()
        time.sleep(0.2)
        q.put_many(["one", "two"])
        for t in threads:
            t.join(WAIT)
        assert sorted(results.values()) == ["one", "two"], results
        assert q.qsize() == 0

        async def close_while_waiting(handle, waits):
            waiters = [asyncio.ensure_future(w) for w in waits]
            await asyncio.sleep(0.2)
            handle.close()
            done = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True),
                                          WAIT)
            return [type(r).__name__ for r in done]
        getter = shmfifo.attach(name)           # the FIFO is empty: these wait
        outcome = asyncio.run(close_while_waiting(getter, [getter.aget(), getter.aget_many(4),
                                                           getter.aget(timeout=30)]))
        assert outcome == ["HandleClosed"] * 3, outcome
        putter = shmfifo.attach(name)
        putter.put_many(list(range(8)))         # full: these wait
        outcome = asyncio.run(close_while_waiting(putter, [putter.aput("x"),
                                                           putter.aput_many(["y", "z"])]))
        assert outcome == ["HandleClosed"] * 2, outcome
        assert q.get_many(8) == list(range(8))
        q.close()
        figures["closed_waiters"] = "HandleClosed"

        with open(os.devnull) as bystander:     # a descriptor the closed handle must not touch
            try:
                asyncio.run(q.aget())
                raise AssertionError("aget on a closed handle returned")
            except shmfifo.HandleClosed:
                pass
            os.fstat(bystander.fileno())

        fillers = [shmfifo.attach(name) for _ in range(6)]     # the table is full

        async def retry_after_full():
            h = fillers[5]
            try:
                await h.aget(timeout=0.3)        # its watcher finds no free entry
                raise AssertionError("aget returned on an empty FIFO")
            except shmfifo.NoFreeEntry:
                pass
            fillers[0].close()                   # an entry frees up: the same loop retries
            try:
                await h.aget(timeout=0.3)
                raise AssertionError("aget returned on an empty FIFO")
            except shmfifo.Empty:
                return "empty"
        figures["after_full"] = asyncio.run(retry_after_full())
        for f in fillers:
            f.close()
    return figures


SCENARIOS = {f.__name__: f for f in (several_handles_during_recovery, threads_and_handles,
                                     fork_shared_handle, pickled_handles, asyncio_handles,
                                     asyncio_lifecycles)}

if __name__ == "__main__":
    figures = SCENARIOS[sys.argv[1]](sys.argv[2])
    print(json.dumps({"ok": True, "pure": not ring.USE_FASTPATH, **(figures or {})}),
          flush=True)
