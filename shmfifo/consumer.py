"""The consumer (the lab's ``consumer.ko``): take items at a configured rate and print them.

    $ shmfifo consumer rate=2
    item='a' producer=4711 seq=1
    item='b' producer=4712 seq=1

Each line is printed and flushed before the item is acknowledged, so a kill can re-deliver
an item whose line was already printed (at-least-once) but never lose one. ``--json`` prints
one object per line: ``{"item": ..., "type": ..., "producer": ..., "seq": ..., "latency_us": ...}``.
Non-printable characters are always shown escaped, never sent raw to the terminal.
"""

import json
import sys
import time

from . import crashpoints, layout
from .errors import CorruptItem, UntrustedItem
from .handle import attach
from .ring import Message
from .runner import Runner
from .status import rate_text

__all__ = ["run_consumer", "format_item", "json_record"]


def _printable(text):
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


class Refused:
    """A pickled item that was not unpickled (see UntrustedItem), as the consumer shows it."""

    def __init__(self, size):
        self.size = size

    def __repr__(self):
        return f"<pickled object of {self.size} bytes, not unpickled>"


def format_item(item):
    """An item as shown on a terminal: repr for strings and bytes, escaped if non-printable."""
    return _printable(repr(item))


def json_record(message, now_ns):
    item = message.item
    if isinstance(item, (str, int)) and not isinstance(item, bool):
        value, kind = item, type(item).__name__
    elif isinstance(item, bytes):
        value, kind = item.decode("utf-8", "backslashreplace"), "bytes"
    elif isinstance(item, Refused):
        value, kind = None, "refused"
    else:
        value, kind = repr(item), "object"
    return json.dumps({"item": value, "type": kind, "producer": message.producer,
                       "seq": message.seq,
                       "latency_us": round((now_ns - message.put_ns) / 1000, 1)})


def run_consumer(fifo_name, rate, *, count=None, as_json=False, log, out=None, shared=False,
                 allow_pickle=False):
    """Attach, take items at ``rate`` until stopped or ``count`` reached; return exit code."""
    out = out or sys.stdout
    with attach(fifo_name, role=layout.ROLE_CONSUMER, rate=rate, shared=shared,
                allow_pickle=allow_pickle) as fifo:
        crash = crashpoints.hook()
        runner = Runner(fifo, None, count=count, log=log, max_batch=1)

        warned = []

        def step(fifo, n):
            try:
                message = fifo.get_message()
            except UntrustedItem as refused:
                # Shown, never unpickled: other users can write this FIFO.
                if not warned:
                    warned.append(True)
                    log.warning("%s", refused)
                message = Message(Refused(len(refused.payload)), refused.producer,
                                  refused.seq, refused.put_ns)
            except CorruptItem as corrupt:
                # Reported and skipped (it was taken: the next get acknowledges it).
                log.warning("%s", corrupt)
                return 0
            if as_json:
                line = json_record(message, time.monotonic_ns())
            else:
                line = (f"item={format_item(message.item)} producer={message.producer} "
                        f"seq={message.seq}")
            out.write(line + "\n")
            out.flush()
            if crash:
                crash("consumer.handled")
            fifo.ack()
            if log.isEnabledFor(10):
                log.debug("took %s (producer %d, seq %d, #%d)", format_item(message.item),
                          message.producer, message.seq, runner.done + 1)
            return 1

        runner.step = step
        runner.install_signal_handlers()
        log.info("attached to %r (rate=%s)", fifo_name, rate_text(rate))
        done = runner.run()
        elapsed = runner.elapsed()
        achieved = done / elapsed if elapsed > 0 else 0.0
        log.info("stopped (%s) after %d items in %.1f s (%.2f/s)",
                 runner.stop_reason or "request", done, elapsed, achieved)
    return 0
