"""The live view of a FIFO, like ``top``: ``shmfifo status NAME --watch``.

    FIFO 'lab'  daemon 4700 running  recoveries 0                         23:58:25
    [████████████████████████████████████████████████░░░░░░░░░░░░░░░░]  12/16 items
    puts 8.0/s  takes 4.0/s          total put 340, taken 328

    ROLE         PID  ITEM           RATE  ACHIEVED     COUNT  STATE
    producer    4711  'a'             5/s     5.0/s       211  running
    producer    4712  'b'             3/s     3.0/s       129  blocked on full
    consumer    4713  -               4/s     4.0/s       328  running

    q or Ctrl-C: quit

Every achieved rate is measured, never derived from the configured one: it is the difference
of a counter that the clients keep in shared memory (a client's puts or gets, the FIFO's
total put and taken) between two snapshots about a second apart, divided by the time between
them. A client that attached since the older snapshot shows ``-`` until it has a second one.

On a terminal the view is drawn on the alternate screen (so it is redrawn in place and the
shell's screen comes back afterwards), the keyboard is in cbreak mode so ``q`` quits without
Enter, and the terminal is restored on every way out: ``q``, Ctrl-C, SIGTERM, SIGHUP, an
exception. The last frame is then printed on the normal screen, so what was seen stays in
the scrollback. When standard output is not a terminal the view prints plain snapshots
instead, one per interval, separated by a blank line, without any control code.

When the FIFO disappears (its daemon stopped and removed the names) the view says so and
returns 0; a daemon that died but left its FIFO is shown as ``gone`` and watched on.
"""

import collections
import os
import select
import shutil
import signal
import sys
import termios
import threading
import time
import tty

from . import status
from .errors import CorruptSegment, FifoNotFound

__all__ = ["watch", "render", "Rates", "WINDOW"]

# Rates are measured over the last second, whatever the redraw interval.
WINDOW = 1.0
# A sample counts as "a second old" from 0.9 s: redraws scheduled one second apart wake up
# a few milliseconds early or late, and should always measure against the previous one.
WINDOW_SLACK = 0.1
# Between the daemon removing the segment and removing the semaphores, a snapshot can find a
# segment without semaphores (CorruptSegment); look again this many times before deciding.
VANISH_RETRIES = 5
VANISH_RETRY_DELAY = 0.05

# Columns of a client row (name, width, alignment, separator before it). With the
# separators they take 59 columns, which leaves 20 for the state in 79 (the 80th is never
# written, so nothing wraps); numbers too wide for their column are shortened (12.3M).
_COLUMNS = (("ROLE", 8, "<", ""), ("PID", 7, ">", " "), ("ITEM", 10, "<", "  "),
            ("RATE", 8, ">", " "), ("ACHIEVED", 9, ">", " "), ("COUNT", 9, ">", " "),
            ("STATE", 0, "<", "  "))
_SHORT_STATES = {"dead (recovery pending)": "dead, recovering"}

# ANSI select-graphic-rendition codes, used only on a terminal.
_BOLD, _REVERSE, _DIM = "1", "7", "2"
_GREEN, _YELLOW, _RED, _CYAN = "32", "33", "31", "36"

_CSI = "\x1b["
_ALT_SCREEN_ON, _ALT_SCREEN_OFF = _CSI + "?1049h", _CSI + "?1049l"
_CURSOR_OFF, _CURSOR_ON = _CSI + "?25l", _CSI + "?25h"
_HOME, _CLEAR_LINE, _CLEAR_BELOW = _CSI + "H", _CSI + "K", _CSI + "J"


class Rates:
    """Snapshots of the last few seconds, to measure rates over the last second."""

    def __init__(self, keep=5.0):
        self.keep = keep
        self.samples = collections.deque()     # (monotonic time, FifoStatus)

    def add(self, when, st):
        self.samples.append((when, st))
        while len(self.samples) > 2 and self.samples[0][0] < when - self.keep:
            self.samples.popleft()

    def baseline(self):
        """The newest sample at least about WINDOW older than the latest, else the oldest
        other one; None while there is only one."""
        if len(self.samples) < 2:
            return None
        now = self.samples[-1][0]
        older = list(self.samples)[:-1]
        for when, st in reversed(older):
            if when <= now - (WINDOW - WINDOW_SLACK):
                return when, st
        return older[0]

    def measure(self):
        """(puts/s, takes/s, {client key: achieved/s}) of the latest snapshot, or None."""
        base = self.baseline()
        if base is None:
            return None
        (t0, old), (t1, new) = base, self.samples[-1]
        dt = t1 - t0
        if dt <= 0:
            return None
        before = {_key(c): c.count for c in old.clients}
        clients = {_key(c): (c.count - before[_key(c)]) / dt
                   for c in new.clients if _key(c) in before and c.count >= before[_key(c)]}
        puts = (new.puts - old.puts) / dt if new.puts >= old.puts else None
        takes = (new.taken - old.taken) / dt if new.taken >= old.taken else None
        return puts, takes, clients


def _key(client):
    # The pid alone could be reused by a later client in another entry; attach time cannot.
    return client.index, client.pid, client.attached_ns


def _per_second(value):
    if value is None:
        return "-"
    if 0 < value < 1:
        return f"{value:.2f}/s"
    return f"{value:.1f}/s" if value < 100 else _compact(round(value), 6) + "/s"


def _rate_text(rate):
    """A configured rate (status.rate_text), at most 8 characters."""
    if rate is not None and rate >= 1000:
        return _compact(round(rate), 6) + "/s"
    return status.rate_text(rate)


def _compact(number, width):
    """``number`` in at most ``width`` characters: 123456, else 1.2M, 12.3G, 123T."""
    text = str(number)
    if len(text) <= width:
        return text
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"), (1e15, "P"),
                          (1e18, "E")):
        if number / scale < 999.5:
            for digits in (1, 0):
                text = f"{number / scale:.{digits}f}{suffix}"
                if len(text) <= width:
                    return text
    return text


# -- rendering ------------------------------------------------------------------------------
# A frame is a list of lines; a line is a list of (text, style) segments, style being an SGR
# code or None. Plain output drops the styles; clipping counts only the text.

def render(st, measured, *, width=80, height=24, footer=(), keys_hint=True, unicode=True,
           clock=None):
    """The frame for snapshot ``st`` with rates ``measured`` (Rates.measure())."""
    width = max(20, width - 1)
    puts_rate, takes_rate, client_rates = measured or (None, None, {})
    stamp = time.strftime("%H:%M:%S", time.localtime(clock))
    daemon_style = {"running": _GREEN, "gone": _RED, "recovering": _YELLOW}.get(st.daemon,
                                                                                _YELLOW)
    title = [(f"FIFO {st.name!r}", _BOLD), ("  daemon ", None),
             (f"{st.daemon_pid} ", None), (st.daemon, daemon_style),
             (f"  recoveries {st.recoveries}", None)]
    if st.blocker:
        title.append((f"  waiting for pid {st.blocker}", _YELLOW))
    used = sum(len(text) for text, _ in title)
    title.append((" " * max(2, width - used - len(stamp)) + stamp, None))
    lines = [title]
    if st.daemon == "gone":
        lines.append([(f"the daemon is gone; restart it with: shmfifo fifo --name {st.name}",
                       _RED)])

    items = f"  {st.items}/{st.capacity} items" + (f" (+{st.in_flight} in flight)"
                                                  if st.in_flight else "")
    bar_width = max(10, min(64, width - len(items) - 2))
    level = min(1.0, st.items / st.capacity) if st.capacity else 0.0
    filled = round(level * bar_width)
    full_char, empty_char = ("█", "░") if unicode else ("#", ".")
    bar_style = _RED if level >= 1.0 else _YELLOW if level >= 0.75 else _GREEN
    lines.append([("[", None), (full_char * filled, bar_style),
                  (empty_char * (bar_width - filled), _DIM), ("]", None), (items, None)])

    rates = f"puts {_per_second(puts_rate)}  takes {_per_second(takes_rate)}"
    totals = f"total put {st.puts}, taken {st.taken}" + \
        (f", re-queued {st.requeued}" if st.requeued else "")
    lines.append([(rates, _BOLD), (" " * max(2, 33 - len(rates)) + totals, None)])
    lines.append([])

    footer = list(footer)
    tail = ([[]] + [[(text, None)] for text in footer] if footer else []) + \
        ([[], [("q or Ctrl-C: quit", _DIM)]] if keys_hint else [])
    if not st.clients:
        lines.append([("no clients attached", None)])
    else:
        lines.append([(_row([column[0] for column in _COLUMNS]), _REVERSE)])
        room = max(1, height - len(lines) - len(tail))
        clients = sorted(st.clients, key=lambda c: (_ROLE_ORDER.get(c.role, 9), c.pid))
        shown = clients if len(clients) <= room else clients[:room - 1]
        for c in shown:
            item = _short(repr(c.item), 10, unicode) if c.role == "producer" else "-"
            achieved = client_rates.get(_key(c))
            row = _row([c.role, str(c.pid), item, _rate_text(c.rate), _per_second(achieved),
                        _compact(c.count, 9), ""])
            state = _SHORT_STATES.get(c.state, c.state)
            lines.append([(row, None), (state, _state_style(state))])
        if len(shown) < len(st.clients):
            lines.append([(f"... and {len(st.clients) - len(shown)} more clients "
                           f"(see: shmfifo status {st.name})", _DIM)])
    lines.extend(tail)
    return [_clip(line, width, unicode) for line in lines[:height]]


_ROLE_ORDER = {"producer": 0, "consumer": 1}


def _short(text, width, unicode):
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    if len(text) <= width:
        return text
    return text[:width - 1] + "…" if unicode else text[:width - 3] + "..."


def _row(values):
    return "".join(sep + (format(v[:w], f"{align}{w}") if w else v)
                   for v, (_, w, align, sep) in zip(values, _COLUMNS))


def _state_style(state):
    if state.startswith("blocked"):
        return _YELLOW
    if state.startswith(("stopped", "dead")):
        return _RED
    if state == "parked":
        return _CYAN
    return None


def _clip(line, width, unicode):
    out, left = [], width
    for text, style in line:
        if left <= 0:
            break
        if len(text) > left:
            text = text[:left - 1] + ("…" if unicode else "~") if left > 1 else text[:left]
        out.append((text, style))
        left -= len(text)
    return out


def plain(frame):
    """A frame as text without control codes."""
    return "\n".join("".join(text for text, _ in line).rstrip() for line in frame)


def _ansi(frame, color):
    lines = []
    for line in frame:
        text = "".join(f"{_CSI}{style}m{t}{_CSI}0m" if style and color and t else t
                       for t, style in line)
        lines.append(text + _CLEAR_LINE)
    return _HOME + "\n".join(lines) + _CLEAR_BELOW


# -- the terminal -----------------------------------------------------------------------------

class _Quit(BaseException):
    """SIGTERM or SIGHUP arrived: leave the view the way q does."""


class _Terminal:
    """Alternate screen, hidden cursor and cbreak keyboard, undone by restore()."""

    def __init__(self, out, keys_fd):
        self.out = out
        self.keys_fd = keys_fd
        self.saved = None

    def enter(self):
        if self.keys_fd is not None:
            self.saved = termios.tcgetattr(self.keys_fd)
            tty.setcbreak(self.keys_fd)       # no echo, no line buffering; Ctrl-C still works
        self.out.write(_ALT_SCREEN_ON + _CURSOR_OFF)
        self.out.flush()

    def restore(self):
        try:
            self.out.write(_CSI + "0m" + _CURSOR_ON + _ALT_SCREEN_OFF)
            self.out.flush()
        finally:
            if self.saved is not None:
                termios.tcsetattr(self.keys_fd, termios.TCSADRAIN, self.saved)
                self.saved = None

    def wait_for_key(self, timeout):
        """Wait up to ``timeout`` s; True if q was pressed."""
        if self.keys_fd is None:
            time.sleep(max(0.0, timeout))
            return False
        ready, _, _ = select.select([self.keys_fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        data = os.read(self.keys_fd, 64)
        return b"q" in data or b"Q" in data


def _keys_fd():
    """stdin's descriptor if we may read keys from it: a terminal, and we are its foreground
    (a background job touching the terminal modes would be stopped by SIGTTOU)."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (AttributeError, ValueError, OSError):
        pass
    return None


def _read(name, seen):
    """A snapshot, or None if the FIFO is gone (after having been ``seen``)."""
    for attempt in range(VANISH_RETRIES):
        try:
            return status.snapshot(name)
        except FifoNotFound:
            if not seen:
                raise
            return None
        except CorruptSegment:
            if not seen or attempt == VANISH_RETRIES - 1:
                raise
            time.sleep(VANISH_RETRY_DELAY)
    return None


def watch(name, *, interval=1.0, count=None, duration=None, footer=None, out=None,
          terminal=None):
    """Show FIFO ``name`` live until q, Ctrl-C, SIGTERM, ``count`` frames, ``duration``
    seconds, or the FIFO disappearing. Returns the exit code (0).

    ``footer`` is a callable returning extra lines to show under the clients (the demo shows
    what the consumer took). ``terminal`` forces (True) or refuses (False) the live mode;
    by default it is used when ``out`` is a terminal.

    On a terminal the first frame is drawn at once (rates follow a second later); plain
    snapshots start after one interval, so that every one of them carries measured rates.
    FifoNotFound if the FIFO does not exist to begin with.
    """
    out = out or sys.stdout
    if terminal is None:
        terminal = _isatty(out) and os.environ.get("TERM", "") != "dumb"
    footer = footer or (lambda: ())
    rates = Rates()
    st = _read(name, seen=False)
    started = time.monotonic()
    rates.add(started, st)
    end = started + duration if duration is not None else None
    if terminal:
        return _live(name, st, rates, interval, count, end, footer, out)
    return _snapshots(name, rates, interval, count, end, footer, out, started)


def _isatty(out):
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _snapshots(name, rates, interval, count, end, footer, out, started):
    shown = 0
    tick = started
    previous = _install_quit_handlers()     # SIGTERM and SIGHUP end it as Ctrl-C does
    try:
        while count is None or shown < count:
            tick += interval
            if end is not None and tick > end + 1e-3:
                break
            time.sleep(max(0.0, tick - time.monotonic()))
            st = _read(name, seen=True)
            if st is None:
                out.write(f"FIFO {name!r} is gone: its daemon stopped and removed it\n")
                out.flush()
                return 0
            rates.add(time.monotonic(), st)
            frame = render(st, rates.measure(), width=80, height=1000,
                           footer=footer(), keys_hint=False, unicode=False)
            out.write(("\n" if shown else "") + plain(frame) + "\n")
            out.flush()
            shown += 1
    except (KeyboardInterrupt, _Quit):
        pass
    finally:
        _restore_handlers(previous)
    return 0


def _live(name, st, rates, interval, count, end, footer, out):
    keys_fd = _keys_fd()
    term = _Terminal(out, keys_fd)
    color = "NO_COLOR" not in os.environ
    unicode = (getattr(out, "encoding", "") or "").lower().replace("-", "") in ("utf8",)
    previous = _install_quit_handlers()
    frame, gone, shown, finishing = None, False, 0, False
    try:
        term.enter()
        tick = time.monotonic()
        while True:
            size = shutil.get_terminal_size()
            frame = render(st, rates.measure(), width=size.columns, height=size.lines,
                           footer=footer(), keys_hint=keys_fd is not None, unicode=unicode)
            out.write(_ansi(frame, color))
            out.flush()
            shown += 1
            if finishing or (count is not None and shown >= count):
                break
            tick += interval
            if end is not None and tick >= end:
                tick, finishing = end, True      # one last frame, at the end
            quit_key = False
            while not quit_key and time.monotonic() < tick:
                quit_key = term.wait_for_key(tick - time.monotonic())
            if quit_key:
                break
            st = _read(name, seen=True)
            if st is None:
                gone = True
                break
            rates.add(time.monotonic(), st)
    except (KeyboardInterrupt, _Quit):
        pass
    finally:
        term.restore()
        _restore_handlers(previous)
    if frame is not None:
        # The last frame stays on the normal screen, without the key hint.
        last = frame[:-2] if keys_fd is not None and len(frame) >= 2 else frame
        out.write(plain(last) + "\n")
    if gone:
        out.write(f"FIFO {name!r} is gone: its daemon stopped and removed it\n")
    out.flush()
    return 0


def _install_quit_handlers():
    if threading.current_thread() is not threading.main_thread():
        return {}

    def quit_view(signum, frame):
        raise _Quit()

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, quit_view)
    return previous


def _restore_handlers(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler)
