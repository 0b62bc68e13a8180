"""The producer (the lab's ``producer.ko``): put a configured item at a configured rate.

    $ shmfifo producer item=a rate=5
    2026-11-26 23:58:25.123 producer[4711]: attached to 'default' (item='a', rate=5/s)
    ^C
    2026-11-26 23:58:31.530 producer[4711]: stopped by SIGINT after 32 items in 6.4 s (5.00/s)
"""

from . import layout
from .handle import attach
from .runner import Runner
from .status import rate_text

__all__ = ["run_producer"]


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
