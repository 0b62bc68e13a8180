"""The producer (the lab's ``producer.ko``): put a configured item at a configured rate.

    $ shmfifo producer item=a rate=5
    2026-11-26 23:58:25.123 producer[4711]: attached to 'default' (item='a', rate=5/s)
    ^C
    2026-11-26 23:58:31.530 producer[4711]: stopped by SIGINT after 32 items in 6.4 s (5.00/s)

With ``--stdin`` it puts the records of its standard input instead (pipes.py), in order, at
``rate`` if one is given and otherwise as fast as the FIFO takes them, and exits 0 at the
end of the input once the last one is in the FIFO.
"""

import collections
import sys

from . import layout
from .handle import attach
from .pipes import NEWLINE, RecordReader, item_of
from .runner import STOP_SIGNAL_NAMES, Runner
from .status import rate_text

__all__ = ["run_producer", "run_stdin_producer"]


def run_producer(fifo_name, item, rate, *, count=None, log, shared=False):
    """Attach, put ``item`` at ``rate`` until stopped or ``count`` reached; return exit code."""
    with attach(fifo_name, role=layout.ROLE_PRODUCER, param=item, rate=rate,
                shared=shared) as fifo:
        fifo.check_item(item)   # an item that cannot fit is a usage error before the first put
        runner = Runner(fifo, None, count=count, log=log)

        def step(fifo, n):
            if n == 1:
                fifo.put(item)
            else:
                fifo.put_many([item] * n)
            if log.isEnabledFor(10):
                for k in range(n):
                    log.debug("put %r (#%d)", item, runner.done + k + 1)
            return n

        runner.step = step
        runner.install_signal_handlers()
        log.info("attached to %r (item=%r, rate=%s)", fifo_name, item, rate_text(rate))
        done = runner.run()
        elapsed = runner.elapsed()
        reason = runner.stop_reason or "request"
        achieved = done / elapsed if elapsed > 0 else 0.0
        log.info("stopped (%s) after %d items in %.1f s (%.2f/s, item=%r)",
                 reason, done, elapsed, achieved, item)
    return 0


def run_stdin_producer(fifo_name, rate, *, separator=NEWLINE, count=None, log, shared=False,
                       stdin=None):
    """Attach and put each record of ``stdin`` (default: this process's standard input) as
    an item until the input ends, ``count`` is reached or a stop; return the exit code.
    RecordTooLong if a record cannot be an item (those before it are in the FIFO)."""
    fd = (stdin or sys.stdin).fileno()
    with attach(fifo_name, role=layout.ROLE_PRODUCER, param="<stdin>", rate=rate,
                shared=shared) as fifo:
        runner = Runner(fifo, None, count=count, log=log)
        reader = RecordReader(fd, separator, limit=fifo.geometry.item_size,
                              stopping=lambda: runner.stopping)
        runner.waited = lambda: reader.waited_s
        read = collections.deque()

        def step(fifo, n):
            while not read:
                batch = reader.next_batch()
                if batch is None:
                    runner.finish("end of input")
                    return 0
                read.extend(map(item_of, batch))
            items = [read.popleft() for _ in range(min(n, len(read)))]
            try:
                fifo.put_many(items)
            except BaseException as error:
                # What was not put goes back in front, to be counted as read and not put.
                read.extendleft(reversed(items[getattr(error, "put", 0):]))
                raise
            if log.isEnabledFor(10):
                for k, item in enumerate(items):
                    log.debug("put %r (#%d)", item, runner.done + k + 1)
            return len(items)

        runner.step = step
        runner.install_signal_handlers()
        log.info("attached to %r (items from stdin, rate=%s)", fifo_name, rate_text(rate))
        done = runner.run()
        elapsed = runner.elapsed()
        if read and runner.stop_reason in STOP_SIGNAL_NAMES:
            log.warning("%d record(s) read from stdin were not put", len(read))
        achieved = done / elapsed if elapsed > 0 else 0.0
        log.info("stopped (%s) after %d items in %.1f s (%.2f/s, from stdin)",
                 runner.stop_reason or "request", done, elapsed, achieved)
    return 0
