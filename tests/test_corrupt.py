"""Corrupt words: any process that can write a segment can scribble on it. A reader never
crashes, hangs or reads outside a slot: a contradiction in the ring's words makes the daemon
mark the FIFO corrupt (clients exit 1 with one line; the daemon still stops on SIGTERM, and a
new daemon refuses the segment), and a corrupt item is reported and skipped.
"""

import contextlib
import os
import random
import signal
import struct
import subprocess
import sys
import time

import pytest

from procs import WAIT, records, status_of, wait_until
from shmfifo import layout, names
from shmfifo.layout import E_INFLIGHT_N, H_EPOCH, H_HEAD, H_JOURNAL_ENTRY, H_STATE, H_TAIL
from shmfifo.segment import Segment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = {"c": {"SHMFIFO_PURE": "0"}, "pure": {"SHMFIFO_PURE": "1"}}
# How long anything may take to notice a corrupt FIFO and leave: the daemon looks twice,
# 50 ms apart; a client at least once per wait slice.
NOTICE = 5.0


def scribble(name, word=None, value=None, offset=None, data=None):
    seg = Segment.open(name, require_daemon=False, semaphores=False)
    try:
        if word is not None:
            seg.words[word] = value
        if offset is not None:
            seg.buf[offset:offset + len(data)] = data
        return seg.geometry
    finally:
        seg.close()


def no_traceback(*procs):
    for proc in procs:
        assert not [line for line in proc.err if "Traceback" in line], proc.err[-10:]


def one_line_corrupt(proc):
    errors = [line for line in proc.err if "error:" in line]
    assert len(errors) == 1 and "corrupt" in errors[0].lower(), proc.err[-5:]


@pytest.fixture(params=list(PATHS))
def env(request):
    return PATHS[request.param]


@pytest.mark.parametrize("word,value", [(H_HEAD, 2 ** 63), (H_TAIL, 0), ("tail+", 10 ** 6),
                                        (H_JOURNAL_ENTRY, 2 ** 40), (H_STATE, 99)],
                         ids=["head-2^63", "tail-0", "tail-ahead", "journal-2^40", "state-99"])
def test_contradicting_ring_words_stop_the_fifo_with_one_line(procs, fifo_name, env, word,
                                                              value):
    daemon = procs.daemon(fifo_name, "--size", "32")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=200", env=env)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=100", env=env)
    consumer.wait_for("item='p'", stream="out")
    if word == "tail+":
        seg = Segment.open(fifo_name, semaphores=False)
        seg.words[H_TAIL] = seg.words[H_HEAD] + value
        seg.close()
    else:
        scribble(fifo_name, word, value)
    daemon.wait_for("is corrupt", timeout=NOTICE) if word != H_STATE else None
    for client in (producer, consumer):
        assert client.wait(NOTICE) == 1, client.err[-5:]
        one_line_corrupt(client)
    # status still reads it, and says so
    assert status_of(fifo_name)["daemon"] in ("corrupt", "gone", "stopping", "running")
    daemon.signal()
    assert daemon.wait(NOTICE) == 0, daemon.err[-5:]
    no_traceback(daemon, producer, consumer)
    assert not os.path.exists(names.shm_path(fifo_name))


def test_a_daemon_refuses_to_adopt_a_corrupt_segment(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--keep")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    scribble(fifo_name, H_JOURNAL_ENTRY, 2 ** 40)
    again = procs.spawn("fifo", "--name", fifo_name)
    assert again.wait(WAIT) == 1
    errors = [line for line in again.err if "error:" in line]
    assert len(errors) == 1 and "journal" in errors[0] and "clean" in errors[0], again.err
    no_traceback(again)
    assert procs.spawn("clean", fifo_name, "--force").wait() == 0


HOLDER = """
import sys, time, shmfifo
q = shmfifo.attach(sys.argv[1])
print(q.index, q.get(timeout=10), flush=True)       # taken, not acknowledged
time.sleep(60)
"""


@pytest.mark.parametrize("n", [2 ** 40, 1000, 0])
def test_a_dead_consumers_record_out_of_bounds_is_not_requeued(procs, fifo_name, n):
    daemon = procs.daemon(fifo_name, "--size", "8")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=x", "count=2",
                       "rate=max").wait() == 0
    holder = procs.python(HOLDER, fifo_name)
    index = int(holder.wait_for(r"^\d+ x", stream="out").split()[0])
    g = scribble(fifo_name)
    scribble(fifo_name, g.entry_offset(index) // 8 + E_INFLIGHT_N, n)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    daemon.wait_for("is corrupt", timeout=NOTICE)
    assert status_of(fifo_name)["items"] == 1, "nothing re-queued from a bad record"
    daemon.signal()
    assert daemon.wait(NOTICE) == 0
    no_traceback(daemon)


def test_an_odd_epoch_with_no_recovery_does_not_park_clients_for_ever(procs, fifo_name, env):
    daemon = procs.daemon(fifo_name)
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=100", env=env)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", env=env)
    consumer.wait_for("item='p'", stream="out")
    seg = Segment.open(fifo_name, semaphores=False)
    seg.words[H_EPOCH] = seg.words[H_EPOCH] | 1
    seg.close()
    daemon.wait_for("epoch is odd", timeout=NOTICE)
    seen = len(consumer.out)
    wait_until(lambda: len(consumer.out) > seen + 10, "items flowing again", timeout=NOTICE)
    for proc in (producer, consumer, daemon):
        proc.signal()
        assert proc.wait(NOTICE) == 0
    no_traceback(daemon, producer, consumer)


def _slot_offset(seg, position):
    """Where the item at ring position ``position`` lies: the pool slot the ring names."""
    g = seg.geometry
    return g.slot_offset(seg.words[g.ring_offset // 8 + position % g.nslots])


# (the first header word: length and tag; a payload to write after the header, or None)
BAD_ITEMS = {
    "length 0xFFFFFFFF": (struct.pack("<IHxx", 0xFFFFFFFF, layout.TAG_STR), None),
    "unknown tag": (struct.pack("<IHxx", 3, 77), None),
    "bad UTF-8": (struct.pack("<IHxx", 3, layout.TAG_STR), b"\xff\xfe\xfd"),
    "bad pickle": (struct.pack("<IHxx", 3, layout.TAG_PICKLE), b"\x80\x05\xff"),
}


@pytest.mark.parametrize("bad", list(BAD_ITEMS))
def test_a_corrupt_item_is_reported_and_skipped(procs, fifo_name, env, bad):
    daemon = procs.daemon(fifo_name, "--size", "8")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=ok", "count=3",
                       "rate=max").wait() == 0
    seg = Segment.open(fifo_name, semaphores=False)
    slot = _slot_offset(seg, seg.words[H_TAIL] + 1)
    seg.close()
    first_word, payload = BAD_ITEMS[bad]
    scribble(fifo_name, offset=slot, data=first_word)
    if payload is not None:
        scribble(fifo_name, offset=slot + layout.SLOT_HEADER_SIZE, data=payload)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=2", "--json",
                           env=env)
    assert consumer.wait(WAIT) == 0, consumer.err[-5:]
    assert [r["seq"] for r in records(consumer)] == [1, 3]
    warnings = [line for line in consumer.err if "corrupt item" in line]
    assert len(warnings) == 1 and "seq 2" in warnings[0], consumer.err
    no_traceback(consumer)
    daemon.signal()
    assert daemon.wait() == 0


@contextlib.contextmanager
def _second_of_three_scribbled(fifo_name):
    """A FIFO served here holding b"a", b"b", b"c", the second with a length word beyond
    the item size; a handle attached to it."""
    import shmfifo
    with shmfifo.serve(fifo_name, capacity=8, item_size=16):
        with shmfifo.attach(fifo_name) as q:
            q.put_many([b"a", b"b", b"c"])
            seg = q._client()._seg
            scribble(fifo_name, offset=_slot_offset(seg, seg.words[H_TAIL] + 1),
                     data=struct.pack("<IH", 0xFFFFFFFF, layout.TAG_BYTES))
            yield q


def test_the_library_raises_corrupt_item_and_goes_on(fifo_name):
    import shmfifo
    with _second_of_three_scribbled(fifo_name) as q:
        assert q.get() == b"a"
        with pytest.raises(shmfifo.CorruptItem, match="length word") as error:
            q.get()
        assert error.value.seq == 2
        assert q.get() == b"c"


def test_a_corrupt_slot_in_a_batch_of_views_is_its_error_in_place(fifo_name):
    import shmfifo
    with _second_of_three_scribbled(fifo_name) as q:
        with q.get_many_views(3) as views:
            assert bytes(views[0]) == b"a" and bytes(views[2]) == b"c"
            assert isinstance(views[1], shmfifo.CorruptItem) and views[1].seq == 2
        q.put(b"d")
        assert q.get() == b"d"


def test_an_epoch_scribbled_to_the_last_value_wraps(procs, fifo_name):
    """The epoch at 2**64 - 1 (odd: a recovery in progress, for everyone) is reconciled and
    wraps to 0, as C's words wrap; before, the daemon died of a ValueError."""
    daemon = procs.daemon(fifo_name, "--size", "4")
    scribble(fifo_name, word=H_EPOCH, value=2 ** 64 - 1)
    daemon.wait_for("reconciling")
    wait_until(lambda: status_of(fifo_name)["recoveries"] == 1, what="the recovery")
    assert _word(fifo_name, H_EPOCH) == 0
    import shmfifo
    with shmfifo.attach(fifo_name) as q:
        q.put(b"on")
        assert q.get(timeout=WAIT) == b"on"
    daemon.signal()
    assert daemon.wait() == 0
    no_traceback(daemon)


def _word(name, word):
    seg = Segment.open(name, require_daemon=False, semaphores=False)
    try:
        return seg.words[word]
    finally:
        seg.close()


FUZZ = """
import os, random, sys, time
from shmfifo.segment import Segment
from shmfifo import layout
name, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
seg = Segment.open(name, require_daemon=False, semaphores=False)
g = seg.geometry
end = time.monotonic() + seconds
values = [0, 1, 2, 3, 2 ** 31, 2 ** 32 - 1, 2 ** 40, 2 ** 63, 2 ** 64 - 1]
n = 0
while time.monotonic() < end:
    kind = rng.random()
    if kind < 0.7:                      # a slot: header words or payload
        off = g.slot_offset(rng.randrange(g.nslots)) + rng.randrange(0, 40, 8)
        seg.words[off // 8] = rng.choice(values + [rng.getrandbits(64)])
    elif kind < 0.75:                   # a slot number in the ring or the free list
        first = rng.choice([g.ring_offset, g.free_offset]) // 8
        seg.words[first + rng.randrange(g.nslots)] = rng.choice(values + [rng.getrandbits(64)])
    elif kind < 0.85:                   # an entry word
        i = rng.randrange(g.max_clients)
        seg.words[g.entry_offset(i) // 8 + rng.randrange(layout.ENTRY_WORDS)] = \
            rng.choice(values + [rng.getrandbits(64)])
    else:                               # a header word (not the geometry: that is checked
        word = rng.choice([layout.H_HEAD, layout.H_TAIL, layout.H_FREE_HEAD,
                           layout.H_FREE_TAIL, layout.H_EPOCH, layout.H_STATE,
                           layout.H_JOURNAL_ENTRY, layout.H_JOURNAL_TAIL])
        seg.words[word] = rng.choice(values + [rng.getrandbits(64)])   # at attach only)
    n += 1
    time.sleep(rng.uniform(0.001, 0.02))
print("scribbled", n, flush=True)
"""


@pytest.mark.timeout(180)
def test_fuzz_scribbles_while_everything_runs(procs, fifo_name, env):
    """Random words of slots, entries and the header are overwritten while two producers,
    two consumers and the daemon run: no process dies of a signal or prints a traceback,
    and every one has stopped within NOTICE seconds of its SIGTERM (clients that met a
    corrupt FIFO have left by themselves, with exit 1 and one line)."""
    seed = random.randrange(10 ** 6)
    daemon = procs.daemon(fifo_name, "--size", "16", "--item-size", "64")
    clients = [procs.spawn("producer", "--fifo", fifo_name, f"item=i{k}", "rate=max", env=env)
               for k in range(2)]
    clients += [procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "--json", env=env)
                for k in range(2)]
    for c in clients:
        c.wait_for("attached")
    fuzz = subprocess.run([sys.executable, "-c", FUZZ, fifo_name, "4", str(seed)],
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                          text=True, timeout=60)
    assert fuzz.returncode == 0, fuzz.stderr
    for proc in clients + [daemon]:
        started = time.monotonic()
        proc.signal()
        code = proc.wait(NOTICE)
        assert time.monotonic() - started < NOTICE
        assert code in (0, 1), (seed, proc.argv, code, proc.err[-5:])
        if code == 1:
            one_line_corrupt(proc)
    no_traceback(daemon, *clients)
    for consumer in clients[2:]:
        for r in records(consumer):       # nothing read beyond a slot's item size
            assert len(str(r["item"])) <= 64 * 4, (seed, r)
    print(f"\nfuzz seed {seed}: {fuzz.stdout.strip()}, exits "
          f"{[p.popen.returncode for p in clients + [daemon]]}")
