"""``shmfifo doctor``: can this machine run a FIFO? One line per check, each problem with its fix.

    $ shmfifo doctor
    ok       /dev/shm: tmpfs, 23.5 GiB free (a FIFO of 32 × 128 B for 32 clients needs 252 KiB)
    ok       RemoveIPC: yes (systemd's default), but it spares root and system users (uid 0 ≤ 999)
    ok       semaphores: created, posted, acquired with a timeout and removed one
    ok       C accelerator: built and in use (_fastpath.cpython-311-x86_64-linux-gnu.so)
    ok       Python: 3.11.7 (CPython), shmfifo requires >=3.9
    $ echo $?
    0

A problem reads ``problem  NAME: what was found — fix: what to do``, and the exit code is 1.

Each check is a :class:`Check`; :func:`run_checks` makes them and the CLI only prints them.
What each one reads:

* /dev/shm: the mount that holds it (``/proc/self/mountinfo``), its type (tmpfs expected), its
  mode and read-only flag, and ``statvfs`` free space against :func:`segment.reserved_bytes`
  of the geometry the daemon would create for the given options (daemon.geometry_for).
* RemoveIPC: systemd-logind removes a user's POSIX shared memory and semaphores when the
  user's last login session ends, if ``RemoveIPC=yes`` (its default) and the user is not a
  system user (uid above SYS_UID_MAX, read from /etc/login.defs). The setting comes from
  logind.conf and its drop-ins (:func:`logind_config_files`, :func:`remove_ipc_setting`); a
  lingering user (``loginctl enable-linger``) never ends, and without logind nothing is
  removed.
* semaphores: a named semaphore of this process is created, posted, acquired with a timeout
  and unlinked, as the daemon and clients do.
* C accelerator: whether shmfifo._fastpath imports (and if not, whether it was built at
  all), and ring.accelerator(), which path runs.
* Python: this interpreter against the installed distribution's Requires-Python.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import platform
import pwd
import re
import stat
import sys
import uuid

import posix_ipc

from . import names, ring
from .daemon import geometry_for
from .segment import reserved_bytes

__all__ = ["Check", "run_checks", "format_check", "logind_config_files", "remove_ipc_setting",
           "size_text"]


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, whether it is fine, what was found and,
    for a problem, what to do about it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(capacity: int | None = None, item_size: int | str | None = None,
               max_clients: int | None = None) -> list[Check]:
    """Every check, in the order printed, for a FIFO of these options (None: the daemon's
    default). An option out of range raises UsageError, as the daemon would."""
    geometry = geometry_for(capacity=capacity, item_size=item_size, max_clients=max_clients)
    return [check_shm(geometry), check_remove_ipc(), check_semaphores(), check_accelerator(),
            check_python()]


def format_check(check: Check) -> str:
    """``ok       NAME: DETAIL`` or ``problem  NAME: DETAIL — fix: FIX``."""
    line = f"{'ok' if check.ok else 'problem':<9}{check.name}: {check.detail}"
    return line + (f" — fix: {check.fix}" if not check.ok and check.fix else "")


def size_text(n: int) -> str:
    """A byte count as people read it: 512 B, 344 KiB, 1.5 MiB, 23.5 GiB."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B" or value >= 100 or value == int(value):
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


# -- /dev/shm ---------------------------------------------------------------------------------

_TMPFS_FIX = "mount -t tmpfs -o mode=1777,size=1g tmpfs /dev/shm (a container: docker run " \
             "--shm-size=1g)"


def _unescape(field):
    """A path field of mountinfo, where space, tab, newline and backslash are octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_mount(path: str, mountinfo: str = "/proc/self/mountinfo"):
    """The mount that holds ``path``: (mount point, fs type, options), or None if unknown.

    The deepest mount point that contains the path, and of several mounts stacked on that
    point the last, which is the one visible."""
    best = None
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 6 or len(tail) < 3:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            options = set(fields[5].split(",")) | set(tail[2].split(","))
            best = (point, tail[0], options)
    return best


def check_shm(geometry, shm_dir: str = names.SHM_DIR,
              mountinfo: str = "/proc/self/mountinfo") -> Check:
    """/dev/shm exists, is a tmpfs we can write to, and can hold a FIFO of ``geometry``."""
    name = shm_dir
    path = os.path.realpath(shm_dir)      # an old /dev/shm -> /run/shm symlink
    try:
        st = os.stat(path)
    except OSError as error:
        return Check(name, False, f"cannot be used: {error.strerror}", _TMPFS_FIX)
    if not stat.S_ISDIR(st.st_mode):
        return Check(name, False, "is not a directory", _TMPFS_FIX)
    # Without /proc (rare) the type is not known: the checks that need it are skipped.
    point, fstype, options = find_mount(path, mountinfo) or (path, None, set())
    where = "" if point == path else f" (part of {point})"
    if fstype not in ("tmpfs", None):
        return Check(name, False, f"is on {fstype}{where}, not tmpfs: FIFOs would be written "
                                  f"back to disk and outlive a reboot", _TMPFS_FIX)
    fstype = fstype or "a file system of unknown type"
    if "ro" in options:
        return Check(name, False, f"is mounted read-only{where}",
                     f"mount -o remount,rw {point}")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(name, False, f"is not writable by uid {os.geteuid()} (mode "
                                  f"{stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid})",
                     f"chmod 1777 {path} as root (its usual mode)")
    vfs = os.statvfs(path)
    free, total = vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize
    g = geometry
    fifo = f"a FIFO of {g.capacity} × {g.item_size} B for {g.max_clients} clients"
    need = reserved_bytes(g)
    if free < need:
        size = _tmpfs_size(total - free + need)
        return Check(name, False, f"{fstype}{where}, {size_text(free)} free, but {fifo} "
                                  f"needs {size_text(need)}",
                     f"mount a larger tmpfs (docker run --shm-size={size}; or mount -o "
                     f"remount,size={size} {point}), or make the FIFO smaller (--size, "
                     f"--item-size, --max-clients)")
    return Check(name, True, f"{fstype}{where}, {size_text(free)} free ({fifo} needs "
                             f"{size_text(need)})")


def _tmpfs_size(n):
    """The smallest power of two of MiB, at least 64 MiB, holding ``n`` bytes, as tmpfs's and
    docker's size options write it (512m, 2g)."""
    mib = 64
    while mib * (1 << 20) < n:
        mib *= 2
    return f"{mib // 1024}g" if mib >= 1024 else f"{mib}m"


# -- RemoveIPC --------------------------------------------------------------------------------

# Where systemd looks for a configuration file and its drop-ins, highest precedence first.
CONFIG_DIRS = ("etc/systemd", "run/systemd", "usr/local/lib/systemd", "usr/lib/systemd",
               "lib/systemd")
_TRUE = {"1", "yes", "y", "true", "t", "on"}
_FALSE = {"0", "no", "n", "false", "f", "off"}


def logind_config_files(root: str = "/") -> list[str]:
    """logind's configuration files under ``root``, in the order systemd applies them (a
    setting in a later file overrides an earlier one): the first logind.conf found in
    CONFIG_DIRS, then every ``logind.conf.d/*.conf`` sorted by file name, where a file in a
    directory of higher precedence hides one of the same name in a lower one."""
    files, seen = [], set()
    for directory in CONFIG_DIRS:
        main = os.path.join(root, directory, "logind.conf")
        if os.path.isfile(main):
            files.append(main)
            break
    dropins = {}
    for directory in CONFIG_DIRS:
        folder = os.path.join(root, directory, "logind.conf.d")
        real = os.path.realpath(folder)
        if real in seen:            # /lib is /usr/lib on a merged-/usr system
            continue
        seen.add(real)
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".conf") and entry not in dropins:
                dropins[entry] = os.path.join(folder, entry)
    return files + [dropins[entry] for entry in sorted(dropins)]


def remove_ipc_setting(paths: list[str]) -> tuple[bool, str | None]:
    """The effective RemoveIPC of logind configuration files read in order: (value, the
    file that set it), or (True, None), systemd's default, when none does. As systemd does,
    only the ``[Login]`` section counts, the last valid assignment wins and an invalid
    value is ignored."""
    value, source = True, None
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        section = None
        for line in lines:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, text = line.partition("=")
            if section != "Login" or not sep or key.strip() != "RemoveIPC":
                continue
            text = text.strip().lower()
            if text in _TRUE or text in _FALSE:
                value, source = text in _TRUE, path
    return value, source


def _sys_uid_max(root):
    """SYS_UID_MAX of login.defs (what systemd is built with on Debian and Fedora), or 999."""
    try:
        with open(os.path.join(root, "etc/login.defs")) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "SYS_UID_MAX" and words[1].isdigit():
                    return int(words[1])
    except OSError:
        pass
    return 999


def _logind_runs(root):
    """systemd-logind is running, or systemd is the init (it starts logind for a login)."""
    if os.path.isdir(os.path.join(root, "run/systemd/system")):
        return True
    if root != "/":
        return False
    import psutil
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "systemd-logind":
            return True
    return False


def check_remove_ipc(uid: int | None = None, root: str = "/",
                     logind: bool | None = None) -> Check:
    """Would systemd-logind remove this user's FIFOs when the user logs out?"""
    name = "RemoveIPC"
    uid = os.geteuid() if uid is None else uid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    value, source = remove_ipc_setting(logind_config_files(root))
    origin = f"set in {source}" if source else "systemd's default"
    setting = f"{'yes' if value else 'no'} ({origin})"
    if not (_logind_runs(root) if logind is None else logind):
        return Check(name, True, "systemd-logind does not run here, so no logout removes "
                                 "shared memory")
    if not value:
        return Check(name, True, setting)
    limit = _sys_uid_max(root)
    if uid <= limit:
        return Check(name, True, f"{setting}, but it spares root and system users "
                                 f"(uid {uid} ≤ {limit})")
    if os.path.exists(os.path.join(root, "var/lib/systemd/linger", user)):
        return Check(name, True, f"{setting}, but {user} lingers (loginctl enable-linger), "
                                 f"so never logs out")
    return Check(name, False, f"{setting}, and it applies to {user} (uid {uid} > {limit}): "
                              f"when {user}'s last login session ends, systemd-logind removes "
                              f"every /dev/shm object of {user}'s, a running FIFO's included",
                 f"put RemoveIPC=no under [Login] in /etc/systemd/logind.conf.d/shmfifo.conf "
                 f"and restart systemd-logind; or run the daemon as a system user; or "
                 f"loginctl enable-linger {user}")


# -- semaphores, the accelerator, Python ------------------------------------------------------

def check_semaphores() -> Check:
    """Create, post, acquire with a timeout and unlink a named semaphore of our own."""
    name = "semaphores"
    sem_name = f"/shmfifo-doctor.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    fix = "glibc keeps named semaphores in /dev/shm: make it a writable tmpfs (mode 1777)"
    if not posix_ipc.SEMAPHORE_TIMEOUT_SUPPORTED:
        return Check(name, False, "this system's semaphores cannot wait with a timeout "
                                  "(sem_timedwait)", "run shmfifo on Linux")
    sem = None
    try:
        sem = posix_ipc.Semaphore(sem_name, posix_ipc.O_CREX, 0o600, 0)
        sem.release()
        sem.acquire(1.0)
        try:
            sem.acquire(0)
            return Check(name, False, "acquired a semaphore whose value was 0", fix)
        except posix_ipc.BusyError:
            pass
    except (posix_ipc.Error, OSError) as error:
        return Check(name, False, f"a named semaphore could not be used: {error}", fix)
    finally:
        if sem is not None:
            try:
                sem.unlink()
            except posix_ipc.Error:
                pass
            sem.close()
    return Check(name, True, "created, posted, acquired with a timeout and removed one")


def check_accelerator() -> Check:
    """Whether put and get run in C (shmfifo/_fastpath.c) or in Python, and why."""
    name = "C accelerator"
    try:
        built = os.path.basename(importlib.import_module("shmfifo._fastpath").__file__ or "")
    except ImportError as error:
        found = importlib.util.find_spec("shmfifo._fastpath") is not None
        why = f"built but it does not load: {error}" if found else "not built"
        return Check(name, False, f"{why}; put and get run in pure Python, about ten times "
                                  f"slower per item",
                     "install a C compiler and the Python headers (apt install gcc "
                     "python3-dev), then reinstall shmfifo")
    if ring.accelerator() != "C":
        return Check(name, True, f"built ({built}) but disabled by SHMFIFO_PURE=1: pure Python")
    return Check(name, True, f"built and in use ({built})")


def _requires_python():
    try:
        from importlib import metadata
        return metadata.metadata("shmfifo")["Requires-Python"]
    except Exception:         # not installed as a distribution (run from a source tree)
        return None


def _satisfies(version, spec):
    """Does ``version`` (a tuple of ints) meet a Requires-Python such as '>=3.9'? None if
    the specifier is not one of the plain comparisons."""
    compare = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
               "<": lambda a, b: a < b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
    for clause in spec.split(","):
        match = re.fullmatch(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*", clause)
        if not match:
            return None
        wanted = tuple(int(part) for part in match.group(2).split("."))
        if not compare[match.group(1)](version[:len(wanted)], wanted):
            return False
    return True


def check_python() -> Check:
    """This interpreter against shmfifo's Requires-Python."""
    name = "Python"
    here = f"{platform.python_version()} ({platform.python_implementation()})"
    spec = _requires_python()
    if spec is None:
        return Check(name, True, f"{here}; shmfifo is not installed as a distribution, so "
                                 f"its requires-python is not known here")
    if _satisfies(tuple(sys.version_info[:3]), spec) is False:
        return Check(name, False, f"{here}, but shmfifo requires {spec}",
                     f"run shmfifo with a Python that matches {spec}")
    return Check(name, True, f"{here}, shmfifo requires {spec}")
