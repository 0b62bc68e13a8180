"""Die at an exact step, for the crash-window tests only.

``SHMFIFO_CRASH_AT=put.commit`` makes the process SIGKILL itself the first time it reaches
the step named ``put.commit``; ``SHMFIFO_CRASH_AT=put.commit:3`` the third time. The variable
is read once, at import. When it is unset and the Python put and get are the hot paths (no C
fast path), they are compiled without their crash points (:func:`compiled_out`), so they cost
nothing; elsewhere a step costs one test of a local variable (``if crash: crash("...")``).

Steps are named ``put.*``, ``get.*``, ``ack``, ``consumer.handled`` and ``recovery.*``; the
tests list them all (tests/test_crash_windows.py).
"""

import ast
import inspect
import os
import signal
import textwrap

__all__ = ["hook", "compiled_out", "CRASH_AT"]

CRASH_AT = os.environ.get("SHMFIFO_CRASH_AT") or None
# SHMFIFO_CRASH_SIGNAL=STOP stops the process at the step instead (a client frozen holding
# what it holds there, as SIGSTOP or a debugger leaves it); the default is KILL.
CRASH_SIGNAL = getattr(signal, "SIG" + os.environ.get("SHMFIFO_CRASH_SIGNAL", "KILL"),
                       signal.SIGKILL)


def hook():
    """The crash function for this process, or None when no crash is requested."""
    if CRASH_AT is None:
        return None
    try:
        # One countdown for the process: a step counts once whether the C fast path or the
        # Python path reaches it (a call that falls back to Python must not count apart).
        from . import _fastpath
        return _fastpath.crash
    except ImportError:
        pass
    step, _, nth = CRASH_AT.partition(":")
    remaining = [int(nth) if nth else 1]

    def crash(name):
        if name == step:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), CRASH_SIGNAL)

    return crash


def compiled_out(func):
    """Decorator for hot paths: unless a crash is requested, return ``func`` recompiled
    without its crash points, so that they cost nothing at all.

    A crash point is a statement ``if crash: crash("step")`` where ``crash`` is a local bound
    to :func:`hook`'s result; the local's assignment goes too. Line numbers and the file name
    are kept, so tracebacks point at the real source. If the source cannot be read, ``func``
    is returned as it is (the checks then cost a local test each).
    """
    if CRASH_AT is not None:
        return func
    try:
        lines, first = inspect.getsourcelines(func)
        filename = inspect.getsourcefile(func)
    except (OSError, TypeError):
        return func
    tree = ast.parse(textwrap.dedent("".join(lines)))

    class _Strip(ast.NodeTransformer):
        def visit_If(self, node):
            self.generic_visit(node)
            if isinstance(node.test, ast.Name) and node.test.id == "crash" and not node.orelse:
                return None
            return node

        def visit_Assign(self, node):
            if any(isinstance(t, ast.Name) and t.id == "crash" for t in node.targets):
                return None
            return node

    tree = ast.fix_missing_locations(_Strip().visit(tree))
    tree.body[0].decorator_list = []
    ast.increment_lineno(tree, first - 1)
    namespace = {}
    exec(compile(tree, filename, "exec"), func.__globals__, namespace)
    stripped = namespace[func.__name__]
    stripped.__qualname__ = func.__qualname__
    stripped.__module__ = func.__module__
    return stripped
