"""The daemon as a systemd service: sd_notify on a real NOTIFY_SOCKET datagram socket (what
systemd binds for a Type=notify unit), the watchdog, journald's log format, and SIGHUP.

systemd itself does not run in these test machines; the socket and the environment are
exactly what it hands a service, and the daemon cannot tell the difference."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import shmfifo
from procs import READY, REPO, WAIT, assert_consistent, stop


class NotifySocket:
    """The receiving end of sd_notify: a datagram socket, abstract or on a path."""

    def __init__(self, tmp_path, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"shmfifo-test-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = str(tmp_path / "notify")
            self.sock.bind(path)
            self.env = path
        self.messages = []

    def receive(self, until, timeout=WAIT):
        """Collect datagrams until one has the line ``until``; return that one (as a dict)."""
        deadline = time.monotonic() + timeout
        while True:
            for fields in self.messages:
                if until in fields.items() or until in fields:
                    self.messages.remove(fields)
                    return fields
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {until!r} from the daemon within {timeout} s; "
                                     f"got {self.messages}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(dict(line.split("=", 1)
                                      for line in data.decode().splitlines()))

    def close(self):
        self.sock.close()


@pytest.fixture(params=["abstract", "path"])
def notify_socket(request, tmp_path):
    sock = NotifySocket(tmp_path, request.param == "abstract")
    yield sock
    sock.close()


def test_ready_status_watchdog_and_stopping(procs, fifo_name, notify_socket):
    daemon = procs.spawn("fifo", "--name", fifo_name,
                         env={"NOTIFY_SOCKET": notify_socket.env, "WATCHDOG_USEC": "300000"})
    ready = notify_socket.receive(("READY", "1"))
    # READY means usable: a client attaches at once, without retrying.
    with shmfifo.attach(fifo_name) as q:
        q.put("x")
        assert ready["STATUS"].startswith("0/32 items")
        # The watchdog is fed at half its interval for as long as the daemon's loop turns.
        started = time.monotonic()
        for _ in range(4):
            notify_socket.receive(("WATCHDOG", "1"))
        assert time.monotonic() - started < 2.0
        status = notify_socket.receive("STATUS")
        while not status["STATUS"].startswith("1/32 items, 1 client,"):
            status = notify_socket.receive("STATUS")
    daemon.wait_for(READY)
    daemon.signal(signal.SIGTERM)
    notify_socket.receive(("STOPPING", "1"))
    assert daemon.wait() == 0


def test_ready_only_after_adoption(procs, fifo_name, notify_socket):
    """A daemon that adopts a FIFO (a restart under systemd) is ready once the items it
    adopted are there and consistent."""
    first = procs.daemon(fifo_name, "--keep")
    with shmfifo.attach(fifo_name) as q:
        q.put_many(list(range(7)))
    stop(first)
    second = procs.spawn("fifo", "--name", fifo_name, env={"NOTIFY_SOCKET": notify_socket.env})
    ready = notify_socket.receive(("READY", "1"))
    assert ready["STATUS"].startswith("7/32 items")
    assert_consistent(fifo_name, expected_items=7)
    with shmfifo.attach(fifo_name) as q:
        assert q.get_many(7, timeout=WAIT) == list(range(7))
    stop(second)


def test_sighup_is_a_graceful_stop(procs, fifo_name, notify_socket):
    daemon = procs.spawn("fifo", "--name", fifo_name, env={"NOTIFY_SOCKET": notify_socket.env})
    notify_socket.receive(("READY", "1"))
    daemon.signal(signal.SIGHUP)
    notify_socket.receive(("STOPPING", "1"))
    assert daemon.wait() == 0
    assert not os.path.exists(f"/dev/shm/shmfifo.{fifo_name}")


def test_a_missing_socket_is_logged_once_and_the_daemon_runs(procs, fifo_name, tmp_path):
    daemon = procs.spawn("fifo", "--name", fifo_name,
                         env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens"),
                              "WATCHDOG_USEC": "100000"})
    daemon.wait_for(READY)
    daemon.wait_for("cannot notify the service manager")
    with shmfifo.attach(fifo_name) as q:
        q.put("still works")
        assert q.get(timeout=WAIT) == "still works"
    stop(daemon)
    assert sum("cannot notify" in line for line in daemon.err) == 1


def test_log_lines_suit_the_journal(fifo_name):
    """With stderr connected to the journal (JOURNAL_STREAM names that very stream), lines
    carry a syslog priority and no time or pid of their own; elsewhere they keep both."""
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env = dict(os.environ, PYTHONPATH=REPO, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    daemon = subprocess.Popen([sys.executable, "-m", "shmfifo", "fifo", "--name", fifo_name],
                              stderr=write_end, stdout=subprocess.DEVNULL, env=env)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as err:
            first = err.readline()
            assert first.startswith(f"<6>fifo: ready: FIFO {fifo_name!r}"), first
            producer = subprocess.run(
                [sys.executable, "-m", "shmfifo", "producer", "--fifo", fifo_name,
                 "item=a", "rate=max", "count=1"], env=env, capture_output=True, text=True,
                timeout=WAIT)
            # The variable was inherited, but this process's stderr is not the journal.
            assert producer.returncode == 0
            assert producer.stderr.splitlines()[0][:4].isdigit(), producer.stderr
            daemon.send_signal(signal.SIGTERM)
            rest = err.read().splitlines()
        assert daemon.wait(WAIT) == 0
        assert all(line[:3] in ("<6>", "<4>") for line in rest), rest
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_unit_file_is_valid(tmp_path):
    """docs/shmfifo@.service, with ExecStart pointing at this checkout's command, passes
    systemd's own check."""
    with open(os.path.join(REPO, "docs", "shmfifo@.service")) as f:
        unit = f.read()
    command = os.path.join(os.path.dirname(sys.executable), "shmfifo")
    assert "ExecStart=/usr/local/bin/shmfifo fifo --name %i" in unit
    path = tmp_path / "shmfifo@lab.service"
    path.write_text(unit.replace("/usr/local/bin/shmfifo", command))
    check = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stderr == "", check.stderr
