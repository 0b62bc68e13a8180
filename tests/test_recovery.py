"""Daemon death and restart, stopped clients, stale state, bad input and permissions."""

import os
import signal
import stat
import subprocess
import sys

import posix_ipc
import pytest

from shmfifo import names
from procs import (WAIT, assert_consistent, drain, holder_code, records, status_of as status,
                   wait_until)


def shmfifo(*args):
    return subprocess.run([sys.executable, "-m", "shmfifo", *map(str, args)],
                          capture_output=True, text=True, timeout=WAIT)


def test_daemon_killed_clients_keep_working_and_restart_adopts(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "8")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=a", "rate=100")
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=50", "--json")
    producer.wait_for("attached")
    consumer.wait_for("attached")
    os.kill(daemon.pid, signal.SIGKILL)
    assert daemon.wait() == -signal.SIGKILL
    # Clients notice and say so, and keep going without it.
    producer.wait_for("daemon of FIFO .* is gone")
    seen = len(records(consumer))
    wait_until(lambda: len(records(consumer)) > seen + 10, what="consumer to keep going")
    st = status(fifo_name)
    assert st["daemon"] == "gone"
    listing = shmfifo("status")
    assert fifo_name in listing.stdout and "gone" in listing.stdout
    # A new client refuses, saying how to restart the daemon.
    late = shmfifo("producer", "--fifo", fifo_name, "item=b")
    assert late.returncode == 3
    assert "not running" in late.stderr and f"shmfifo fifo --name {fifo_name}" in late.stderr
    # A restarted daemon adopts the FIFO with its items.
    restarted = procs.daemon(fifo_name)
    restarted.wait_for("adopting FIFO")
    restarted.wait_for(r"recovery \d+ done")
    producer.wait_for("running again")
    producer.signal()
    assert producer.wait() == 0
    put = int(producer.wait_for(r"after (\d+) items").split("after ")[1].split()[0])
    wait_until(lambda: status(fifo_name)["items"] == 0, what="drain")
    consumer.signal()
    assert consumer.wait() == 0
    assert [r["seq"] for r in records(consumer)] == list(range(1, put + 1))
    restarted.signal()
    assert restarted.wait() == 0


def test_keep_leaves_items_for_the_next_daemon(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "8", "--keep")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=k", "rate=max",
                       "count=5").wait() == 0
    daemon.signal()
    assert daemon.wait() == 0
    daemon.wait_for("kept FIFO .* with 5 item")
    assert os.path.exists(names.shm_path(fifo_name))
    again = procs.daemon(fifo_name)
    again.wait_for("5 item")
    assert [r["seq"] for r in drain(procs, fifo_name, 5)] == [1, 2, 3, 4, 5]
    again.signal()
    assert again.wait() == 0
    assert not os.path.exists(names.shm_path(fifo_name))


def test_default_stop_reports_discarded_items(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "8", "--drain-timeout", "0.2")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=d", "rate=max",
                       "count=6").wait() == 0
    daemon.signal()
    assert daemon.wait() == 0
    daemon.wait_for("discarded 6 item")


def test_stopped_client_blocks_recovery_is_reported_and_can_be_killed(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "8", "--kill-stopped", "2")
    stopped = procs.spawn("consumer", "--fifo", fifo_name, "rate=max")   # blocks on empty
    stopped.wait_for("attached")
    wait_until(lambda: any(c["state"] == "blocked on empty"
                           for c in status(fifo_name)["clients"]), what="blocked consumer")
    os.kill(stopped.pid, signal.SIGSTOP)
    victim = procs.spawn("producer", "--fifo", fifo_name, "item=v", "rate=200", "count=5",
                         env={"SHMFIFO_CRASH_AT": "put.lock:3"})
    assert victim.wait() == -signal.SIGKILL
    line = daemon.wait_for(rf"recovery waits for client pid {stopped.pid}, which is stopped")
    assert "pid" in line
    st = status(fifo_name)
    assert st["daemon"] == "recovering" and st["blocker"] == stopped.pid
    shown = shmfifo("status", fifo_name).stdout
    assert f"recovery waits for pid {stopped.pid}" in shown
    daemon.wait_for(rf"killing stopped client pid {stopped.pid}")
    assert stopped.wait() == -signal.SIGKILL
    daemon.wait_for(r"recovery \d+ done")
    assert_consistent(fifo_name, expected_items=2)
    daemon.signal()
    assert daemon.wait() == 0


def test_stopped_client_resumed_lets_recovery_finish(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "8")
    stopped = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "--json")
    stopped.wait_for("attached")
    wait_until(lambda: any(c["state"] == "blocked on empty"
                           for c in status(fifo_name)["clients"]), what="blocked consumer")
    os.kill(stopped.pid, signal.SIGSTOP)
    victim = procs.spawn("producer", "--fifo", fifo_name, "item=v", "rate=200", "count=5",
                         env={"SHMFIFO_CRASH_AT": "put.commit:3"})
    assert victim.wait() == -signal.SIGKILL
    daemon.wait_for(rf"recovery waits for client pid {stopped.pid}")
    os.kill(stopped.pid, signal.SIGCONT)
    daemon.wait_for(r"recovery \d+ done")
    wait_until(lambda: len(records(stopped)) == 3, what="the resumed consumer")
    assert [r["seq"] for r in records(stopped)] == [1, 2, 3]
    stopped.signal()
    assert stopped.wait() == 0
    daemon.signal()
    assert daemon.wait() == 0


def test_client_killed_while_parked(procs, fifo_name):
    """A client that dies while parked (waiting out a recovery) is recovered in turn."""
    daemon = procs.daemon(fifo_name, "--size", "4")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=max",
                       "count=4").wait() == 0
    stopped = procs.spawn("producer", "--fifo", fifo_name, "item=s", "rate=max")
    parked = procs.spawn("producer", "--fifo", fifo_name, "item=t", "rate=max")

    def blocked(pid):
        return any(c["pid"] == pid and c["state"] == "blocked on full"
                   for c in status(fifo_name)["clients"])

    wait_until(lambda: blocked(stopped.pid) and blocked(parked.pid), what="blocked producers")
    os.kill(stopped.pid, signal.SIGSTOP)
    # A consumer dies holding item 1 and the mutex: the recovery waits for the stopped
    # producer, while the other producer parks.
    victim = procs.spawn("consumer", "--fifo", fifo_name, "rate=max",
                         env={"SHMFIFO_CRASH_AT": "get.taken:1"})
    assert victim.wait() == -signal.SIGKILL
    daemon.wait_for(rf"recovery waits for client pid {stopped.pid}")
    wait_until(lambda: any(c["pid"] == parked.pid and c["state"] == "parked"
                           for c in status(fifo_name)["clients"]), what="parked producer")
    os.kill(parked.pid, signal.SIGKILL)
    parked.wait()
    os.kill(stopped.pid, signal.SIGCONT)
    daemon.wait_for(r"recovery \d+ done")
    st = assert_consistent(fifo_name, expected_items=4)
    assert [c["pid"] for c in st["clients"]] == [stopped.pid]
    stopped.signal()
    assert stopped.wait() == 0
    assert [r["seq"] for r in drain(procs, fifo_name, 4)] == [1, 2, 3, 4]
    daemon.signal()
    assert daemon.wait() == 0


def test_clean_refuses_while_alive_and_removes_when_dead(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=1")
    consumer.wait_for("attached")
    refused = shmfifo("clean", fifo_name)
    assert refused.returncode == 1
    assert f"daemon pid {daemon.pid}" in refused.stderr
    assert f"consumer pid {consumer.pid}" in refused.stderr
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    refused = shmfifo("clean", fifo_name)
    assert refused.returncode == 1 and f"consumer pid {consumer.pid}" in refused.stderr
    os.kill(consumer.pid, signal.SIGKILL)
    consumer.wait()
    cleaned = shmfifo("clean", fifo_name)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "removed /dev/shm/shmfifo." + fifo_name in cleaned.stdout
    assert not os.path.exists(names.shm_path(fifo_name))
    again = shmfifo("clean", fifo_name)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def _make_foreign_segment(name, content):
    shm = posix_ipc.SharedMemory(names.shm_name(name), posix_ipc.O_CREX, mode=0o600,
                                 size=len(content) or 0)
    if content:
        os.pwrite(shm.fd, content, 0)
    shm.close_fd()


def _snapshot_files(name):
    found = {}
    for entry in sorted(os.listdir(names.SHM_DIR)):
        if names.PREFIX + name in entry:
            with open(os.path.join(names.SHM_DIR, entry), "rb") as f:
                found[entry] = f.read()
    return found


def _valid_then(procs, name, mutate):
    """A real FIFO, killed, then damaged by ``mutate(fd, words_offset_bytes)``."""
    daemon = procs.daemon(name, "--size", "4")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    fd = os.open(names.shm_path(name), os.O_RDWR)
    try:
        mutate(fd)
    finally:
        os.close(fd)


CORRUPTIONS = {
    "foreign": (lambda fd: os.pwrite(fd, b"NOTAFIFO" * 8, 0), "wrong magic"),
    "version": (lambda fd: os.pwrite(fd, (99).to_bytes(8, "little"), 8), "layout version 99"),
    "geometry": (lambda fd: os.pwrite(fd, (1 << 40).to_bytes(8, "little"), 16),
                 "geometry is out of range"),
    "contradiction": (lambda fd: os.pwrite(fd, (7).to_bytes(8, "little"), 4 * 8),
                      "contradict"),
    "truncated": (lambda fd: os.ftruncate(fd, 4096), "truncated"),
    "tiny": (lambda fd: os.ftruncate(fd, 10), "shorter than a header"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_segment_is_refused_and_left_unchanged(procs, fifo_name, kind):
    mutate, reason = CORRUPTIONS[kind]
    _valid_then(procs, fifo_name, mutate)
    before = _snapshot_files(fifo_name)
    for argv, code in ((["producer", "--fifo", fifo_name, "item=a"], 1),
                       (["consumer", "--fifo", fifo_name], 1),
                       (["status", fifo_name], 1),
                       (["fifo", "--name", fifo_name], 1)):
        result = shmfifo(*argv)
        assert result.returncode == code, (argv, result.stderr)
        assert reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _snapshot_files(fifo_name) == before
    listing = shmfifo("status")
    assert listing.returncode == 0 and fifo_name in listing.stdout and "unreadable" in \
        listing.stdout
    assert shmfifo("clean", fifo_name).returncode == 1           # needs --force
    assert shmfifo("clean", fifo_name, "--force").returncode == 0
    assert not _snapshot_files(fifo_name)


def test_zero_length_semaphore_file_is_refused(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--size", "4")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    path = names.sem_path(fifo_name, "fill")
    os.truncate(path, 0)
    before = _snapshot_files(fifo_name)
    for argv in (["consumer", "--fifo", fifo_name], ["fifo", "--name", fifo_name],
                 ["status", fifo_name]):
        result = shmfifo(*argv)
        assert result.returncode == 1, result.stderr
        assert f"{path} is 0 bytes" in result.stderr
    assert _snapshot_files(fifo_name) == before
    assert shmfifo("clean", fifo_name).returncode == 0
    assert not _snapshot_files(fifo_name)


def test_foreign_object_with_the_name(fifo_name):
    _make_foreign_segment(fifo_name, b"hello world, not a fifo" * 40)
    try:
        result = shmfifo("consumer", "--fifo", fifo_name)
        assert result.returncode == 1 and "wrong magic" in result.stderr
        with open(names.shm_path(fifo_name), "rb") as f:
            assert f.read().startswith(b"hello world")
    finally:
        posix_ipc.unlink_shared_memory(names.shm_name(fifo_name))


@pytest.mark.parametrize("bad", ["a/b", "../x", "a b", "-x", ".hidden", "x" * 101, "é", ""])
def test_forbidden_names(bad):
    for argv in (["fifo", f"--name={bad}"], ["producer", f"--fifo={bad}", "item=a"],
                 ["status", "--", bad], ["clean", "--", bad]):
        result = shmfifo(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert ("--fifo" in result.stderr or "name" in result.stderr)
        assert "A-Z a-z 0-9" in result.stderr
        assert "Traceback" not in result.stderr


def test_permissions_owner_only_by_default_and_group_on_request(procs, fifo_names):
    private, shared = fifo_names(), fifo_names()
    old = os.umask(0)            # the mode must be set explicitly, not left to the umask
    try:
        a = procs.daemon(private)
        b = procs.daemon(shared, "--mode", "660")
    finally:
        os.umask(old)
    for name, mode in ((private, 0o600), (shared, 0o660)):
        assert stat.S_IMODE(os.stat(names.shm_path(name)).st_mode) == mode
        for which in ("empty", "fill", "mutex"):
            assert stat.S_IMODE(os.stat(names.sem_path(name, which)).st_mode) == mode
    for d in (a, b):
        d.signal()
        assert d.wait() == 0


def test_requeue_onto_a_full_ring_goes_beyond_the_capacity_with_debt(procs, fifo_name,
                                                                     tmp_path):
    """A consumer dies holding an item after the room it left in the queue was filled again:
    the re-queue makes the ring hold capacity + 1 items (the item kept its own slot, one of
    the in-flight ones), and `debt` stands for the missing `empty` token."""
    daemon = procs.daemon(fifo_name, "--size", "4")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=max",
                       "count=4").wait() == 0
    held = str(tmp_path / "held")
    holder = procs.python(holder_code(fifo_name, held))
    wait_until(lambda: os.path.exists(held) and open(held).read(), what="a held item")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=q", "rate=max",
                       "count=1").wait() == 0        # the freed slot is filled again
    st = status(fifo_name)
    assert st["items"] == 4 and st["semaphores"]["empty"] == 0 and st["in_flight"] == 1
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    daemon.wait_for(r"recovery \d+ done")
    st = status(fifo_name)
    assert st["items"] == 5 and st["debt"] == 1
    assert st["semaphores"]["fill"] == 5 and st["semaphores"]["empty"] == 0
    got = drain(procs, fifo_name, 5)
    assert [r["item"] for r in got] == ["p", "p", "p", "p", "q"]
    assert [r["seq"] for r in got][:4] == [1, 2, 3, 4]     # the re-queued item 1 is first
    st = assert_consistent(fifo_name, expected_items=0)
    assert st["debt"] == 0 and st["semaphores"]["empty"] == 4
    daemon.signal()
    assert daemon.wait() == 0
