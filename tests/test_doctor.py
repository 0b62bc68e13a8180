"""``shmfifo doctor`` and ``shmfifo --version``: real runs of the command, a private small
/dev/shm (``unshare -m``), and logind's configuration parsed from real files."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import shmfifo
from procs import WAIT
from shmfifo import doctor, names
from shmfifo.daemon import geometry_for
from shmfifo.doctor import Check, check_remove_ipc, logind_config_files, remove_ipc_setting
from shmfifo.segment import reserved_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = ["/dev/shm", "RemoveIPC", "semaphores", "C accelerator", "Python"]


def shmfifo_cmd(*args, env=None):
    full = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    full.pop("SHMFIFO_PURE", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "shmfifo", *args], capture_output=True,
                          text=True, timeout=WAIT, env=full, stdin=subprocess.DEVNULL)


def test_doctor_finds_this_machine_ready():
    result = shmfifo_cmd("doctor")
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split(":")[0].split(None, 1)[1] for line in lines] == CHECKS
    assert all(line.startswith("ok       ") for line in lines), lines
    assert "a FIFO of 32 × 128 B for 32 clients needs 252 KiB" in lines[0]
    assert result.stderr == ""


def test_doctor_json_is_the_same_checks():
    result = shmfifo_cmd("doctor", "--json", "--size", "8")
    assert result.returncode == 0, result.stderr
    checks = json.loads(result.stdout)
    assert [c["name"] for c in checks] == CHECKS
    assert all(c["ok"] and c["fix"] == "" for c in checks)
    assert "a FIFO of 8 × 128 B" in checks[0]["detail"]


@pytest.mark.parametrize("args, fragment", [
    (["--size", "0"], "--size: '0' is not allowed"),
    (["--item-size", "x"], "--item-size: 'x' is not allowed"),
    (["--size", "2000000"], "size: 2000000 is not allowed; a whole number of items from 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_doctor_bad_option_is_a_usage_error(args, fragment):
    result = shmfifo_cmd("doctor", *args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    line, = result.stderr.splitlines()
    assert line.startswith("shmfifo doctor: error: ") and fragment in line, line


def test_doctor_and_version_say_which_accelerator_runs():
    result = shmfifo_cmd("--version")
    assert result.returncode == 0
    assert result.stdout == f"shmfifo {shmfifo.__version__}\naccelerator: C\n"
    pure = shmfifo_cmd("--version", env={"SHMFIFO_PURE": "1"})
    assert pure.stdout == f"shmfifo {shmfifo.__version__}\naccelerator: none (pure Python)\n"

    line = [ln for ln in shmfifo_cmd("doctor", env={"SHMFIFO_PURE": "1"}).stdout.splitlines()
            if "C accelerator" in ln][0]
    assert line.startswith("ok       C accelerator: built (_fastpath.")
    assert line.endswith("but disabled by SHMFIFO_PURE=1: pure Python")


def test_what_doctor_reserves_is_what_a_daemon_takes(fifo_name):
    """The bytes doctor checks for are the blocks a real FIFO's files take in /dev/shm."""
    for options in ({}, {"capacity": 100, "item_size": 1000, "max_clients": 3},
                    {"capacity": 5, "split_locks": True}):
        with shmfifo.serve(fifo_name, **options) as daemon:
            assert daemon.geometry == geometry_for(**options)
            paths = [names.shm_path(fifo_name)] + [names.sem_path(fifo_name, w)
                                                   for w in names.SEMAPHORES]
            taken = sum(os.stat(p).st_blocks * 512 for p in paths if os.path.exists(p))
            assert taken == reserved_bytes(daemon.geometry), options


SMALL_SHM = """
set -e
mount -t tmpfs -o size=1m tmpfs /dev/shm
set +e
"$PY" -m shmfifo doctor
echo "default exit $?"
"$PY" -m shmfifo doctor --size 4096 --item-size 4096
echo "big exit $?"
ls /dev/shm | sed 's/^/left: /'
mount -t tmpfs -o ro,size=1m tmpfs /dev/shm
"$PY" -m shmfifo doctor
echo "ro exit $?"
mkdir -p "$DISK"
mount --bind "$DISK" /dev/shm
"$PY" -m shmfifo doctor
echo "disk exit $?"
"""


def test_doctor_on_a_small_read_only_or_disk_dev_shm(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private /dev/shm")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not permitted here: {probe.stderr.decode().strip()}")
    disk = str(tmp_path / "shm-on-disk")
    result = subprocess.run(["unshare", "-m", "sh", "-c", SMALL_SHM], capture_output=True,
                            text=True, timeout=60,
                            env=dict(os.environ, PY=sys.executable, PYTHONPATH=REPO,
                                     DISK=disk))
    out = result.stdout.splitlines()
    assert "Traceback" not in result.stderr, result.stderr

    def shm_line(block):       # the /dev/shm line printed before "<block> exit"
        end = out.index(next(line for line in out if line.startswith(f"{block} exit")))
        return [line for line in out[:end] if line[9:].startswith("/dev/shm:")][-1]

    assert "default exit 0" in out, out
    assert shm_line("default").startswith("ok       /dev/shm: tmpfs, 1 MiB free")

    assert "big exit 1" in out, out
    line = shm_line("big")
    assert line.startswith("problem  /dev/shm: tmpfs, 1 MiB free, but a FIFO of 4096 × 4096 B "
                           "for 32 clients needs 20.4 MiB — fix: "), line
    assert ("— fix: mount a larger tmpfs (docker run --shm-size=64m; or mount -o "
            "remount,size=64m /dev/shm), or make the FIFO smaller") in line
    assert not [line for line in out if line.startswith("left:")], out

    assert "ro exit 1" in out
    assert shm_line("ro") == ("problem  /dev/shm: is mounted read-only — fix: mount -o "
                              "remount,rw /dev/shm")
    ro = out[out.index(shm_line("ro")):out.index("ro exit 1")]
    assert [line.split(":")[0] for line in ro if line.startswith("problem")] == [
        "problem  /dev/shm", "problem  semaphores"], ro

    assert "disk exit 1" in out
    assert "/dev/shm: is on " in shm_line("disk") and "not tmpfs" in shm_line("disk")
    assert "fix: mount -t tmpfs -o mode=1777,size=1g tmpfs /dev/shm" in shm_line("disk")


# -- the pieces, on real files -----------------------------------------------------------------

def write(root, relative, text):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_remove_ipc_is_yes_by_default(tmp_path):
    root = str(tmp_path)
    assert logind_config_files(root) == []
    assert remove_ipc_setting([]) == (True, None)
    main = write(root, "etc/systemd/logind.conf", "[Login]\n#RemoveIPC=no\n")
    assert logind_config_files(root) == [main]
    assert remove_ipc_setting([main]) == (True, None)


def test_remove_ipc_follows_systemds_order_and_sections(tmp_path):
    root = str(tmp_path)
    main = write(root, "etc/systemd/logind.conf", "[Login]\nRemoveIPC=no\n")
    write(root, "usr/lib/systemd/logind.conf", "[Login]\nRemoveIPC=yes\n")    # hidden by /etc
    vendor = write(root, "usr/lib/systemd/logind.conf.d/10-vendor.conf",
                   "[Login]\nRemoveIPC=yes\n")
    write(root, "usr/lib/systemd/logind.conf.d/50-site.conf", "[Login]\nRemoveIPC=yes\n")
    site = write(root, "etc/systemd/logind.conf.d/50-site.conf",
                 "# ours\n[Other]\nRemoveIPC=yes\n[Login]\n  RemoveIPC = off  \n")
    write(root, "run/systemd/logind.conf.d/notes.txt", "[Login]\nRemoveIPC=yes\n")
    files = logind_config_files(root)
    assert files == [main, vendor, site]
    assert remove_ipc_setting(files) == (False, site)
    assert remove_ipc_setting(files[:2]) == (True, vendor)

    late = write(root, "run/systemd/logind.conf.d/90-late.conf",
                 "[Login]\nRemoveIPC=maybe\nremoveipc=no\n;RemoveIPC=no\nRemoveIPC=1\n")
    files = logind_config_files(root)
    assert files[-1] == late
    assert remove_ipc_setting(files) == (True, late)     # 'maybe' and lower case ignored


def test_remove_ipc_applies_only_to_normal_users_who_log_out(tmp_path):
    root = str(tmp_path)
    write(root, "etc/login.defs", "SYS_UID_MIN 100\nSYS_UID_MAX 499\n")
    user = check_remove_ipc(uid=1000, root=root, logind=True)
    assert not user.ok
    assert "yes (systemd's default), and it applies to" in user.detail
    assert "(uid 1000 > 499)" in user.detail
    assert user.fix.startswith("put RemoveIPC=no under [Login] in "
                               "/etc/systemd/logind.conf.d/shmfifo.conf")
    assert "loginctl enable-linger" in user.fix

    assert check_remove_ipc(uid=0, root=root, logind=True) == Check(
        "RemoveIPC", True, "yes (systemd's default), but it spares root and system users "
                           "(uid 0 ≤ 499)")
    assert check_remove_ipc(uid=1000, root=root, logind=False) == Check(
        "RemoveIPC", True, "systemd-logind does not run here, so no logout removes shared memory")
    write(root, "run/systemd/system/.keep", "")             # systemd is the init: logind runs
    assert not check_remove_ipc(uid=1000, root=root).ok

    import pwd
    try:
        name = pwd.getpwuid(1000).pw_name
    except KeyError:
        name = None
    if name:
        write(root, f"var/lib/systemd/linger/{name}", "")
        lingers = check_remove_ipc(uid=1000, root=root, logind=True)
        assert lingers.ok and "lingers" in lingers.detail
    dropin = write(root, "etc/systemd/logind.conf.d/shmfifo.conf", "[Login]\nRemoveIPC=no\n")
    assert check_remove_ipc(uid=1001, root=root, logind=True) == Check(
        "RemoveIPC", True, f"no (set in {dropin})")


def test_the_mount_of_a_path_is_the_deepest_and_last_stacked(tmp_path):
    info = write(str(tmp_path), "mountinfo", "\n".join([
        "22 1 0:21 / / rw,relatime - overlay overlay rw",
        "23 22 0:22 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k",
        "25 23 0:23 / /dev/shm rw,relatime - tmpfs shm rw,size=65536k",
        "30 25 0:27 / /dev/shm ro,relatime - ext4 /dev/sda1 rw",
        "31 22 0:28 / /my\\040dir rw shared:5 - tmpfs tmpfs rw",
        "garbage line",
    ]) + "\n")
    assert doctor.find_mount("/dev/shm", info) == ("/dev/shm", "ext4", {"ro", "relatime", "rw"})
    assert doctor.find_mount("/dev/shmx", info)[0] == "/dev"
    assert doctor.find_mount("/my dir/x", info)[:2] == ("/my dir", "tmpfs")
    assert doctor.find_mount("/usr", info)[:2] == ("/", "overlay")
    assert doctor.find_mount("/usr", str(tmp_path / "missing")) is None


def test_sizes_read_as_people_write_them():
    assert [doctor.size_text(n) for n in (0, 1023, 4096, 352256, 1536 * 1024,
                                          int(23.5 * 2**30))] == \
        ["0 B", "1023 B", "4 KiB", "344 KiB", "1.5 MiB", "23.5 GiB"]
    assert [doctor._tmpfs_size(n) for n in (1, 64 << 20, (64 << 20) + 1, 3 << 30)] == \
        ["64m", "64m", "128m", "4g"]


def test_requires_python_comparisons():
    assert doctor._satisfies((3, 11, 7), ">=3.9") is True
    assert doctor._satisfies((3, 8, 18), ">=3.9") is False
    assert doctor._satisfies((3, 11, 7), ">=3.9, <3.11") is False
    assert doctor._satisfies((3, 11, 7), "~=3.9") is None


def test_the_shm_check_on_a_directory_of_any_mount(tmp_path):
    """check_shm on a real directory, with the mount table it is told: a tmpfs that holds it
    as a part, an unknown type (no /proc), another type, a read-only tmpfs."""
    shm = tmp_path / "shm"
    shm.mkdir()
    path, geometry = str(shm), geometry_for()

    def table(*lines):
        return write(str(tmp_path), "mountinfo", "".join(line + "\n" for line in lines))

    part = doctor.check_shm(geometry, path, table(f"1 0 0:1 / {tmp_path} rw - tmpfs tmpfs rw"))
    assert part.ok and part.detail.startswith(f"tmpfs (part of {tmp_path}), ")
    unknown = doctor.check_shm(geometry, path, str(tmp_path / "no-such-file"))
    assert unknown.ok and unknown.detail.startswith("a file system of unknown type, ")
    disk = doctor.check_shm(geometry, path, table("1 0 0:1 / / rw - ext4 /dev/sda1 rw"))
    assert not disk.ok and disk.detail.startswith("is on ext4 (part of /), not tmpfs")
    ro = doctor.check_shm(geometry, path, table(f"1 0 0:1 / {path} ro - tmpfs tmpfs ro"))
    assert (ro.ok, ro.detail, ro.fix) == (False, "is mounted read-only",
                                          f"mount -o remount,rw {path}")
    missing = doctor.check_shm(geometry, str(tmp_path / "absent"))
    assert not missing.ok and missing.detail == "cannot be used: No such file or directory"
    assert missing.fix.startswith("mount -t tmpfs -o mode=1777,size=1g tmpfs /dev/shm")
