"""How long survivors stall when a client is SIGKILLed holding the mutex.

    $ .venv/bin/python -m bench.recovery_stall
    survivors moving again after a SIGKILL of the mutex holder (ms, 10 trials):
      median 18, max 41: [41, 19, 16, 10, 23, 36, 13, 17, 15, 29]

Each trial starts a daemon, a consumer (rate=max) and a producer (2,000/s), then a producer
that SIGKILLs itself while holding the mutex (SHMFIFO_CRASH_AT=put.lock). The time is from
its death (as its parent sees it) to the survivors having moved five more items, read from
the FIFO's counters. It is bounded below by the daemon's lease check (every 50 ms).
"""

import os
import signal
import statistics
import subprocess
import sys
import time

from shmfifo import status

TRIALS = 10


def _spawn(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "shmfifo", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _await_line(proc, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        if text in line:
            return
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"no {text!r} from {proc.args}")


def _taken(name):
    return status.snapshot(name).taken


def trial(name):
    procs = []
    try:
        daemon = _spawn("fifo", "--name", name, "--size", "8")
        procs.append(daemon)
        _await_line(daemon, "ready")
        for args in (("consumer", "rate=max"), ("producer", "item=s", "rate=2000")):
            proc = _spawn(args[0], "--fifo", name, *args[1:])
            procs.append(proc)
            _await_line(proc, "attached")
        victim = _spawn("producer", "--fifo", name, "item=v", "rate=100",
                        env={"SHMFIFO_CRASH_AT": "put.lock:3"})
        procs.append(victim)
        victim.wait(10)
        died = time.monotonic()
        before = _taken(name)
        while _taken(name) <= before + 5:
            if time.monotonic() - died > 10:
                raise RuntimeError("survivors did not resume within 10 s")
            time.sleep(0.0005)
        return (time.monotonic() - died) * 1000
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def main():
    times = [trial(f"bench.recovery_stall.{os.getpid()}.{k}") for k in range(TRIALS)]
    print(f"survivors moving again after a SIGKILL of the mutex holder (ms, {TRIALS} trials):")
    print(f"  median {statistics.median(times):.0f}, max {max(times):.0f}: "
          f"{[round(t) for t in times]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
