"""Clients for the mixed chaos test, run as ``python mix_agents.py ROLE STYLE FIFO IDENT DIR``.

Each agent is one process using the library in one of the ways programs do (STYLE):

* ``plain``   one thread, one handle;
* ``threads`` two threads sharing one handle (each thread is its own client);
* ``async``   coroutines on one handle (three awaiting aget, or one aput_many producer);
* ``fork``    a handle attached, then the process forks; parent and child both use it;
* ``spawn``   the handle is pickled to a spawn child; parent and child both use it.

Every unit of work (a thread, a coroutine, a child) writes its own log in DIR, named
``IDENT.mN.log`` in the agent's own process and ``IDENT.cN.log`` in its child. A producer unit
puts "IDENT.UNIT:seq" and logs seq once the put (or the whole batch) returned; a consumer
unit logs each item, flushes, and only then takes the next (which acknowledges it). So after a
SIGKILL of the agent's process (and so of its child), an item was delivered twice only if it
is the last line of one of their consumer logs, and a producer may have put up to BATCH items past its last
logged seq. A child dies with its parent (as part of the killed program); SIGTERM stops all.
"""

import asyncio
import multiprocessing
import os
import signal
import sys
import threading

import shmfifo
from procs import AGENT_READY, attach_patiently as attach

BATCH = 8           # most items a producer unit puts in one call


class Stop:
    def __init__(self):
        self.flag = False

    def __call__(self):
        return self.flag


def produce(q, unit, path, stop):
    with open(path, "a", buffering=1) as log:
        seq = 0
        while not stop():
            try:
                n = 1 + seq % BATCH
                items = [f"{unit}:{seq + k + 1}" for k in range(n)]
                if n == 1:
                    q.put(items[0], timeout=0.5)
                else:
                    q.put_many(items, timeout=0.5)
                for k in range(n):
                    log.write(f"{seq + k + 1}\n")
                seq += n
            except shmfifo.Full as full:
                for k in range(getattr(full, "put", 0)):
                    log.write(f"{seq + k + 1}\n")
                seq += getattr(full, "put", 0)
            except (shmfifo.Stopped, shmfifo.FifoClosed, shmfifo.HandleClosed):
                break


def consume(q, unit, path, stop):
    with open(path, "a", buffering=1) as log:
        while not stop():
            try:
                item = q.get(timeout=0.3)
            except shmfifo.Empty:
                continue
            except (shmfifo.Stopped, shmfifo.FifoClosed, shmfifo.HandleClosed):
                break
            log.write(item + "\n")
            log.flush()


def die_with_parent(parent):
    """A child is SIGKILLed with its parent (PR_SET_PDEATHSIG), like the rest of a killed
    program; a stray child would otherwise outlive a failed test."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def unit_main(role, q, unit, path, parent, stop=None):
    """A child's work (fork or spawn): until SIGTERM; it dies with its parent. A forked child
    passes the Stop it inherited, which a SIGTERM that came before this line has set."""
    die_with_parent(parent)
    if stop is None:
        stop = Stop()
    signal.signal(signal.SIGTERM, lambda *a: setattr(stop, "flag", True))
    (produce if role == "producer" else consume)(q, unit, path, stop)
    q.close()


async def run_async(role, q, ident, directory, stop):
    async def consumer(n):
        with open(os.path.join(directory, f"{ident}.m{n}.log"), "a", buffering=1) as log:
            while not stop():
                try:
                    item = await q.aget(timeout=0.3)
                except shmfifo.Empty:
                    continue
                except (shmfifo.Stopped, shmfifo.FifoClosed, shmfifo.HandleClosed):
                    return
                log.write(item + "\n")        # no await before the next aget: the item
                log.flush()                   # is logged before it is acknowledged

    async def producer():
        unit = f"{ident}.m0"
        with open(os.path.join(directory, f"{unit}.log"), "a", buffering=1) as log:
            seq = 0
            while not stop():
                n = 1 + seq % BATCH
                items = [f"{unit}:{seq + k + 1}" for k in range(n)]
                try:
                    await q.aput_many(items, timeout=0.3)
                    done = n
                except shmfifo.Full as full:
                    done = full.put
                except (shmfifo.Stopped, shmfifo.FifoClosed, shmfifo.HandleClosed):
                    return
                for k in range(done):
                    log.write(f"{seq + k + 1}\n")
                seq += done

    if role == "producer":
        await producer()
    else:
        await asyncio.gather(*(consumer(n) for n in range(3)))


def main(role, style, name, ident, directory):
    stop = Stop()
    children = []

    def on_term(signum, frame):
        stop.flag = True
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_term)
    q = attach(name)
    work = produce if role == "producer" else consume

    def path(unit):
        return os.path.join(directory, f"{ident}.{unit}.log")

    if style == "fork":
        # The parent's pid, read before the fork: a child that read getppid() itself, after a
        # SIGKILL of the parent that came first, would take init for its parent and outlive it.
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                children.clear()
                unit_main(role, q, f"{ident}.c0", path("c0"), parent, stop)
            except BaseException as error:
                print(f"child: {error!r}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        children.append(pid)
    elif style == "spawn":
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=unit_main,
                            args=(role, q, f"{ident}.c0", path("c0"), os.getpid()))
        child.start()
        children.append(child.pid)
    print(AGENT_READY, flush=True)

    if style == "async":
        asyncio.run(run_async(role, q, ident, directory, stop))
    elif style == "threads":
        threads = [threading.Thread(target=work, args=(q, f"{ident}.m{n}", path(f"m{n}"), stop))
                   for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.1)
    else:
        work(q, f"{ident}.m0", path("m0"), stop)
    for child in children:
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
    q.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
