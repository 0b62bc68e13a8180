"""The consumer (the lab's ``consumer.ko``): take items at a configured rate and print them.

    $ shmfifo consumer rate=2
    item='a' producer=4711 seq=1
    item='b' producer=4712 seq=1

Three forms of output:

* lines for a person (the default): non-printable characters always shown escaped, never
  sent raw to the terminal;
* ``--json``: one object per item, ``{"item": ..., "type": ..., "producer": ..., "seq":
  ..., "latency_us": ...}``; the bytes of a bytes, bytearray, memoryview, array or numpy
  array item are base64 with ``"encoding": "base64"``, so any bytes survive, and what they
  hold is said beside them (see ``json_record``);
* ``--raw``: each item's bytes (a str as UTF-8) and a newline (a NUL with ``-0``), nothing
  else: the other end of ``producer --stdin`` (pipes.py).

Items are written and flushed before they are acknowledged, so a kill can re-deliver an item
whose line was already written (at-least-once) but never lose one. When the output goes away
(``| head``), what was taken and not written is given back to the FIFO.
"""

import array
import base64
import json
import sys
import time

from . import crashpoints, layout
from .errors import CorruptItem, ItemNotDecoded, NumpyNotInstalled, UntrustedItem
from .handle import attach
from .pipes import NEWLINE, bytes_of
from .ring import Message
from .runner import Runner
from .status import rate_text

__all__ = ["run_consumer", "format_item", "json_record", "TEXT", "JSON", "RAW"]

TEXT, JSON, RAW = "text", "json", "raw"


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


class Undecoded:
    """A numpy array taken where numpy is not installed (NumpyNotInstalled), as the consumer
    shows it: its dtype, shape, order and raw data."""

    def __init__(self, error):
        self.dtype, self.shape, self.order = error.dtype, error.shape, error.order
        self.data = bytes(error.data)

    def __repr__(self):
        return (f"<numpy array, dtype {self.dtype!r}, shape {self.shape}, not decoded: numpy "
                f"is not installed>")


def format_item(item):
    """An item as shown on a terminal: repr for strings and bytes, escaped if non-printable."""
    return _printable(repr(item))


def _binary(item):
    """(type, data, what the data holds) of an item that is bytes underneath, or None.

    bytes, bytearray: their bytes. memoryview: its bytes in C order, with its ``format``
    (struct syntax) and ``shape``. array.array: its bytes, with its ``typecode``. A numpy
    array of a plain dtype: its data in C order, with ``dtype`` (``dtype.str``: byte order,
    kind, size, such as "<f8"), ``shape`` and ``order`` "C" (an array taken where numpy is
    not installed: its data as it came, in the order it says, "C" or "F")."""
    if isinstance(item, (bytes, bytearray)):
        return type(item).__name__, item, {}
    if isinstance(item, memoryview):
        return "memoryview", item.tobytes(), {"format": item.format, "shape": list(item.shape)}
    if isinstance(item, array.array):
        return "array", item.tobytes(), {"typecode": item.typecode}
    if isinstance(item, Undecoded):
        return "ndarray", item.data, {"dtype": item.dtype, "shape": list(item.shape),
                                      "order": item.order}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(item, numpy.ndarray) and not item.dtype.hasobject \
            and item.dtype.fields is None:
        return "ndarray", item.tobytes(), {"dtype": item.dtype.str, "shape": list(item.shape),
                                           "order": "C"}
    return None


def json_record(message, now_ns):
    """The --json line of a message. Exact for str, int and float items, and for the bytes
    of bytes-like and array items (base64, see _binary)."""
    item = message.item
    record = {}
    if isinstance(item, (str, int, float)) and not isinstance(item, bool):
        value, kind = item, type(item).__name__
    elif (binary := _binary(item)) is not None:
        kind, data, holds = binary
        value = base64.b64encode(data).decode("ascii")
        record = {"encoding": "base64", **holds}
    elif isinstance(item, Refused):
        value, kind = None, "refused"
    else:
        value, kind = repr(item), "object"
    record = {"item": value, "type": kind, **record, "producer": message.producer,
              "seq": message.seq, "host": message.host,
              "latency_us": round((now_ns - message.put_ns) / 1000, 1)}
    return json.dumps(record)


class _Output:
    """Writes the items of one take, in the chosen form, and flushes them."""

    def __init__(self, form, separator, out, log):
        self.form = form
        self.separator = separator
        self.log = log
        self.out = out.buffer if form == RAW else out
        self._warned = set()

    def warn_once(self, kind, text):
        if kind not in self._warned:
            self._warned.add(kind)
            self.log.warning("%s", text)

    def write(self, messages):
        out = self.out
        if self.form == RAW:          # items, not messages: nothing but their bytes goes out
            for item in messages:
                data = bytes_of(item)
                if self.separator in data:
                    self.warn_once("separator", f"an item contains the record separator "
                                   f"{self.separator!r}, so it reads as several records "
                                   f"downstream (-0 separates records with NUL)")
                out.write(data + self.separator)
        elif self.form == JSON:
            now = time.monotonic_ns()
            out.write("".join(json_record(m, now) + "\n" for m in messages))
        else:
            out.write("".join(f"item={format_item(m.item)} producer={m.producer} "
                              f"seq={m.seq}\n" for m in messages))
        out.flush()


def run_consumer(fifo_name, rate, *, count=None, form=TEXT, separator=NEWLINE, log, out=None,
                 shared=False, allow_pickle=False):
    """Attach, take items at ``rate`` until stopped or ``count`` reached; return exit code."""
    output = _Output(form, separator, out or sys.stdout, log)
    fifo = attach(fifo_name, role=layout.ROLE_CONSUMER, rate=rate, shared=shared,
                  allow_pickle=allow_pickle)
    acknowledged = True
    try:
        crash = crashpoints.hook()
        # Raw output is for programs: whole batches between flushes. A person's lines go one
        # by one, as the lab's consumer prints them.
        runner = Runner(fifo, None, count=count, log=log,
                        max_batch=None if form == RAW else 1)

        def step(fifo, n):
            nonlocal acknowledged
            messages = _take(fifo, n, output, raw=form == RAW)
            acknowledged = False
            output.write(messages)
            if crash:
                crash("consumer.handled")
            fifo.ack()
            acknowledged = True
            if log.isEnabledFor(10):
                for k, m in enumerate(messages):
                    if form == RAW:
                        log.debug("took %s (#%d)", format_item(m), runner.done + k + 1)
                    else:
                        log.debug("took %s (producer %d, seq %d, #%d)", format_item(m.item),
                                  m.producer, m.seq, runner.done + k + 1)
            return len(messages)

        runner.step = step
        runner.install_signal_handlers()
        log.info("attached to %r (rate=%s)", fifo_name, rate_text(rate))
        try:
            done = runner.run()
        except BrokenPipeError:
            # Whoever read our output is gone (``| head``): what was taken and not written
            # goes back to the FIFO for another consumer, and that is not an error.
            done = runner.done
            runner.stop_reason = "the reader of the output went away"
            if not acknowledged:
                fifo.close(ack=False)
                log.info("gave back to FIFO %r the item(s) not written", fifo_name)
        elapsed = runner.elapsed()
        achieved = done / elapsed if elapsed > 0 else 0.0
        log.info("stopped (%s) after %d items in %.1f s (%.2f/s)",
                 runner.stop_reason or "request", done, elapsed, achieved)
    finally:
        fifo.close()
    return 0


def _take(fifo, n, output, raw):
    """One message for the text forms; up to ``n`` items, in one take, for raw output. A
    refused pickle is shown as Refused in the text forms and left out of raw output; so is
    a numpy array where numpy is missing (as Undecoded, its data intact); a corrupt item is
    reported and skipped (it was taken: the next get acknowledges it)."""
    try:
        if not raw:
            return [fifo.get_message()]
        return fifo.get_many(n)
    except ItemNotDecoded as error:
        taken = getattr(error, "items", None) or [error]
    messages = []
    for x in taken:
        if isinstance(x, UntrustedItem):
            # Shown, never unpickled: other users can write this FIFO.
            output.warn_once("untrusted", str(x))
            if not raw:
                messages.append(Message(Refused(len(x.payload)), x.producer, x.seq, x.put_ns,
                                        getattr(x, "host", None)))
        elif isinstance(x, NumpyNotInstalled):
            output.warn_once("numpy", str(x))
            if not raw:
                messages.append(Message(Undecoded(x), x.producer, x.seq, x.put_ns,
                                        getattr(x, "host", None)))
        elif isinstance(x, CorruptItem):
            output.log.warning("%s", x)
        else:
            messages.append(x)
    return messages
