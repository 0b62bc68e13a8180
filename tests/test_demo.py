"""``shmfifo demo``: a daemon, two producers and a consumer shown live, then a clean stop."""

import os
import re
import signal

import pytest

from procs import LINE, WAIT, Tmux, needs_tmux, shmfifo_command
from shmfifo import names
from shmfifo.segment import unlink_names

SUMMARY_ROW = re.compile(r"^\s+(\d+)\s+'([ab])'\s+([\d.]+)/s\s+(\d+)\s+(\d+)$", re.M)
DEMO_PIDS = re.compile(r"started (?:producer|consumer) (\d+)")


def leftovers(name):
    paths = [names.shm_path(name)] + [names.sem_path(name, w) for w in names.SEMAPHORES]
    return [path for path in paths if os.path.exists(path)]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo_names():
    """Names of the demos a test ran; none may be left in /dev/shm."""
    made = []
    yield made
    left = {name: leftovers(name) for name in made}
    for name in made:
        unlink_names(name)
    assert not any(left.values()), f"the demo left {left}"


def check_summary(text, name):
    rows = {item: (int(made), int(taken)) for _, item, _, made, taken in
            SUMMARY_ROW.findall(text)}
    assert set(rows) == {"a", "b"}, text
    for item, (made, taken) in rows.items():
        assert made > 0 and made == taken, (item, made, taken)
    assert "lost 0, duplicates 0" in text
    assert "every process stopped cleanly; nothing left in /dev/shm" in text
    assert re.search(rf"^{re.escape(name)} after [\d.]+ s", text, re.M), text


def test_demo_runs_end_to_end_and_leaves_nothing(procs, demo_names):
    demo = procs.spawn("demo", "--seconds", "3")
    name = f"demo.{demo.pid}"
    demo_names.append(name)
    assert demo.wait(timeout=3 + 2 * WAIT) == 0, demo.err
    text = "\n".join(demo.out)
    assert "\x1b" not in text, "control codes on a non-terminal"
    snapshots = re.findall(rf"^FIFO '{re.escape(name)}'  daemon \d+ running", text, re.M)
    assert 2 <= len(snapshots) <= 4, text
    # The view shows what the consumer took, and the steering, read from the children's files.
    assert re.search(r"^last taken: ('[ab]' ?)+$", text, re.M), text
    assert re.search(rf"^steered: shmfifo set {re.escape(name)} \d+ rate=4", text, re.M), text
    assert re.search(r"^producer\s+\d+\s+'a'\s+5/s\s+[\d.]+/s", text, re.M), text
    assert re.search(r"^consumer\s+\d+\s+-\s+4/s\s+[\d.]+/s", text, re.M), text
    check_summary(text, name)
    for line in demo.err:
        m = LINE.match(line)
        assert m and m["role"] == "demo" and int(m["pid"]) == demo.pid, line
    pids = [int(pid) for pid in DEMO_PIDS.findall("\n".join(demo.err))]
    assert len(pids) == 3, demo.err
    assert not [pid for pid in pids if alive(pid)], "children left running"
    assert not leftovers(name)


def test_ctrl_c_during_the_demo_stops_everything_cleanly(procs, demo_names):
    demo = procs.spawn("demo", "--seconds", "60")
    name = f"demo.{demo.pid}"
    demo_names.append(name)
    demo.wait_for(rf"^FIFO '{re.escape(name)}'", stream="out")
    demo.signal(signal.SIGINT)
    assert demo.wait() == 0, demo.err
    check_summary("\n".join(demo.out), name)
    pids = [int(pid) for pid in DEMO_PIDS.findall("\n".join(demo.err))]
    assert len(pids) == 3 and not [pid for pid in pids if alive(pid)]
    assert not leftovers(name)


@needs_tmux
def test_demo_on_a_terminal(demo_names):
    tmux = Tmux(shmfifo_command("demo", "--seconds", "3"))
    try:
        screen = tmux.wait_for(lambda s: "ROLE" in s and "q or Ctrl-C" in s,
                               what="the live view")
        name = re.search(r"FIFO '(demo\.\d+)'", screen)[1]
        demo_names.append(name)
        assert "last taken:" in screen
        screen = tmux.wait_for(lambda s: "MODES=" in s, timeout=3 + 2 * WAIT,
                               what="the end of the demo")
        assert "EXIT=0" in screen and "MODES=icanon echo" in screen, screen
        check_summary(screen, name)
        assert all(len(line) <= 80 for line in screen.splitlines())
    finally:
        tmux.close()


@needs_tmux
def test_ctrl_c_at_the_terminal_stops_the_demo_in_order(demo_names):
    # Ctrl-C at a terminal goes to the whole foreground process group: the demo's children
    # run in their own sessions, so only the demo gets it and stops them in order.
    tmux = Tmux(shmfifo_command("demo", "--seconds", "60"))
    try:
        screen = tmux.wait_for(lambda s: "ROLE" in s and "q or Ctrl-C" in s,
                               what="the live view")
        demo_names.append(re.search(r"FIFO '(demo\.\d+)'", screen)[1])
        tmux.keys("C-c")
        screen = tmux.wait_for(lambda s: "MODES=" in s, timeout=2 * WAIT,
                               what="the end of the demo")
        assert "EXIT=0" in screen and "MODES=icanon echo" in screen, screen
        check_summary(screen, demo_names[-1])
        assert "Traceback" not in screen
    finally:
        tmux.close()
