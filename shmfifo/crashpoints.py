"""Die at an exact step, for the crash-window tests only.

``SHMFIFO_CRASH_AT=put.commit`` makes the process SIGKILL itself the first time it reaches
the step named ``put.commit``; ``SHMFIFO_CRASH_AT=put.commit:3`` the third time. The variable
is read once, at import. When it is unset :func:`hook` returns None, and every step costs one
test of a local variable (``if crash: crash("...")``), which is not measurable next to the
semaphore calls around it.

Steps are named ``put.*``, ``get.*``, ``ack``, ``consumer.handled`` and ``recovery.*``; the
tests list them all (tests/test_crash_windows.py).
"""

import os
import signal

__all__ = ["hook", "CRASH_AT"]

CRASH_AT = os.environ.get("SHMFIFO_CRASH_AT") or None


def hook():
    """The crash function for this process, or None when no crash is requested."""
    if CRASH_AT is None:
        return None
    step, _, nth = CRASH_AT.partition(":")
    remaining = [int(nth) if nth else 1]

    def crash(name):
        if name == step:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return crash
