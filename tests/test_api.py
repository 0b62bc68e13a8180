"""The library API (the lab's exported put/get) against queue.Queue semantics.

Each test runs a real daemon in-process (``shmfifo.serve``) or as a process, and real handles
on real shared memory and semaphores. Every wait is bounded; a blocked call in a helper thread
is ended by ``request_stop`` if the test fails, so nothing hangs.
"""

import json
import os
import queue
import threading
import time

import pytest

import shmfifo
from procs import WAIT, wait_until
from shmfifo import status


def client_states(name):
    return {c.pid: c.state for c in status.snapshot(name).clients}


def clients_in_state(name, state):
    return [c for c in status.snapshot(name).clients if c.state == state]


class Blocked:
    """Run ``call(handle)`` in a thread with its own handle (one handle per thread)."""

    def __init__(self, name, call):
        self.handle = shmfifo.attach(name)
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call):
        try:
            self.result = call(self.handle)
        except BaseException as error:        # reported by join()
            self.error = error

    def join(self, timeout=WAIT):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.handle.request_stop()        # ends the wait within one slice
            self.thread.join(timeout)
            raise AssertionError("the blocked call did not return")
        self.handle.close()
        if self.error is not None:
            raise self.error
        return self.result

    def stop(self):
        """On a failing test: end the call and release the handle."""
        if self.thread.is_alive():
            self.handle.request_stop()
            self.thread.join(WAIT)
        if not self.thread.is_alive():
            self.handle.close()


# -- round trip --------------------------------------------------------------------------------

VALUES = [
    pytest.param(b"ab\x00\xff", id="bytes"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param("a", id="str"),
    pytest.param("héllo wörld ✓ 日本語 \U0001f600", id="str-non-ascii"),
    pytest.param("", id="empty-str"),
    pytest.param(0, id="int-0"),
    pytest.param(42, id="int"),
    pytest.param(-7, id="int-negative"),
    pytest.param(2 ** 200 + 1, id="int-big"),
    pytest.param(-(2 ** 200), id="int-big-negative"),
    pytest.param(True, id="bool-true"),
    pytest.param(False, id="bool-false"),
    pytest.param(None, id="None"),
    pytest.param(1.5, id="float"),
    pytest.param({"a": [1, 2], "b": {"c": None}}, id="dict"),
    pytest.param([1, "x", b"y", (2, 3)], id="list"),
    pytest.param((1, "two"), id="tuple"),
]


@pytest.mark.parametrize("value", VALUES)
def test_put_get_round_trip_keeps_type_and_value(fifo_name, value):
    with shmfifo.serve(fifo_name, capacity=4, item_size=128):
        with shmfifo.attach(fifo_name) as q:
            q.put(value)
            out = q.get(timeout=WAIT)
    assert type(out) is type(value)
    assert out == value


def test_bytearray_and_memoryview_come_back_as_bytes(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            q.put(bytearray(b"xy"))
            q.put(memoryview(b"zw"))
            assert q.get_many(2, timeout=WAIT) == [b"xy", b"zw"]


def test_items_come_out_in_fifo_order_across_the_ring_wrap(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            out = []
            for start in range(0, 30, 3):
                for i in range(start, start + 3):
                    q.put(i)
                out += [q.get_nowait() for _ in range(3)]
    assert out == list(range(30))


def test_get_message_names_the_producer_and_its_sequence(fifo_name):
    with shmfifo.serve(fifo_name, capacity=8):
        with shmfifo.attach(fifo_name) as q:
            before = time.monotonic_ns()
            q.put("a")
            q.put("b")
            first, second = q.get_message(timeout=WAIT), q.get_message(timeout=WAIT)
    assert (first.item, first.producer, first.seq) == ("a", os.getpid(), 1)
    assert (second.item, second.producer, second.seq) == ("b", os.getpid(), 2)
    assert before <= first.put_ns <= second.put_ns <= time.monotonic_ns()


# -- full, empty and timeouts ------------------------------------------------------------------

def test_put_nowait_on_full_raises_full_which_is_queue_full(fifo_name):
    with shmfifo.serve(fifo_name, capacity=2):
        with shmfifo.attach(fifo_name) as q:
            q.put_nowait(1)
            q.put_nowait(2)
            with pytest.raises(shmfifo.Full) as raised:
                q.put_nowait(3)
            assert isinstance(raised.value, queue.Full)
            assert isinstance(raised.value, shmfifo.ShmfifoError)
            with pytest.raises(queue.Full):
                q.put(3, block=False)
            assert q.qsize() == 2
            assert [q.get_nowait(), q.get_nowait()] == [1, 2]


def test_get_nowait_on_empty_raises_empty_which_is_queue_empty(fifo_name):
    with shmfifo.serve(fifo_name, capacity=2):
        with shmfifo.attach(fifo_name) as q:
            with pytest.raises(shmfifo.Empty) as raised:
                q.get_nowait()
            assert isinstance(raised.value, queue.Empty)
            assert isinstance(raised.value, shmfifo.ShmfifoError)
            with pytest.raises(queue.Empty):
                q.get(block=False)
            with pytest.raises(queue.Empty):
                q.get(timeout=0)
            with pytest.raises(queue.Empty):
                q.get_many(3, block=False)


@pytest.mark.parametrize("timeout", [0.3, 0.7])
def test_put_with_timeout_on_full_waits_that_long_then_raises_full(fifo_name, timeout):
    with shmfifo.serve(fifo_name, capacity=1):
        with shmfifo.attach(fifo_name) as q:
            q.put("x")
            started = time.monotonic()
            with pytest.raises(shmfifo.Full):
                q.put("y", timeout=timeout)
            elapsed = time.monotonic() - started
            assert q.qsize() == 1
    assert timeout <= elapsed < timeout + 1.0


@pytest.mark.parametrize("timeout", [0.3, 0.7])
def test_get_with_timeout_on_empty_waits_that_long_then_raises_empty(fifo_name, timeout):
    with shmfifo.serve(fifo_name, capacity=1):
        with shmfifo.attach(fifo_name) as q:
            started = time.monotonic()
            with pytest.raises(shmfifo.Empty):
                q.get(timeout=timeout)
            elapsed = time.monotonic() - started
    assert timeout <= elapsed < timeout + 1.0


def test_get_many_with_timeout_on_empty_waits_then_raises_empty(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            started = time.monotonic()
            with pytest.raises(shmfifo.Empty):
                q.get_many(4, timeout=0.3)
            elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.3


def test_negative_timeout_is_a_value_error_as_in_queue(fifo_name):
    with shmfifo.serve(fifo_name, capacity=2):
        with shmfifo.attach(fifo_name) as q:
            with pytest.raises(ValueError, match="timeout"):
                q.put(1, timeout=-1)
            with pytest.raises(ValueError, match="timeout"):
                q.get(timeout=-1)
            assert q.qsize() == 0


def test_get_without_timeout_blocks_until_another_thread_puts(fifo_name):
    with shmfifo.serve(fifo_name, capacity=2):
        getter = Blocked(fifo_name, lambda h: h.get())          # timeout=None
        try:
            wait_until(lambda: clients_in_state(fifo_name, "blocked on empty"),
                       "the getter blocks on the empty FIFO")
            assert getter.thread.is_alive()
            with shmfifo.attach(fifo_name) as q:
                q.put("wake")
            assert getter.join() == "wake"
        finally:
            getter.stop()


def test_put_without_timeout_blocks_until_another_thread_gets(fifo_name):
    with shmfifo.serve(fifo_name, capacity=2):
        with shmfifo.attach(fifo_name) as q:
            q.put_many([1, 2])
            putter = Blocked(fifo_name, lambda h: h.put(3))     # timeout=None
            try:
                wait_until(lambda: clients_in_state(fifo_name, "blocked on full"),
                           "the putter blocks on the full FIFO")
                assert putter.thread.is_alive()
                assert q.get(timeout=WAIT) == 1
                putter.join()
                assert q.get_many(5, timeout=WAIT) == [2, 3]
            finally:
                putter.stop()


def test_request_stop_ends_a_blocked_get_with_stopped(fifo_name):
    with shmfifo.serve(fifo_name, capacity=2):
        getter = Blocked(fifo_name, lambda h: h.get())
        try:
            wait_until(lambda: clients_in_state(fifo_name, "blocked on empty"),
                       "the getter blocks")
            getter.handle.request_stop()
            with pytest.raises(shmfifo.Stopped):
                getter.join(timeout=2.0)
            with shmfifo.attach(fifo_name) as q:
                q.put("kept")                 # the stopped get took no token
                assert q.get(timeout=WAIT) == "kept"
        finally:
            getter.stop()


def test_qsize_empty_full(fifo_name):
    with shmfifo.serve(fifo_name, capacity=3):
        with shmfifo.attach(fifo_name) as q:
            assert q.capacity == 3
            assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
            q.put("a")
            assert (q.qsize(), q.empty(), q.full()) == (1, False, False)
            q.put_many(["b", "c"])
            assert (q.qsize(), q.empty(), q.full()) == (3, False, True)
            q.get()
            assert (q.qsize(), q.empty(), q.full()) == (2, False, False)


# -- batches -----------------------------------------------------------------------------------

def test_put_many_then_get_many_keeps_order_and_is_bounded_by_max_items(fifo_name):
    with shmfifo.serve(fifo_name, capacity=16, batch_max=5):
        with shmfifo.attach(fifo_name) as q:
            assert q.batch_max == 5
            q.put_many(range(12))
            assert q.qsize() == 12
            assert q.get_many(3) == [0, 1, 2]
            assert q.get_many(100) == [3, 4, 5, 6, 7]      # at most the FIFO's batch size
            assert q.get_many(1) == [8]
            assert q.get_many(5) == [9, 10, 11]            # fewer present: what there is
            assert q.empty()


def test_get_many_waits_for_the_first_item_only(fifo_name):
    with shmfifo.serve(fifo_name, capacity=8):
        with shmfifo.attach(fifo_name) as q:
            q.put("only")
            started = time.monotonic()
            assert q.get_many(8, timeout=5.0) == ["only"]
            assert time.monotonic() - started < 1.0


def test_blocked_get_many_returns_when_one_item_arrives(fifo_name):
    with shmfifo.serve(fifo_name, capacity=8):
        getter = Blocked(fifo_name, lambda h: h.get_many(8))
        try:
            wait_until(lambda: clients_in_state(fifo_name, "blocked on empty"),
                       "get_many blocks")
            with shmfifo.attach(fifo_name) as q:
                q.put("first")
            assert getter.join() == ["first"]
        finally:
            getter.stop()


def test_put_many_on_a_full_fifo_puts_what_fits_and_says_how_many(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            q.put("old")
            with pytest.raises(shmfifo.Full) as raised:
                q.put_many(["a", "b", "c", "d", "e"], timeout=0.2)
            assert raised.value.put == 3
            assert q.qsize() == 4
            assert q.get_many(10) == ["old", "a", "b", "c"]


def test_get_many_rejects_a_batch_below_one(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            q.put(1)
            for bad in (0, -1, 1.5):
                with pytest.raises(shmfifo.UsageError, match="max_items"):
                    q.get_many(bad)
            assert q.qsize() == 1


# -- item too large ----------------------------------------------------------------------------

def test_an_oversized_item_raises_item_too_large_naming_both_sizes_and_puts_nothing(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4, item_size=16):
        with shmfifo.attach(fifo_name) as q:
            q.put("fits")
            with pytest.raises(shmfifo.ItemTooLarge) as raised:
                q.put("x" * 17)
            error = raised.value
            assert isinstance(error, shmfifo.ShmfifoError) and isinstance(error, ValueError)
            assert (error.size, error.item_size, error.name) == (17, 16, fifo_name)
            assert "17 bytes" in str(error) and "16 bytes" in str(error)
            assert "--item-size 17" in str(error)
            # Its size is the encoded size: 9 two-byte characters are 18 bytes.
            with pytest.raises(shmfifo.ItemTooLarge, match="18 bytes"):
                q.put("é" * 9)
            with pytest.raises(shmfifo.ItemTooLarge):
                q.put_nowait(b"y" * 100)
            # One oversized item in a batch: nothing of the batch is put.
            with pytest.raises(shmfifo.ItemTooLarge):
                q.put_many(["a", "b", "z" * 40])
            assert q.qsize() == 1
            q.put("x" * 16)                   # exactly the item size fits
            assert q.get_many(4) == ["fits", "x" * 16]


# -- attaching and closing ---------------------------------------------------------------------

def test_handle_is_a_context_manager_and_close_frees_its_client_entry(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            assert [c.pid for c in status.snapshot(fifo_name).clients] == [os.getpid()]
            assert not q.closed
        assert q.closed
        assert status.snapshot(fifo_name).clients == ()
        q2 = shmfifo.attach(fifo_name)
        assert len(status.snapshot(fifo_name).clients) == 1
        q2.close()
        q2.close()                            # idempotent
        assert status.snapshot(fifo_name).clients == ()


def test_close_acknowledges_what_was_taken(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            q.put_many([1, 2])
            q.get()
            assert [c.in_flight for c in status.snapshot(fifo_name).clients] == [1]
        with shmfifo.attach(fifo_name) as q:
            assert q.get_many(4) == [2]       # nothing re-delivered


def test_attach_to_a_missing_fifo_raises_fifo_not_found(fifo_name):
    with pytest.raises(shmfifo.FifoNotFound) as raised:
        shmfifo.attach(fifo_name)
    error = raised.value
    assert isinstance(error, shmfifo.ShmfifoError)
    assert error.name == fifo_name
    assert str(error) == (f"no FIFO named {fifo_name!r} (start one with: shmfifo fifo --name "
                          f"{fifo_name})")


@pytest.mark.parametrize("bad", ["a/b", "", ".x", "-x", "a" * 300, "a b"])
def test_attach_with_a_bad_name_raises_bad_name(bad):
    with pytest.raises(shmfifo.BadName) as raised:
        shmfifo.attach(bad)
    assert isinstance(raised.value, shmfifo.UsageError)
    assert isinstance(raised.value, ValueError)
    assert "A-Z a-z 0-9" in str(raised.value)


def test_attach_after_the_daemon_stopped_raises_fifo_not_found(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4) as daemon:
        with shmfifo.attach(fifo_name) as q:
            q.put("left")
    assert daemon.report.discarded == 1
    assert daemon.report.unlinked
    with pytest.raises(shmfifo.FifoNotFound):
        shmfifo.attach(fifo_name)


def test_attach_to_a_kept_fifo_without_daemon_raises_daemon_not_running(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4, keep=True) as daemon:
        with shmfifo.attach(fifo_name) as q:
            q.put_many(["a", "b"])
    assert daemon.report.kept == 2
    with pytest.raises(shmfifo.DaemonNotRunning) as raised:
        shmfifo.attach(fifo_name)
    assert isinstance(raised.value, shmfifo.FifoNotFound)
    assert "not running" in str(raised.value) and fifo_name in str(raised.value)
    # A new daemon adopts the items; its stop removes the names (the fixture checks).
    with shmfifo.serve(fifo_name):
        with shmfifo.attach(fifo_name) as q:
            assert q.get_many(4, timeout=WAIT) == ["a", "b"]


def test_a_handle_held_across_a_daemon_stop_raises_fifo_closed(fifo_name):
    q = None
    try:
        with shmfifo.serve(fifo_name, capacity=4, detach_timeout=0.2):
            q = shmfifo.attach(fifo_name)
            q.put("a")
            assert q.get() == "a"
        assert q.state() == "stopped"
        with pytest.raises(shmfifo.FifoClosed):
            q.put("b")
        with pytest.raises(shmfifo.FifoClosed):
            q.get(timeout=1.0)
    finally:
        if q is not None:
            q.close()


def test_using_a_closed_handle_raises_an_error_saying_so(fifo_name):
    with shmfifo.serve(fifo_name, capacity=4):
        q = shmfifo.attach(fifo_name)
        q.close()
        for operation in (lambda: q.put(1), lambda: q.get_nowait(), q.qsize):
            with pytest.raises(shmfifo.ShmfifoError, match="closed"):
                operation()


def test_put_many_cut_short_by_a_stop_says_how_many_it_put(fifo_name):
    with shmfifo.serve(fifo_name, capacity=2):
        putter = Blocked(fifo_name, lambda h: h.put_many([1, 2, 3, 4]))
        try:
            wait_until(lambda: clients_in_state(fifo_name, "blocked on full"),
                       "put_many blocks after two items")
            putter.handle.request_stop()
            with pytest.raises(shmfifo.Stopped) as raised:
                putter.join()
            assert getattr(raised.value, "put", None) == 2
        finally:
            putter.stop()
            with shmfifo.attach(fifo_name) as q:
                q.get_many(2)


# -- across processes --------------------------------------------------------------------------

PUT_CHILD = """
import sys, shmfifo
with shmfifo.attach(sys.argv[1]) as q:
    q.put(b"raw"); q.put("é✓"); q.put(-2**70); q.put(True); q.put(None)
    q.put_many([{"k": [1, 2]}, [3, "x"], 7])
print("done", flush=True)
"""

GET_CHILD = """
import json, sys, shmfifo
with shmfifo.attach(sys.argv[1]) as q:
    print("attached", flush=True)
    for _ in range(int(sys.argv[2])):
        m = q.get_message(timeout=10)
        print(json.dumps([repr(m.item), type(m.item).__name__, m.producer, m.seq]), flush=True)
"""


def test_items_put_in_another_process_come_out_here(procs, fifo_name):
    with shmfifo.serve(fifo_name, capacity=16):
        child = procs.python(PUT_CHILD, fifo_name)
        assert child.wait() == 0, child.err
        with shmfifo.attach(fifo_name) as q:
            messages = [q.get_message(timeout=WAIT) for _ in range(8)]
            assert q.empty()
    assert [m.item for m in messages] == [b"raw", "é✓", -2 ** 70, True, None, {"k": [1, 2]},
                                          [3, "x"], 7]
    assert type(messages[3].item) is bool
    assert {m.producer for m in messages} == {child.pid}
    assert [m.seq for m in messages] == list(range(1, 9))


def test_items_put_here_come_out_in_another_process(procs, fifo_name):
    values = ["x", b"\x00y", 2 ** 65, False, ("t", 1), {"é": None}]
    with shmfifo.serve(fifo_name, capacity=16):
        child = procs.python(GET_CHILD, fifo_name, len(values))
        child.wait_for("attached")
        with shmfifo.attach(fifo_name) as q:
            for value in values:
                q.put(value)
        assert child.wait() == 0, child.err
    rows = [json.loads(line) for line in child.out[1:]]
    assert [r[0] for r in rows] == [repr(v) for v in values]
    assert [r[1] for r in rows] == [type(v).__name__ for v in values]
    assert {r[2] for r in rows} == {os.getpid()}
    assert [r[3] for r in rows] == list(range(1, len(values) + 1))


def test_get_without_timeout_blocks_until_another_process_puts(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "2")
    getter = Blocked(fifo_name, lambda h: h.get_message())     # timeout=None
    try:
        wait_until(lambda: clients_in_state(fifo_name, "blocked on empty"), "get blocks")
        putter = procs.spawn("producer", "--fifo", fifo_name, "item=late", "count=1")
        assert putter.wait() == 0
        message = getter.join()
        assert (message.item, message.producer, message.seq) == ("late", putter.pid, 1)
    finally:
        getter.stop()
        daemon.signal()
    assert daemon.wait() == 0


def test_a_library_handle_and_a_cli_daemon_share_the_fifo(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4", "--item-size", "32")
    try:
        with shmfifo.attach(fifo_name) as q:
            assert (q.capacity, q.item_size) == (4, 32)
            with pytest.raises(shmfifo.ItemTooLarge, match="32 bytes"):
                q.put("z" * 33)
            consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=2",
                                   "--json")
            q.put("one")
            q.put(2)
            assert consumer.wait() == 0
        records = [json.loads(line) for line in consumer.out]
        assert [(r["item"], r["type"], r["producer"], r["seq"]) for r in records] == \
            [("one", "str", os.getpid(), 1), (2, "int", os.getpid(), 2)]
    finally:
        daemon.signal()
    assert daemon.wait() == 0
