"""Large items: memory in proportion to what a FIFO holds, items of many megabytes, the view
of an item where it lies (get_view), and the in-flight limit that bounds what consumers hold.
On the C and the pure-Python path, with real processes where a crash is involved."""

import os
import signal
import threading

import pytest

import shmfifo
from procs import (WAIT, assert_consistent, assert_slots_accounted, client_of, settle, status_of,
                   stop, wait_until)
from shmfifo import layout
from shmfifo.daemon import geometry_for

PATHS = {"c": {"SHMFIFO_PURE": "0"}, "pure": {"SHMFIFO_PURE": "1"}}
MiB = 1 << 20


@pytest.fixture(params=list(PATHS))
def env(request, monkeypatch):
    if request.param == "c" and shmfifo.accelerator() != "C":
        pytest.skip("the C accelerator is not built")
    return PATHS[request.param]


# -- memory ------------------------------------------------------------------------------------

def test_eight_items_of_a_megabyte_reserve_at_most_12_mib(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "8", "--item-size", "1M")
    st = status_of(fifo_name)
    assert st["reserved"] <= 12 * MiB, st["reserved"]
    assert os.stat(f"/dev/shm/shmfifo.{fifo_name}").st_size == st["reserved"]
    stop(daemon)


@pytest.mark.parametrize("capacity,item_size", [(8, MiB), (32, 128), (1024, 64), (2, 64 * MiB),
                                                (1, 1 << 30)])
def test_the_reservation_formula(capacity, item_size):
    """README, Memory: (capacity + in_flight) slots of the item size plus a 32-byte header,
    rounded up to 64 bytes, plus a small table; in_flight within a quarter of the queue's
    bytes (or 1 MiB)."""
    g = geometry_for(capacity=capacity, item_size=item_size)
    slot = -(-(item_size + 32) // 64) * 64
    assert g.slot_size == slot
    assert g.in_flight == max(1, min(32 * g.batch_max, max(capacity * slot // 4, MiB) // slot))
    pool = (capacity + g.in_flight) * slot
    assert pool <= g.total_size <= pool + 64 * 1024 + 2 * 8 * (capacity + g.in_flight) + 128
    if item_size >= MiB:        # the queue, and one more slot or a quarter more at most
        assert g.total_size <= capacity * slot + max(slot, capacity * slot // 4) + 64 * 1024


def test_item_sizes_of_a_gigabyte_are_accepted(procs):
    assert geometry_for(capacity=1, item_size="1G").item_size == 1 << 30
    assert geometry_for(capacity=1, item_size="2G").item_size == 2 << 30
    doctor = procs.spawn("doctor", "--size", "1", "--item-size", "1G")
    assert doctor.wait() == 0, doctor.out + doctor.err
    assert any("needs 2.0 GiB" in line for line in doctor.out), doctor.out


def test_a_64_mib_item_crosses_between_processes(procs, fifo_name, env):
    daemon = procs.daemon(fifo_name, "--size", "2", "--item-size", "65M")
    code = ("import hashlib, shmfifo, sys\n"
            "q = shmfifo.attach(sys.argv[1])\n"
            "if sys.argv[2] == 'put':\n"
            "    q.put(bytes(range(256)) * (64 << 12))\n"
            "else:\n"
            "    item = q.get(timeout=30)\n"
            "    print(type(item).__name__, len(item), hashlib.sha256(item).hexdigest())\n")
    getter = procs.python(code, fifo_name, "get", env=env)
    putter = procs.python(code, fifo_name, "put", env=env)
    assert putter.wait(60) == 0, putter.err
    assert getter.wait(60) == 0, getter.err
    import hashlib
    expected = hashlib.sha256(bytes(range(256)) * (64 << 12)).hexdigest()
    assert getter.out == [f"bytes {64 * MiB} {expected}"]
    assert_consistent(settle(fifo_name), expected_items=0)
    stop(daemon)


# -- get_view ----------------------------------------------------------------------------------

@pytest.fixture
def fifo(fifo_name, env, monkeypatch):
    """A FIFO served in this process, attached on the path of ``env``."""
    monkeypatch.setattr("shmfifo.ring.USE_FASTPATH",
                        env["SHMFIFO_PURE"] == "0" and shmfifo.ring._fastpath is not None)
    with shmfifo.serve(fifo_name, capacity=4, item_size=4096):
        with shmfifo.attach(fifo_name) as q:
            yield q


def test_a_view_is_the_item_where_it_lies_and_dies_with_its_block(fifo):
    fifo.put(b"hello")
    fifo.put("héllo")
    with fifo.get_view() as view:
        assert view.readonly and bytes(view) == b"hello"
        kept = bytes(view[1:3])
    assert kept == b"el"
    with pytest.raises(ValueError):
        view[0]                            # released: unusable after the block
    with fifo.get_view() as view:
        assert bytes(view) == "héllo".encode()
    st = status_of(fifo.name)
    assert (st["items"], st["in_flight"]) == (0, 0)      # leaving the block acknowledged it


def test_no_other_get_inside_a_view_block(fifo):
    fifo.put_many([b"a", b"b"])
    with fifo.get_view() as view:
        with pytest.raises(shmfifo.UsageError):
            fifo.get()
        with pytest.raises(shmfifo.UsageError):
            fifo.ack()
        assert bytes(view) == b"a"
    assert fifo.get() == b"b"


def test_a_view_still_exported_when_its_block_ends_is_not_given_back(fifo):
    np = pytest.importorskip("numpy")
    fifo.put(np.arange(4, dtype="u1").tobytes())
    with pytest.raises(shmfifo.ViewInUse):
        with fifo.get_view() as view:
            array = np.frombuffer(view, dtype="u1")
    assert array.tolist() == [0, 1, 2, 3]
    assert status_of(fifo.name)["in_flight"] == 1        # not acknowledged under the array
    del array
    fifo.put(b"next")
    assert fifo.get() == b"next"                          # which acknowledges it
    assert status_of(fifo.name)["in_flight"] == 1


def test_numpy_reads_a_view_without_a_copy(fifo):
    np = pytest.importorskip("numpy")
    data = np.arange(512, dtype="<f8")
    fifo.put(data.tobytes())
    with fifo.get_view() as view:
        array = np.frombuffer(view, dtype="<f8")
        total = float(array.sum())
        assert not array.flags.owndata and not array.flags.writeable
        del array
    assert total == float(data.sum())


VIEW_BLOCKS = {   # the block a holder dies in: (code, how many items it holds)
    "get_view": ("with q.get_view() as view:\n    views = [view]\n", 1),
    "get_many_views": ("with q.get_many_views(2) as views:\n", 2),
}


@pytest.mark.parametrize("block", list(VIEW_BLOCKS))
def test_a_crash_inside_a_view_block_redelivers_its_items(procs, fifo_name, env, tmp_path,
                                                          block):
    code, held = VIEW_BLOCKS[block]
    daemon = procs.daemon(fifo_name, "--size", "4")
    items = [b"one", b"two", b"three"]
    with shmfifo.attach(fifo_name) as q:
        q.put_many(items)
    inside = tmp_path / "inside"
    holder = procs.python(
        "import shmfifo, sys, time\n"
        "q = shmfifo.attach(sys.argv[1])\n" + code +
        "    open(sys.argv[2], 'w').write(' '.join(bytes(v).decode() for v in views))\n"
        "    time.sleep(60)\n", fifo_name, str(inside), env=env)
    wait_until(lambda: inside.exists() and inside.read_text(), what="the views")
    assert inside.read_text() == " ".join(item.decode() for item in items[:held])
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    daemon.wait_for(r"recovery \d+ done")
    st = settle(fifo_name)
    assert (st["items"], st["requeued"]) == (3, held)
    with shmfifo.attach(fifo_name) as q:
        assert q.get_many(3, timeout=WAIT) == items
    stop(daemon)


def test_get_many_views_lends_a_batch_and_acknowledges_it_at_the_end(fifo):
    fifo.put_many([b"a", b"bb", "ccc"])
    with fifo.get_many_views(8) as views:
        assert [bytes(v) for v in views] == [b"a", b"bb", b"ccc"]
        assert all(v.readonly for v in views)
        assert status_of(fifo.name)["in_flight"] == 3
        with pytest.raises(shmfifo.UsageError):
            fifo.get()
    with pytest.raises(ValueError):
        views[0][0]                        # released: unusable after the block
    st = status_of(fifo.name)
    assert (st["items"], st["in_flight"]) == (0, 0)
    assert_slots_accounted(fifo.name)


def test_get_many_views_keeps_the_batch_when_one_view_is_still_in_use(fifo):
    fifo.put_many([b"keep", b"drop"])
    with pytest.raises(shmfifo.ViewInUse):
        with fifo.get_many_views(2) as views:
            kept = views[0][1:3]
    assert bytes(kept) == b"ee"            # its slot was not given back
    assert status_of(fifo.name)["in_flight"] == 2
    del kept
    fifo.ack()
    assert status_of(fifo.name)["in_flight"] == 0


# -- put_view ----------------------------------------------------------------------------------

def test_put_view_writes_an_item_in_place(fifo):
    with fifo.put_view(5) as buf:
        assert not buf.readonly and len(buf) == 5
        buf[:] = b"hello"
    with pytest.raises(ValueError):
        buf[0]                             # released: unusable after the block
    fifo.put(b"then")
    message = fifo.get_message()
    assert (message.item, message.producer, message.seq) == (b"hello", os.getpid(), 1)
    assert fifo.get_message().seq == 2     # one sequence with put
    with fifo.put_view(0):
        pass
    assert fifo.get() == b""
    assert_slots_accounted(fifo.name)


def test_numpy_writes_into_a_put_view_and_reads_from_a_get_view(fifo):
    np = pytest.importorskip("numpy")
    with fifo.put_view(8 * 64) as buf:
        frame = np.frombuffer(buf, dtype="<f8")
        frame[:] = np.arange(64)
        del frame
    with fifo.get_view() as view:
        got = np.frombuffer(view, dtype="<f8")
        assert got.tolist() == list(range(64))
        del got


def test_an_exception_in_a_put_view_block_puts_nothing(fifo):
    for _ in range(3 * (fifo.capacity + 8)):        # more than the pool: no slot leaks
        with pytest.raises(KeyError):
            with fifo.put_view(3) as buf:
                buf[:] = b"abc"
                raise KeyError("not this one")
    st = status_of(fifo.name)
    assert (st["items"], st["writing"], st["semaphores"]["empty"]) == (0, 0, fifo.capacity)
    fifo.put_many([b"%d" % k for k in range(fifo.capacity)], timeout=0)   # every slot there
    assert fifo.get_many(fifo.capacity) == [b"%d" % k for k in range(fifo.capacity)]
    assert_slots_accounted(fifo.name)


def test_a_put_view_on_a_full_fifo_raises_full_and_gives_the_slot_back(fifo):
    fifo.put_many([b"x"] * fifo.capacity)
    with pytest.raises(shmfifo.Full):
        with fifo.put_view(1, timeout=0.1) as buf:
            buf[0] = 1
    st = status_of(fifo.name)
    assert (st["items"], st["writing"], st["semaphores"]["empty"]) == (fifo.capacity, 0, 0)
    assert_slots_accounted(fifo.name)


def test_no_get_inside_a_put_view_block_but_puts_are_fine(fifo):
    fifo.put(b"a")
    with fifo.put_view(1) as buf:
        with pytest.raises(shmfifo.UsageError):
            fifo.get()
        with pytest.raises(shmfifo.UsageError):
            fifo.ack()
        with pytest.raises(shmfifo.UsageError):
            with fifo.get_view():
                pass
        with pytest.raises(shmfifo.UsageError):
            with fifo.put_view(1):
                pass
        fifo.put(b"b")
        buf[0] = ord("c")
    assert fifo.get_many(3) == [b"a", b"b", b"c"]


def test_a_put_view_still_exported_puts_nothing_and_the_slot_comes_back(fifo):
    np = pytest.importorskip("numpy")
    with pytest.raises(shmfifo.ViewInUse, match="nothing is put"):
        with fifo.put_view(4) as buf:
            array = np.frombuffer(buf, dtype="u1")
    assert status_of(fifo.name)["writing"] == 1          # lent still, under the array
    del array
    fifo.put(b"next")
    assert fifo.get() == b"next"                          # which gives the slot back
    st = status_of(fifo.name)
    assert (st["items"], st["writing"], st["semaphores"]["empty"]) == (0, 0, fifo.capacity)
    fifo.ack()
    assert_slots_accounted(fifo.name)


def test_put_view_takes_any_integer_size(fifo):
    np = pytest.importorskip("numpy")
    with fifo.put_view(np.prod(np.array([2, 2]))) as buf:      # a numpy integer
        buf[:] = b"abcd"
    assert fifo.get() == b"abcd"


def test_the_blocks_own_exception_wins_over_a_view_still_in_use(fifo):
    np = pytest.importorskip("numpy")
    with pytest.raises(KeyboardInterrupt):
        with fifo.put_view(4) as buf:
            array = np.frombuffer(buf, dtype="u1")
            raise KeyboardInterrupt
    del array
    assert fifo.qsize() == 0


@pytest.mark.parametrize("nbytes", [-1, 1.5, "3", True])
def test_put_view_sizes_are_checked(fifo, nbytes):
    with pytest.raises(shmfifo.UsageError):
        with fifo.put_view(nbytes):
            pass


def test_put_view_larger_than_the_item_size(fifo):
    with pytest.raises(shmfifo.ItemTooLarge):
        with fifo.put_view(4097):
            pass


def _holding(procs, q, env):
    """A consumer process that took one item of q's FIFO and holds it unacknowledged."""
    q.put(b"held")
    holder = procs.python("import shmfifo, sys, time\n"
                          "q = shmfifo.attach(sys.argv[1])\n"
                          "print(q.get(timeout=30), flush=True)\n"
                          "time.sleep(60)\n", q.name, env=env)
    holder.wait_for("held")
    return holder


def test_put_view_is_not_held_by_the_in_flight_limit(procs, fifo_name, env):
    """The lent slot is no loan. With --in-flight 1: a consumer waiting on the empty FIFO
    holds the only loans token while it waits, and a put_view still goes in, and reaches
    it; a consumer holding the only item in flight does not stop a put_view either."""
    daemon = procs.daemon(fifo_name, "--size", "4", "--in-flight", "1")
    with shmfifo.attach(fifo_name) as q:
        got = []
        waiter = threading.Thread(target=lambda: got.append(q.get(timeout=WAIT)))
        waiter.start()                       # (its own client: another thread)
        wait_until(lambda: [c for c in status_of(fifo_name)["clients"]
                            if c["state"] == "blocked on empty"], what="the waiter")
        assert status_of(fifo_name)["semaphores"]["loans"] == 0
        with q.put_view(5, timeout=WAIT) as buf:
            buf[:] = b"frame"
        waiter.join(WAIT)
        assert got == [b"frame"]             # the waiter holds it, unacknowledged
        with q.put_view(4, timeout=WAIT) as buf:
            buf[:] = b"next"
        assert q.qsize() == 1
    assert_consistent(settle(fifo_name), expected_items=1)
    assert_slots_accounted(fifo_name)
    stop(daemon)


def test_put_view_waits_for_room_on_entering(fifo):
    fifo.put_many([b"x"] * fifo.capacity)
    entered = []
    with pytest.raises(shmfifo.Full):
        with fifo.put_view(1, timeout=0.1) as buf:
            entered.append(buf)
    assert entered == []                     # Full before the block: nothing to write
    taker = threading.Timer(0.2, lambda: fifo_other_get(fifo.name))
    taker.start()
    with fifo.put_view(1, timeout=WAIT) as buf:   # room comes when the other takes one
        buf[:] = b"y"
    taker.join()
    assert fifo.get_many(fifo.capacity) == [b"x"] * (fifo.capacity - 1) + [b"y"]
    assert_slots_accounted(fifo.name)


def fifo_other_get(name):
    with shmfifo.attach(name) as other:
        assert other.get(timeout=WAIT) == b"x"


def test_closing_the_handle_inside_a_put_view_block_puts_nothing(fifo_name, env, monkeypatch):
    monkeypatch.setattr("shmfifo.ring.USE_FASTPATH",
                        env["SHMFIFO_PURE"] == "0" and shmfifo.ring._fastpath is not None)
    with shmfifo.serve(fifo_name, capacity=4, item_size=64):
        q = shmfifo.attach(fifo_name)
        with pytest.raises(shmfifo.HandleClosed):
            with q.put_view(5) as buf:
                q.close()
                with pytest.raises(ValueError):
                    buf[:] = b"late!"        # released by close: it writes nowhere
        st = status_of(fifo_name)
        assert (st["items"], st["writing"], st["semaphores"]["empty"]) == (0, 0, 4)
        assert_slots_accounted(fifo_name)


def test_a_recovery_while_a_put_view_is_open_keeps_its_slot_lent(procs, fifo_name, env):
    """Another client dies while this one writes in place: the recovery counts the lent slot
    as this client's (not free), and the block then puts its item."""
    daemon = procs.daemon(fifo_name, "--size", "4", "--in-flight", "2")
    with shmfifo.attach(fifo_name) as q:
        holder = _holding(procs, q, env)
        with q.put_view(5, timeout=WAIT) as buf:
            holder.signal(signal.SIGKILL)
            holder.wait()
            daemon.wait_for(r"recovery \d+ done")
            assert_slots_accounted(fifo_name)      # the lent slot is not in the free list
            st = status_of(fifo_name)
            assert (st["items"], st["in_flight"], st["writing"]) == (1, 0, 1)
            assert st["semaphores"]["loans"] == 2                  # the lent slot is no loan
            assert st["semaphores"]["empty"] == 2                  # its room stays reserved
            buf[:] = b"mine!"
        assert_slots_accounted(fifo_name)
        assert q.get(timeout=WAIT) == b"held"
        assert q.get(timeout=WAIT) == b"mine!"
    assert_consistent(settle(fifo_name), expected_items=0)
    stop(daemon)


@pytest.mark.timeout(60)
def test_a_view_block_collected_inside_a_lock_section_does_not_hang(fifo):
    """A generator left inside a put_view or get_view block, in a reference cycle, may be
    finalized by the garbage collector at any allocation, also inside this thread's own put
    lock section: giving its slot back there would wait for the lock this thread holds.
    It is left for the thread's next operation instead, which gives it back."""
    import gc

    def writer():
        with fifo.put_view(8) as buf:
            buf[:] = b"12345678"
            yield

    def reader():
        with fifo.get_view():
            yield

    for n in range(1, 200):
        fifo.put(b"r")
        g = (writer, reader)[n % 2]()
        next(g)
        cycle = [g]
        cycle.append(cycle)              # only the collector frees it
        del g, cycle
        gc.set_threshold(n // 2 % 40 + 1)   # collect at about the n-th allocation
        try:
            fifo.put(n)                  # an int: the Python put path, its lock section
        finally:
            gc.set_threshold(700)
        gc.collect()
        while True:
            try:
                fifo.get_nowait()
            except shmfifo.Empty:
                break
    fifo.ack()
    st = status_of(fifo.name)
    assert (st["items"], st["in_flight"], st["writing"]) == (0, 0, 0)
    assert_slots_accounted(fifo.name)


@pytest.mark.parametrize("block", ["get_view", "put_view"])
def test_a_child_forked_inside_a_view_block_leaves_the_parents_slot_alone(fifo, block):
    """The child inherits the block but not the client: leaving it there raises
    HandleClosed and acknowledges, puts or gives back nothing of the parent's."""
    fifo.put(b"item")
    view_block = fifo.get_view() if block == "get_view" else fifo.put_view(4)
    view = view_block.__enter__()
    before = status_of(fifo.name)
    pid = os.fork()
    if pid == 0:                                  # the child
        try:
            view_block.__exit__(None, None, None)
            os._exit(1)
        except shmfifo.HandleClosed:
            os._exit(0)
        except BaseException:
            os._exit(2)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    after = status_of(fifo.name)
    keys = ("items", "in_flight", "writing", "semaphores")
    assert [after[k] for k in keys] == [before[k] for k in keys]
    if block == "put_view":
        view[:] = b"mine"
    del view
    view_block.__exit__(None, None, None)         # the parent's own end of the block
    if block == "put_view":
        assert fifo.get_many(2) == [b"item", b"mine"]
    else:
        st = status_of(fifo.name)
        assert (st["items"], st["in_flight"]) == (0, 0)     # acknowledged by the parent
    assert_slots_accounted(fifo.name)


def test_a_put_view_when_the_fifo_stops_gives_its_slot_and_room_back(procs, fifo_name, env):
    """The daemon starts draining while a block is open: leaving it cannot put (FifoClosed)
    and gives back the slot and the room at once, so the drain is not left one slot short."""
    daemon = procs.daemon(fifo_name, "--size", "4", "--drain-timeout", "30")
    with shmfifo.attach(fifo_name) as q:
        q.put(b"queued")
        with pytest.raises(shmfifo.FifoClosed):
            with q.put_view(3) as buf:
                daemon.signal()
                wait_until(lambda: status_of(fifo_name)["daemon"] == "draining",
                           what="the drain")
                buf[:] = b"new"
        st = status_of(fifo_name)
        assert (st["items"], st["writing"], st["semaphores"]["empty"]) == (1, 0, 3)
        assert_slots_accounted(fifo_name)
        assert q.get(timeout=WAIT) == b"queued"
    assert daemon.wait() == 0


PUT_VIEW_STEPS = {   # step: is the item in the FIFO afterwards?
    "putview.lock": False, "putview.lent": False, "putview.popped": False,
    "putview.publish": False, "putview.written": False,
    "putview.commit": True, "putview.cleared": True, "putview.done": True,
}


@pytest.mark.parametrize("step", list(PUT_VIEW_STEPS))
def test_a_crash_at_each_step_of_a_put_view(procs, fifo_name, env, step):
    """SIGKILL at each step of put_view (with the in-flight limit binding, so the loans
    count too): the item is in the FIFO exactly when the step is past the commit, the slot
    is back in the pool either way, and the FIFO goes on."""
    daemon = procs.daemon(fifo_name, "--size", "4", "--in-flight", "2")
    victim = procs.python(
        "import shmfifo, sys\n"
        "q = shmfifo.attach(sys.argv[1])\n"
        "q.put(b'before')\n"
        "with q.put_view(5) as buf:\n"
        "    buf[:] = b'VIEW!'\n"
        "q.put(b'after')\n", fifo_name, env={**env, "SHMFIFO_CRASH_AT": step})
    assert victim.wait() == -signal.SIGKILL
    daemon.wait_for(r"recovery \d+ done|exited holding nothing")
    st = settle(fifo_name)
    expected = [b"before"] + ([b"VIEW!"] if PUT_VIEW_STEPS[step] else [])
    assert_consistent(st, expected_items=len(expected))
    assert_slots_accounted(fifo_name)
    with shmfifo.attach(fifo_name) as q:
        assert q.get_many(4, timeout=WAIT) == expected
        q.put_many([b"%d" % k for k in range(4)], timeout=WAIT)   # the pool is whole
        assert [q.get(timeout=WAIT) for _ in range(4)] == [b"%d" % k for k in range(4)]
    assert_consistent(settle(fifo_name), expected_items=0)
    stop(daemon)


# -- the in-flight limit -----------------------------------------------------------------------

def test_consumers_wait_for_each_other_at_the_in_flight_limit(procs, fifo_name, env, tmp_path):
    """With --in-flight 1, a second consumer waits (shown as such) until the first one
    acknowledges; the queue's room is given back at each take all the same."""
    daemon = procs.daemon(fifo_name, "--size", "4", "--in-flight", "1")
    with shmfifo.attach(fifo_name) as q:
        q.put_many([1, 2, 3])
        assert q.get(timeout=WAIT) == 1                     # this handle holds one now
        assert status_of(fifo_name)["semaphores"]["loans"] == 0
        q.put_many([4, 5])                                 # room came back at the take
        other = procs.python("import shmfifo, sys\n"
                             "q = shmfifo.attach(sys.argv[1])\n"
                             "print(q.get(timeout=30), flush=True)\n", fifo_name, env=env)
        wait_until(lambda: client_of(status_of(fifo_name), other.pid) and
                   client_of(status_of(fifo_name), other.pid)["state"] ==
                   "blocked on in-flight limit", what="the other consumer to wait")
        q.ack()
        assert other.wait() == 0 and other.out == ["2"]
    assert_consistent(settle(fifo_name), expected_items=3)
    stop(daemon)


def test_a_slice_kept_beyond_the_block_keeps_the_item(fifo):
    fifo.put(b"abcdef")
    with pytest.raises(shmfifo.ViewInUse):
        with fifo.get_view() as view:
            kept = view[1:3]
    assert bytes(kept) == b"bc"           # still the item's bytes: its slot was not given back
    assert status_of(fifo.name)["in_flight"] == 1
    del kept


def test_asyncio_waits_at_the_in_flight_limit_without_spinning(fifo_name, env, monkeypatch):
    """aget on a FIFO whose in-flight limit is held by another handle waits for the
    acknowledgement (its watcher waits for a loan before the item) and then takes it."""
    import asyncio
    import resource
    monkeypatch.setattr("shmfifo.ring.USE_FASTPATH",
                        env["SHMFIFO_PURE"] == "0" and shmfifo.ring._fastpath is not None)
    with shmfifo.serve(fifo_name, capacity=4, in_flight=1):
        with shmfifo.attach(fifo_name) as holder, shmfifo.attach(fifo_name) as q:
            holder.put_many([1, 2])
            assert holder.get() == 1                # the one loan is out

            async def main():
                cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
                # (in this thread: an acknowledgement is the taking thread's)
                asyncio.get_running_loop().call_later(0.5, holder.ack)
                got = await asyncio.wait_for(q.aget(), WAIT)
                return got, resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu

            got, cpu = asyncio.run(main())
            assert got == 2
            assert cpu < 0.3, cpu                  # half a second of waiting, not of spinning


# -- polling before sleeping -------------------------------------------------------------------

def test_a_polling_get_takes_what_arrives_and_keeps_its_timeout(fifo_name, env, monkeypatch):
    """spin_us polls for items before sleeping: what arrives while it polls is taken, and a
    timeout shorter than the poll is still the bound; get_nowait never polls."""
    import threading
    import time
    monkeypatch.setattr("shmfifo.ring.USE_FASTPATH",
                        env["SHMFIFO_PURE"] == "0" and shmfifo.ring._fastpath is not None)
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name, spin_us=200_000) as q, shmfifo.attach(fifo_name) as p:
            threading.Timer(0.05, p.put, args=(b"late",)).start()
            assert q.get() == b"late"               # arrived during the poll
            started = time.monotonic()
            with pytest.raises(shmfifo.Empty):
                q.get(timeout=0.02)
            assert time.monotonic() - started < 0.15
            started = time.monotonic()
            with pytest.raises(shmfifo.Empty):
                q.get_nowait()
            assert time.monotonic() - started < 0.05
            p.put_many([b"a", b"b"])
            assert q.get_many(2, timeout=1) == [b"a", b"b"]
            p.put(b"m")
            assert q.get_message(timeout=1).item == b"m"


@pytest.mark.parametrize("bad", [-1, 2e6, "fast"])
def test_spin_us_must_be_a_bound(fifo_name, bad):
    with shmfifo.serve(fifo_name, capacity=4):
        with pytest.raises(shmfifo.UsageError, match="spin_us"):
            shmfifo.attach(fifo_name, spin_us=bad)
