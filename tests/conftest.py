"""Fixtures shared by every test: a unique FIFO name per test, real processes that are always
reaped, and a check that nothing of the test's FIFOs is left in /dev/shm."""

import itertools
import os

import pytest

from procs import Procs
from shmfifo import names
from shmfifo.segment import unlink_names

_counter = itertools.count()


def _leftovers(name):
    found = []
    for entry in os.listdir(names.SHM_DIR):
        if entry == names.PREFIX + name or entry.startswith("sem." + names.PREFIX + name + "."):
            found.append(entry)
    return found


@pytest.fixture
def procs():
    group = Procs()
    yield group
    group.reap()


@pytest.fixture
def fifo_names(procs):
    """A factory of unique FIFO names; after the test (and after its processes are reaped),
    fails if any of them is left in /dev/shm, then removes them anyway."""
    made = []

    def make(tag="t"):
        name = f"test.{os.getpid()}.{next(_counter)}.{tag}"
        made.append(name)
        return name

    yield make
    procs.reap()
    left = {name: _leftovers(name) for name in made}
    for name in made:
        unlink_names(name)
    left = {k: v for k, v in left.items() if v}
    assert not left, f"POSIX names left behind: {left}"


@pytest.fixture
def fifo_name(fifo_names):
    return fifo_names()
