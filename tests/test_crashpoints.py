"""The Python hot paths lose their crash points when they are the hot paths and no crash is
requested, and keep them when one is; the C fast path is built, and it and the Python path
read each other's items."""

import subprocess
import sys

import pytest

from shmfifo import crashpoints

from procs import REPO


def _crash_points_of_hot_paths(**env):
    """In a fresh interpreter with `env`: for Client._put_run and _take_run, whether each still
    has its crash points (the local and the step names), and whether its code still names
    ring.py and the line its source starts on (so tracebacks point at the real source)."""
    code = ("import inspect\n"
            "from shmfifo.ring import Client\n"
            "for m in (Client._put_run, Client._take_run):\n"
            "    c = m.__code__\n"
            "    steps = [k for k in c.co_consts if isinstance(k, str)"
            " and k.startswith(('put.', 'get.'))]\n"
            "    first = inspect.getsourcelines(m)[1]\n"
            "    print('crash' in c.co_varnames, bool(steps), c.co_filename.endswith('ring.py'),"
            " c.co_firstlineno in (first, first + 1), m.__qualname__.startswith('Client.'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={"PATH": "/usr/bin", **env}, timeout=30)
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()]


def test_the_python_hot_paths_are_compiled_without_crash_points_when_pure_and_unset():
    assert _crash_points_of_hot_paths(SHMFIFO_PURE="1") == [["False", "False", "True", "True",
                                                             "True"]] * 2


def test_the_python_paths_keep_their_crash_points_when_a_crash_is_requested():
    for env in ({"SHMFIFO_PURE": "1"}, {}):
        assert _crash_points_of_hot_paths(SHMFIFO_CRASH_AT="put.commit", **env) == [
            ["True", "True", "True", "True", "True"]] * 2


def test_with_the_c_fast_path_the_python_paths_are_not_recompiled():
    """With the fast path, the Python put/get run only for waits and other item types; their
    crash points stay (a local test each) to spare every client the recompilation at import."""
    assert crashpoints.CRASH_AT is None
    assert _crash_points_of_hot_paths() == [["True", "True", "True", "True", "True"]] * 2


def test_the_c_fast_path_is_built_and_used(fifo_name):
    """On these machines the accelerator must build; a silent fallback would leave the C path
    untested (and slow)."""
    import shmfifo
    from shmfifo import ring
    assert ring._fastpath is not None, "shmfifo._fastpath did not build"
    with shmfifo.serve(fifo_name, capacity=4):
        with shmfifo.attach(fifo_name) as q:
            assert q._client()._fast is not None


def test_c_and_python_paths_read_each_other(fifo_name):
    import shmfifo
    items = [b"raw\x00bytes", "héllo ✓", "\udcff surrogate", 12345, None, {"k": [1]}, b"", ""]
    with shmfifo.serve(fifo_name, capacity=16, item_size=64):
        with shmfifo.attach(fifo_name) as fast, shmfifo.attach(fifo_name) as pure:
            pure._client()._fast = None
            assert fast._client()._fast is not None
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
            pure._client()._fast = None
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
