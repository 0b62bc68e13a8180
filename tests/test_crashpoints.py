"""The crash points cost nothing when no crash is requested, and fire when one is."""

import subprocess
import sys

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
