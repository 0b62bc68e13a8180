"""Hostile and broken environments: another local user, files of the wrong type at a FIFO's
name, a /dev/shm too small for the FIFO, stray signals. Each gives a clear error (one line,
a documented exit code), never code execution, a hang, a traceback or a SIGBUS.

The other user is ``nobody``, run with ``runuser`` (these tests need root, as CI has); its
python is the system one with a copy of this checkout it can read.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from procs import READY, WAIT, status_of, wait_until
from shmfifo import names
from shmfifo.segment import unlink_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shmfifo(*args, timeout=WAIT, env=None):
    """Run the command as this user (bounded: a hang fails the test)."""
    full = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run([sys.executable, "-m", "shmfifo", *args], capture_output=True,
                          text=True, timeout=timeout, env=full, stdin=subprocess.DEVNULL)


def running(name):
    try:
        return status_of(name)["daemon"] == "running"
    except Exception:          # not there yet
        return False


def one_line_error(result, code):
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def nobody():
    """argv prefix that runs python as user nobody with a readable copy of shmfifo."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root and runuser to act as another user")
    python = None
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(["runuser", "-u", "nobody", "--", candidate, "-c",
                                "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            python = candidate
            break
    if python is None:
        pytest.skip(f"user nobody cannot run a Python {sys.version_info[:2]}")
    root = tempfile.mkdtemp(prefix="shmfifo-nobody-")
    os.chmod(root, 0o755)
    shutil.copytree(os.path.join(REPO, "shmfifo"), os.path.join(root, "shmfifo"))
    import posix_ipc
    import psutil
    shutil.copy(posix_ipc.__file__, root)
    shutil.copytree(os.path.dirname(psutil.__file__), os.path.join(root, "psutil"))
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    yield ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={root}", python]
    shutil.rmtree(root, ignore_errors=True)


PLANT = """
import os, sys, shmfifo
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
with shmfifo.attach(sys.argv[1]) as q:
    q.put(Evil())
print("planted", flush=True)
"""


@pytest.mark.parametrize("pure", ["0", "1"], ids=["c", "pure"])
def test_another_users_fifo_never_runs_its_pickles_here(nobody, procs, fifo_name, tmp_path,
                                                         pure):
    marker = f"/tmp/shmfifo-pwned-{os.getpid()}-{pure}"
    env = {"SHMFIFO_PURE": pure}
    daemon = subprocess.Popen(nobody + ["-m", "shmfifo", "fifo", "--name", fifo_name,
                                        "--mode", "666"],
                              stderr=subprocess.PIPE, text=True, start_new_session=True)

    def kill_daemon():        # runuser stays as the parent: kill its whole group
        try:
            os.killpg(daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        daemon.wait()
    try:
        wait_until(lambda: running(fifo_name), "nobody's daemon")
        planted = subprocess.run(nobody + ["-c", PLANT, fifo_name, marker],
                                 capture_output=True, text=True, timeout=WAIT)
        assert planted.returncode == 0, planted.stderr

        # By default another user's FIFO is refused outright, by the CLI and the library.
        line = one_line_error(shmfifo("consumer", "--fifo", fifo_name, "count=1", env=env), 1)
        assert "belongs to user nobody" in line and "mode 0666" in line
        import shmfifo as lib
        with pytest.raises(lib.ForeignFifo, match="belongs to user nobody"):
            lib.attach(fifo_name)

        # Shared on purpose: the pickle is shown, not unpickled.
        result = shmfifo("consumer", "--fifo", fifo_name, "count=1", "--shared", "--json",
                         env=env)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["type"] == "refused" and record["item"] is None
        assert "not unpickled" in result.stderr
        assert not os.path.exists(marker), "a pickle from another user ran as root"

        planted = subprocess.run(nobody + ["-c", PLANT, fifo_name, marker],
                                 capture_output=True, text=True, timeout=WAIT)
        with lib.attach(fifo_name, shared=True) as q:
            with pytest.raises(lib.UntrustedItem, match="not unpickled") as refused:
                q.get(timeout=WAIT)
            assert b"system" in refused.value.payload
            q.put("fine")                     # str items are no risk
            assert q.get(timeout=WAIT) == "fine"
        assert not os.path.exists(marker)

        # Its daemon dies: a daemon of ours must not adopt what nobody left.
        kill_daemon()
        wait_until(lambda: status_of(fifo_name)["daemon"] == "gone", "nobody's daemon gone")
        line = one_line_error(shmfifo("fifo", "--name", fifo_name), 1)
        assert "refusing FIFO" in line and "belongs to user nobody" in line
        # root may remove it
        assert shmfifo("clean", fifo_name, "--force").returncode == 0
        assert not os.path.exists(names.shm_path(fifo_name))
    finally:
        kill_daemon()
        if os.path.exists(marker):
            os.unlink(marker)


def test_names_planted_by_another_user_are_not_adopted(nobody, fifo_name):
    plant = ("import os, sys\n"
             "fd = os.open('/dev/shm/shmfifo.' + sys.argv[1], os.O_CREAT | os.O_RDWR, 0o666)\n"
             "os.fchmod(fd, 0o666)\n"
             "os.ftruncate(fd, 4096)\n")
    assert subprocess.run(nobody + ["-c", plant, fifo_name], timeout=WAIT).returncode == 0
    line = one_line_error(shmfifo("fifo", "--name", fifo_name), 1)
    assert "belongs to user nobody (uid" in line and "mode 0666" in line
    # nobody's `clean --force` of root's objects, and root's of nobody's
    unlink_names(fifo_name)


def test_another_user_cleaning_my_fifo_gets_one_line(nobody, procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    result = subprocess.run(nobody + ["-m", "shmfifo", "clean", fifo_name, "--force"],
                            capture_output=True, text=True, timeout=WAIT)
    line = one_line_error(result, 1)
    assert "in use" in line or "may not remove" in line, line
    daemon.signal()
    assert daemon.wait() == 0


def test_adopting_a_segment_wider_than_asked_is_refused(procs, fifo_name):
    daemon = procs.daemon(fifo_name, "--mode", "666", "--keep")
    assert "mode 0666" in daemon.wait_for(READY)
    daemon.signal()
    assert daemon.wait() == 0
    line = one_line_error(shmfifo("fifo", "--name", fifo_name), 1)
    assert "mode 0666, wider than the 0600 asked for" in line
    again = procs.daemon(fifo_name, "--mode", "666")      # asked for: adopted
    again.signal()
    assert again.wait() == 0


@pytest.mark.parametrize("mode", ["0", "400", "066"])
def test_a_mode_the_owner_cannot_use_is_a_usage_error(mode, fifo_name):
    line = one_line_error(shmfifo("fifo", "--name", fifo_name, "--mode", mode), 2)
    assert "--mode" in line and "owner read and write" in line


def _plant(kind, path):
    if kind == "named pipe":
        os.mkfifo(path, 0o600)
    elif kind == "symbolic link":
        os.symlink("/etc/passwd", path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        return s


@pytest.mark.parametrize("kind", ["named pipe", "symbolic link", "directory", "socket"])
def test_a_file_of_the_wrong_type_at_a_fifos_name(procs, fifo_names, kind):
    bad, good = fifo_names("bad"), fifo_names("good")
    daemon = procs.daemon(good)
    held = _plant(kind, names.shm_path(bad))
    try:
        listing = shmfifo("status")                    # never hangs (bounded by WAIT)
        assert listing.returncode == 0, listing.stderr
        bad_line = next(line for line in listing.stdout.splitlines() if bad in line)
        assert kind in bad_line
        assert any(good in line and "running" in line for line in listing.stdout.splitlines())
        as_json = shmfifo("status", "--json")
        assert as_json.returncode == 0
        assert {e["name"] for e in json.loads(as_json.stdout)["fifos"]} >= {bad, good}
        line = one_line_error(shmfifo("status", bad), 1)
        assert kind in line
        line = one_line_error(shmfifo("consumer", "--fifo", bad, "count=1"), 1)
        assert kind in line
        assert one_line_error(shmfifo("fifo", "--name", bad), 1)
        assert shmfifo("clean", bad, "--force").returncode == 0
        assert not os.path.lexists(names.shm_path(bad))
    finally:
        if held is not None:
            held.close()
        if os.path.isdir(names.shm_path(bad)):
            os.rmdir(names.shm_path(bad))
        elif os.path.lexists(names.shm_path(bad)):
            os.unlink(names.shm_path(bad))
        daemon.signal()
        assert daemon.wait() == 0
    if kind == "symbolic link":
        assert os.path.exists("/etc/passwd")


SMALL_SHM = """
set -e
mount -t tmpfs -o size=20m tmpfs /dev/shm
set +e
"$PY" -m shmfifo fifo --name big --size 100000 --item-size 1024
echo "big exit $?"
ls /dev/shm | sed 's/^/left: /'
"$PY" -m shmfifo fifo --name small --size 16 &
daemon=$!
for i in $(seq 100); do [ -e /dev/shm/shmfifo.small ] && break; sleep 0.05; done
"$PY" -c 'import shmfifo, time
for _ in range(100):
    try:
        q = shmfifo.attach("small"); break
    except shmfifo.DaemonNotRunning:
        time.sleep(0.05)
q.put("x"); print("small got", q.get()); q.close()'
kill $daemon
wait $daemon
echo "small exit $?"
"""


def test_a_fifo_too_big_for_dev_shm_fails_at_start_not_with_sigbus():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private /dev/shm")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not permitted here: {probe.stderr.decode().strip()}")
    result = subprocess.run(["unshare", "-m", "sh", "-c", SMALL_SHM], capture_output=True,
                            text=True, timeout=60,
                            env=dict(os.environ, PY=sys.executable, PYTHONPATH=REPO))
    out = result.stdout.splitlines()
    assert "big exit 1" in out, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if "big" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "needs 1" in errors[0] and "/dev/shm has" in errors[0], errors
    assert "--shm-size" in errors[0] and "--size" in errors[0]
    assert not [line for line in out if line.startswith("left:")], out
    assert "small got x" in out and "small exit 0" in out, (result.stdout, result.stderr)


@pytest.mark.parametrize("command", ["fifo", "producer", "consumer", "watch"])
def test_sighup_stops_every_command_cleanly(procs, fifo_name, command):
    daemon = procs.daemon(fifo_name)
    if command == "fifo":
        target = daemon
    elif command == "watch":               # plain snapshots: its output is not a terminal
        target = procs.spawn("status", fifo_name, "--watch", "--interval", "0.2")
        target.wait_for(fifo_name, stream="out")
        target.signal(signal.SIGHUP)
        assert target.wait() == 0, target.err[-3:]
        watch_term = procs.spawn("status", fifo_name, "--watch", "--interval", "0.2")
        watch_term.wait_for(fifo_name, stream="out")
        watch_term.signal(signal.SIGTERM)
        assert watch_term.wait() == 0, watch_term.err[-3:]
        target = daemon
    else:
        args = ["item=a"] if command == "producer" else []
        target = procs.spawn(command, "--fifo", fifo_name, *args, "rate=50")
        target.wait_for("attached")
    target.signal(signal.SIGHUP)
    assert target.wait() == 0, target.err[-3:]
    if command in ("producer", "consumer"):
        assert "SIGHUP" in target.err[-1]
        wait_until(lambda: not status_of(fifo_name)["clients"], "the client to detach")
        daemon.signal(signal.SIGHUP)
        assert daemon.wait() == 0
    assert not os.path.exists(names.shm_path(fifo_name))


def test_watch_interval_out_of_range_is_a_usage_error(procs, fifo_name):
    line = one_line_error(shmfifo("status", fifo_name, "--watch", "--interval", "1e308"), 2)
    assert "--interval" in line


def test_the_ready_line_reports_the_mode_the_objects_have(procs, fifo_name):
    old = os.umask(0o077)
    try:
        daemon = procs.daemon(fifo_name, "--mode", "660")
    finally:
        os.umask(old)
    assert "mode 0660" in daemon.wait_for(READY)
    assert stat.S_IMODE(os.stat(names.shm_path(fifo_name)).st_mode) == 0o660
    daemon.signal()
    assert daemon.wait() == 0


@pytest.mark.parametrize("pure", ["0", "1"], ids=["c", "pure"])
def test_a_stopped_client_holding_the_lock_is_named_and_killed(procs, fifo_name, pure):
    """SIGSTOP inside the lock section (a crash point that stops instead of killing): the
    daemon names the client in its log and in status, and --kill-stopped kills it, after
    which the usual recovery frees the lock and the FIFO moves again."""
    import psutil
    daemon = procs.daemon(fifo_name, "--size", "8", "--kill-stopped", "3")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=p", "rate=100")
    stuck = procs.spawn("consumer", "--fifo", fifo_name, "rate=max",
                        env={"SHMFIFO_PURE": pure, "SHMFIFO_CRASH_AT": "get.lock:5",
                             "SHMFIFO_CRASH_SIGNAL": "STOP"})
    wait_until(lambda: psutil.Process(stuck.pid).status() == psutil.STATUS_STOPPED,
               "the consumer to stop inside its lock section")
    daemon.wait_for(rf"a lock has been held .* client pid {stuck.pid}, .* is stopped",
                    timeout=5)
    text = shmfifo("status", fifo_name).stdout
    assert f"a lock is held by stopped pid {stuck.pid}" in text, text
    daemon.wait_for(rf"killing stopped client pid {stuck.pid}", timeout=5)
    assert stuck.wait() == -signal.SIGKILL
    daemon.wait_for(r"recovery \d+ done")
    taker = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=5")
    assert taker.wait() == 0, taker.err[-3:]
    assert status_of(fifo_name)["blocker"] == 0
    for proc in (producer, daemon):
        proc.signal()
        assert proc.wait() == 0
