"""The live view, ``shmfifo status NAME --watch``: on a real terminal (tmux), and as plain
snapshots when the output is not a terminal."""

import re
import subprocess
import sys

from procs import ESC, REPO, WAIT, Tmux, needs_tmux, shmfifo_command


def rows_by_pid(screen):
    """{pid: the client row's words} of a screen or snapshot."""
    rows = {}
    for line in screen.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("producer", "consumer") and words[1].isdigit():
            rows[int(words[1])] = words
    return rows


def achieved(row):
    """The ACHIEVED column of a client row (None while not measured yet): ROLE PID ITEM RATE
    ACHIEVED COUNT STATE, with items that hold no space."""
    return None if row[4] == "-" else float(row[4].removesuffix("/s"))


BAR = re.compile(r"^\[([█#]*)([░.]*)\]\s+(\d+)/(\d+) items", re.M)
RATES = re.compile(r"^puts ([\d.]+)/s\s+takes ([\d.]+)/s\s+total put (\d+), taken (\d+)", re.M)


def start_clients(procs, name, consumer_rate=10):
    """A daemon with 16 slots, producers 'a' at 20/s and 'b' at 5/s, one consumer."""
    daemon = procs.daemon(name, "--size", "16")
    a = procs.spawn("producer", "--fifo", name, "item=a", "rate=20")
    b = procs.spawn("producer", "--fifo", name, "item=b", "rate=5")
    c = procs.spawn("consumer", "--fifo", name, f"rate={consumer_rate}")
    for p in (a, b, c):
        p.wait_for("attached to")
    return daemon, a, b, c


def stop_all(daemon, *clients):
    """Stop the clients, then the daemon (which removes the names); each must exit 0."""
    for p in clients:
        p.signal()
    for p in clients:
        assert p.wait() == 0
    daemon.signal()
    assert daemon.wait() == 0


def check_frame(screen, a, b, c):
    """The frame shows every client, a bar that matches the item count, measured rates."""
    rows = rows_by_pid(screen)
    assert set(rows) >= {a.pid, b.pid, c.pid}, screen
    assert rows[a.pid][2] == "'a'" and rows[a.pid][3] == "20/s", rows[a.pid]
    assert rows[b.pid][2] == "'b'" and rows[b.pid][3] == "5/s", rows[b.pid]
    assert rows[c.pid][2] == "-" and rows[c.pid][3] == "10/s", rows[c.pid]
    assert 5 <= achieved(rows[c.pid]) <= 15, rows[c.pid]        # configured 10/s
    bar = BAR.search(screen)
    assert bar, screen
    filled, empty, items, capacity = len(bar[1]), len(bar[2]), int(bar[3]), int(bar[4])
    assert capacity == 16 and 0 <= items <= 16
    assert filled == round(items / capacity * (filled + empty)), bar[0]
    rates = RATES.search(screen)
    assert rates, screen
    assert 5 <= float(rates[2]) <= 15, rates[0]                  # takes: the consumer's 10/s
    assert "ROLE" in screen and "ACHIEVED" in screen and "STATE" in screen
    assert all(len(line) <= 80 for line in screen.splitlines())


@needs_tmux
def test_live_view_in_a_terminal_updates_and_quits_on_q(procs, fifo_name):
    daemon, a, b, c = start_clients(procs, fifo_name)
    tmux = Tmux(shmfifo_command("status", fifo_name, "--watch"))
    try:
        # Rates need two snapshots a second apart; the first frame shows '-' until then.
        screen = tmux.wait_for(lambda s: c.pid in rows_by_pid(s) and
                               achieved(rows_by_pid(s)[c.pid]) is not None,
                               what="the consumer's achieved rate")
        check_frame(screen, a, b, c)
        assert re.search(rf"^FIFO '{re.escape(fifo_name)}'\s+daemon \d+ running\s+"
                         rf"recoveries 0\s+\d\d:\d\d:\d\d$", screen, re.M), screen
        assert "q or Ctrl-C: quit" in screen
        total = RATES.search(screen)[3]
        tmux.wait_for(lambda s: RATES.search(s) and RATES.search(s)[3] != total,
                      timeout=3, what="a redraw with new totals")
        tmux.keys("q")
        screen = tmux.wait_for(lambda s: "MODES=" in s, what="the exit")
        assert "EXIT=0" in screen
        assert "MODES=icanon echo" in screen, "the terminal modes were not restored"
        assert "ROLE" in screen, "the last frame should stay on the normal screen"
    finally:
        tmux.close()
    stop_all(daemon, a, b, c)


@needs_tmux
def test_live_view_exits_cleanly_on_ctrl_c(procs, fifo_name):
    daemon, a, b, c = start_clients(procs, fifo_name)
    tmux = Tmux(shmfifo_command("status", fifo_name, "--watch", "--interval", "0.5"))
    try:
        tmux.wait_for(lambda s: "ROLE" in s and "q or Ctrl-C" in s, what="the view")
        tmux.keys("C-c")
        screen = tmux.wait_for(lambda s: "MODES=" in s, what="the exit")
        assert "EXIT=0" in screen and "MODES=icanon echo" in screen, screen
        assert "Traceback" not in screen
    finally:
        tmux.close()
    stop_all(daemon, a, b, c)


def test_plain_snapshots_when_not_a_terminal(procs, fifo_name):
    daemon, a, b, c = start_clients(procs, fifo_name)
    watch = procs.spawn("status", fifo_name, "--watch", "--count", "2", "--interval", "1")
    assert watch.wait() == 0
    text = "\n".join(watch.out)
    assert ESC not in text, "control codes in plain output"
    snapshots = re.split(r"\n\n(?=FIFO ')", text)
    assert len(snapshots) == 2, text
    for snapshot in snapshots:
        check_frame(snapshot, a, b, c)
        assert "q or Ctrl-C" not in snapshot
    assert watch.err == []
    stop_all(daemon, a, b, c)


def test_watch_says_when_the_fifo_is_gone_and_exits_0(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    watch = procs.spawn("status", fifo_name, "--watch", "--interval", "0.2")
    watch.wait_for(rf"^FIFO '{re.escape(fifo_name)}'", stream="out")
    daemon.signal()
    assert daemon.wait() == 0
    watch.wait_for(rf"FIFO '{re.escape(fifo_name)}' is gone", stream="out")
    assert watch.wait() == 0


def test_watch_usage(procs, fifo_names):
    first, second = fifo_names(), fifo_names()
    daemons = [procs.daemon(first), procs.daemon(second)]
    several = procs.spawn("status", "--watch", "--count", "1")
    alone = procs.spawn("status", first, "--count", "1")
    both = procs.spawn("status", first, "--watch", "--json")
    missing = procs.spawn("status", first + ".none", "--watch", "--count", "1")
    assert several.wait() == 2
    assert "--watch needs a NAME" in several.err[-1]
    assert alone.wait() == 2
    assert "go with --watch" in alone.err[-1]
    assert both.wait() == 2
    assert missing.wait() == 3
    assert "no FIFO named" in missing.err[-1]
    help_text = subprocess.run([sys.executable, "-m", "shmfifo", "status", "--help"],
                               capture_output=True, text=True, timeout=WAIT, cwd=REPO).stdout
    assert "--interval" in help_text and "--count" in help_text and "--watch" in help_text
    for daemon in daemons:
        daemon.signal()
        assert daemon.wait() == 0


def test_a_crowded_frame_fits_80_by_24():
    from shmfifo import status, watch
    clients = tuple(status.ClientStatus(
        index=i, role="producer" if i % 2 else "consumer", pid=100000 + i,
        item="a very long item \x00 with a nul" if i % 2 else "", rate=None if i == 1 else 2.5,
        puts=i * 1000 if i % 2 else 0, gets=0 if i % 2 else i * 999,
        state="dead (recovery pending)" if i == 3 else "blocked on empty", in_flight=0,
        attached_ns=0) for i in range(40))
    st = status.FifoStatus(
        name="n" * 60, capacity=16, item_size=128, max_clients=64, batch_max=16,
        split_locks=False, items=20, semaphores=(), puts=10 ** 9, taken=10 ** 9 - 20,
        requeued=3, recoveries=2, debt=0, in_flight=4, daemon_pid=99999, daemon="recovering",
        blocker=100003, clients=clients, mode=0o600)
    for unicode in (True, False):
        frame = watch.render(st, None, width=80, height=24, footer=["x" * 100],
                             unicode=unicode)
        text = watch.plain(frame)
        lines = text.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 79 for line in lines), text
        assert re.search(r"and \d+ more clients", text), text
        assert "20/16 items (+4 in flight)" in text
        assert "\x00" not in text and "q or Ctrl-C: quit" in lines[-1]
        assert ("█" in text) == unicode
