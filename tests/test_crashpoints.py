"""The crash points cost nothing when no crash is requested, and fire when one is; the C
fast path is built, and it and the Python path read each other's items."""

import subprocess
import sys

import pytest

from shmfifo import crashpoints
from shmfifo.ring import Fifo

from procs import REPO


def test_hot_paths_are_compiled_without_crash_points_when_unset():
    assert crashpoints.CRASH_AT is None
    for method in (Fifo._put_run, Fifo._take_run):
        code = method.__code__
        assert "crash" not in code.co_varnames, method
        assert not [c for c in code.co_consts if isinstance(c, str) and c.startswith(
            ("put.", "get."))], method
        assert code.co_filename.endswith("ring.py")
        assert method.__qualname__.startswith("Fifo.")


def test_hot_paths_keep_their_crash_points_when_set():
    code = ("from shmfifo.ring import Fifo\n"
            "print('crash' in Fifo._put_run.__code__.co_varnames,"
            " 'put.commit' in Fifo._put_run.__code__.co_consts)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={"SHMFIFO_CRASH_AT": "put.commit", "PATH": "/usr/bin"},
                         timeout=30)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_a_traceback_from_a_stripped_method_points_at_the_source_line():
    import inspect
    lines, first = inspect.getsourcelines(Fifo._put_run)
    assert Fifo._put_run.__code__.co_firstlineno in (first, first + 1)


def test_the_c_fast_path_is_built_and_used(fifo_name):
    """On these machines the accelerator must build; a silent fallback would leave the C path
    untested (and slow)."""
    import shmfifo
    from shmfifo import ring
    assert ring._fastpath is not None, "shmfifo._fastpath did not build"
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            assert q._fast is not None


def test_c_and_python_paths_read_each_other(fifo_name):
    import shmfifo
    items = [b"raw\x00bytes", "héllo ✓", "\udcff surrogate", 12345, None, {"k": [1]}, b"", ""]
    with shmfifo.serve(fifo_name, capacity=16, item_size=64):
        with shmfifo.attach(fifo_name) as fast, shmfifo.attach(fifo_name) as pure:
            pure._fast = None
            assert fast._fast is not None
            for writer, reader in ((fast, pure), (pure, fast), (fast, fast)):
                for item in items:
                    writer.put(item)
                got = [reader.get(timeout=5) for _ in items]
                assert got == items and [type(x) for x in got] == [type(x) for x in items]
            fast.put("m")
            message = pure.get_message(timeout=5)
            assert (message.item, message.producer, message.seq) == ("m", fast.pid, 17)
            pure.put(b"n")
            message = fast.get_message(timeout=5)
            assert (message.item, message.producer, message.seq) == (b"n", pure.pid, 9)


def test_c_and_python_batches_read_each_other(fifo_name):
    import shmfifo
    plain = [b"a", "b", b"", "é✓"] * 4
    mixed = [b"a", 7, "c", None, b"e"]
    with shmfifo.serve(fifo_name, capacity=32, item_size=64):
        with shmfifo.attach(fifo_name) as fast, shmfifo.attach(fifo_name) as pure:
            pure._fast = None
            for items in (plain, mixed):
                for writer, reader in ((fast, pure), (pure, fast), (fast, fast)):
                    writer.put_many(items)
                    got = []
                    while len(got) < len(items):
                        got += reader.get_many(len(items), timeout=5)
                    assert got == items and [type(x) for x in got] == [type(x) for x in items]
            with pytest.raises(shmfifo.ItemTooLarge):
                fast.put_many([b"ok", b"x" * 65])
            assert fast.qsize() == 0          # nothing of a refused batch is put
