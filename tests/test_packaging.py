"""Packaging, as a user or a distribution meets it: the sdist and wheel ``python -m build``
makes, an install on a machine without a C compiler (``CC=false``), the public API in
``help()`` and under a type checker reading the installed wheel (PEP 561).

Building takes a few seconds and the install into a new virtual environment about 15 (pip
fetches setuptools, posix_ipc and psutil as a user's install does).
"""

import os
import pydoc
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

import shmfifo
from shmfifo import ring

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_BUILT = "WARNING: shmfifo's C accelerator (shmfifo._fastpath) was not built:"


def run(argv, timeout=300, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **kwargs)
    assert result.returncode == 0, (argv, result.stdout[-4000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and the wheel built from this checkout, as ``python -m build`` makes them
    (the wheel from the unpacked sdist, so a file missing from the sdist breaks it)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), REPO])
    sdist, = out.glob("shmfifo-*.tar.gz")
    wheel, = out.glob("shmfifo-*.whl")
    return sdist, wheel


def tracked_files():
    """The files git tracks (the repository as committed plus this change), if git can say."""
    try:
        listed = subprocess.run(["git", "-C", REPO, "ls-files", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, text=True,
                                timeout=30)
    except OSError:
        return None
    return listed.stdout.split() if listed.returncode == 0 else None


def test_the_sdist_is_the_sources_and_nothing_built(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in",
                   "shmfifo/_fastpath.c", "shmfifo/py.typed", "shmfifo/doctor.py",
                   "tests/conftest.py", "tests/procs.py", "docs/design.md", "bin/setup"):
        assert needed in names, needed
    built = [n for n in names if n.endswith((".so", ".pyc", ".o")) or "__pycache__" in n or
             n.split("/")[0] in (".venv", "build", ".git", ".pytest_cache") or
             n.startswith("bench/out")]
    assert not built, built
    tracked = tracked_files()
    if tracked is not None:
        missing = [f for f in tracked if f.split("/")[0] in ("shmfifo", "tests", "docs", "bin")
                   and f not in names]
        assert not missing, f"tracked but not in the sdist: {missing}"


def test_the_wheel_has_the_package_its_types_and_the_accelerator(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        entry_points = whl.read(next(n for n in names
                                     if n.endswith(".dist-info/entry_points.txt")))
    assert "shmfifo/py.typed" in names and "shmfifo/doctor.py" in names
    assert not [n for n in names if n.endswith(".c") or n.startswith(("tests/", "bench/"))]
    accelerator = [n for n in names if re.fullmatch(r"shmfifo/_fastpath\..*\.so", n)]
    if ring._fastpath is not None:          # this machine has a compiler: the wheel has C
        assert len(accelerator) == 1, names
    assert b"\nRequires-Python: >=3.9\n" in metadata
    assert b"shmfifo = shmfifo.cli:run" in entry_points


def test_without_a_compiler_the_install_warns_and_works_in_pure_python(dist, tmp_path):
    """CC=false stands for a machine without gcc: setup.py's warning (pip -v shows it),
    bin/setup's (seen without asking), and a working pure-Python shmfifo."""
    sdist, _ = dist
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                    else {}))
    source, = tmp_path.glob("shmfifo-*/")
    env = dict(os.environ, CC="false")
    env.pop("SHMFIFO_PURE", None)
    env.pop("PYTHONPATH", None)

    target = tmp_path / "target"
    verbose = run([sys.executable, "-m", "pip", "install", "-v", "--no-build-isolation",
                   "--no-deps", "--disable-pip-version-check", "--target", str(target),
                   str(source)], env=env)
    assert NOT_BUILT in verbose.stdout + verbose.stderr
    assert not list(target.glob("shmfifo/_fastpath*")), list(target.glob("shmfifo/*"))

    # The README's way: bin/setup into a new virtual environment.
    venv = tmp_path / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)])
    setup = run([str(source / "bin" / "setup")], env=dict(env, VIRTUAL_ENV=str(venv)))
    assert setup.stdout == f"{venv}/bin/python\n"
    warning, = [line for line in setup.stderr.splitlines() if line.startswith("bin/setup:")]
    assert warning.startswith("bin/setup: warning: shmfifo's C accelerator was not built, so "
                              "shmfifo runs in pure Python")
    assert "apt install gcc python3-dev" in warning

    shmfifo_cmd = str(venv / "bin" / "shmfifo")
    version = run([shmfifo_cmd, "--version"], env=env, cwd=tmp_path)
    assert version.stdout == f"shmfifo {shmfifo.__version__}\naccelerator: none (pure Python)\n"
    doctor = subprocess.run([shmfifo_cmd, "doctor"], capture_output=True, text=True,
                            timeout=60, env=env, cwd=tmp_path)
    assert doctor.returncode == 1, doctor
    problems = [line for line in doctor.stdout.splitlines() if line.startswith("problem")]
    assert problems == ["problem  C accelerator: not built; put and get run in pure Python, "
                        "about ten times slower per item — fix: install a C compiler and the "
                        "Python headers (apt install gcc python3-dev), then reinstall shmfifo"]
    name = f"test.{os.getpid()}.pure-install"
    works = run([str(venv / "bin" / "python"), "-c",
                 "import shmfifo, sys\n"
                 "with shmfifo.serve(sys.argv[1]):\n"
                 "    with shmfifo.attach(sys.argv[1]) as q:\n"
                 "        q.put('x'); print(q.get(timeout=5), shmfifo.accelerator())\n", name],
                env=env, cwd=tmp_path, timeout=60)
    assert works.stdout == "x none (pure Python)\n"


def test_help_shows_every_option_of_attach_and_serve():
    attach = pydoc.render_doc(shmfifo.attach, renderer=pydoc.plaintext)
    assert "attach(name: 'str', *, shared: 'bool' = False, allow_pickle: 'bool' = False, " \
           "role: 'int' = 0, param: 'str' = '', rate: 'float' = 0.0, spin_us: 'float' = 0.0) " \
           "-> 'Fifo'" in attach
    for option in ("shared:", "allow_pickle:", "role, param, rate:", "spin_us:"):
        assert f"\n    {option}" in attach, option

    serve = pydoc.render_doc(shmfifo.serve, renderer=pydoc.plaintext)
    options = ["capacity", "item_size", "max_clients", "batch_max", "split_locks", "in_flight",
               "mode", "keep", "drain_timeout", "detach_timeout", "kill_stopped", "recovery", "poll",
               "log"]
    signature = serve.splitlines()[2]
    assert signature.startswith("serve(name: 'str' = 'default', *, capacity: 'int | None' "
                                "= None, item_size: 'int | str | None' = None"), signature
    assert re.findall(r"(\w+): '", signature)[1:] == options
    text = " ".join(serve.split())
    for option in options:
        assert option in text.split("FifoDaemon`'s:")[1], option
    daemon = " ".join(pydoc.render_doc(shmfifo.FifoDaemon, renderer=pydoc.plaintext).split())
    for option in options:                          # each explained where serve points to
        assert f" {option}: " in daemon, option


TYPED_USE = """
from __future__ import annotations

import shmfifo
from shmfifo import Fifo, FifoDaemon, StopReport


def main() -> None:
    with shmfifo.serve("typed", capacity=8, item_size=64, keep=False) as daemon:
        d: FifoDaemon = daemon
        with shmfifo.attach("typed", shared=False, allow_pickle=True) as q:
            f: Fifo = q
            q.put(b"x", timeout=1.0)
            q.put_many(["a", "b"])
            item = q.get(timeout=0.5)
            n: int = q.qsize() + q.capacity + q.item_size
            batch: list = q.get_many(4)
            m: shmfifo.Message = q.get_message(block=False)
            r: float | None = q.rate
            try:
                q.put_nowait("y")
            except shmfifo.Full as error:
                put: int = error.put
    report: StopReport | None = daemon.report
    accelerated: str = shmfifo.accelerator()
"""

TYPED_MISUSE = """
import shmfifo

shmfifo.attach("x", capacity=3)
shmfifo.serve("x", size=3)
q = shmfifo.attach("x")
q.put(b"x", timeout="soon")
n: str = q.qsize()
"""


def test_a_type_checker_reads_the_installed_wheels_types(dist, tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    _, wheel = dist
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
         "--target", str(target), str(wheel)])
    (tmp_path / "use.py").write_text(TYPED_USE)
    (tmp_path / "misuse.py").write_text(TYPED_MISUSE)
    # mypy finds shmfifo on the interpreter's sys.path (PYTHONPATH: the installed wheel),
    # and reads it only because of py.typed.
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("MYPYPATH", None)
    mypy = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
            "--no-error-summary"]
    run(mypy + ["use.py"], env=env, cwd=tmp_path, timeout=120)
    misuse = subprocess.run(mypy + ["misuse.py"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    errors = [line for line in misuse.stdout.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[1] for line in errors] == [
        'Unexpected keyword argument "capacity" for "attach"  [call-arg]',
        'Unexpected keyword argument "size" for "serve"  [call-arg]',
        'Argument "timeout" to "put" of "Fifo" has incompatible type "str"; expected '
        '"float | None"  [arg-type]',
        'Incompatible types in assignment (expression has type "int", variable has type '
        '"str")  [assignment]'], misuse.stdout
