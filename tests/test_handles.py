"""A handle in any Python program: several per process, threads, fork, spawn, forkserver,
pools and asyncio, on the C fast path and on the pure-Python path.

The programs are in handle_scenarios.py and run as processes of their own, so that a crash
(a SIGSEGV in the C path, say) fails one test with its exit status instead of the run.
"""

import json
import os
import signal
import sys

import pytest

from procs import Proc, status_of, wait_until
from shmfifo import ring

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = {"c": {"SHMFIFO_PURE": "0"}, "pure": {"SHMFIFO_PURE": "1"}}


@pytest.fixture(params=list(PATHS))
def path_env(request):
    if request.param == "c" and ring._fastpath is None:
        pytest.skip("the C fast path is not built (no C compiler when installing)")
    return PATHS[request.param]


def run_scenario(procs, scenario, name, env, timeout=120):
    proc = Proc([sys.executable, os.path.join(HERE, "handle_scenarios.py"), scenario, name],
                env=env)
    procs.all.append(proc)
    code = proc.wait(timeout)
    assert code == 0, f"{scenario} exited with {code}:\n" + "\n".join(proc.err[-15:])
    figures = json.loads(proc.out[-1])
    assert figures["pure"] == (env["SHMFIFO_PURE"] == "1")
    return figures, proc


def test_several_handles_in_one_process_while_a_recovery_runs(procs, fifo_name, path_env):
    figures, _ = run_scenario(procs, "several_handles_during_recovery", fifo_name, path_env)
    assert figures["recoveries"] == 1


def test_threads_with_own_and_shared_handles_and_one_closed_early(procs, fifo_name, path_env):
    figures, _ = run_scenario(procs, "threads_and_handles", fifo_name, path_env)
    assert figures["items"] == 12000
    # a client per (handle, thread): the main thread's 3, the 4 consumer threads' (the
    # producer threads ended and freed theirs; the closed handle's are gone), then the 3
    assert (figures["clients"], figures["clients_after_threads_end"]) == (7, 3)


def test_parent_and_child_take_through_a_handle_inherited_by_fork(procs, fifo_name, path_env):
    figures, _ = run_scenario(procs, "fork_shared_handle", fifo_name, path_env)
    assert figures["parent"] + figures["child"] == 20000


def test_handles_pickled_to_spawn_forkserver_fork_children_and_pools(procs, fifo_name,
                                                                      path_env):
    figures, proc = run_scenario(procs, "pickled_handles", fifo_name, path_env)
    assert set(figures) >= {"fork", "spawn", "forkserver"}
    # pool workers leave with os._exit, holding nothing: detached, never a recovery
    assert not [line for line in proc.err if "died" in line or "recover" in line], proc.err


def test_asyncio_waiters_cancellation_and_batches(procs, fifo_name, path_env):
    run_scenario(procs, "asyncio_handles", fifo_name, path_env)


def test_asyncio_across_loops_threads_and_close(procs, fifo_name, path_env):
    figures, proc = run_scenario(procs, "asyncio_lifecycles", fifo_name, path_env)
    assert figures["after_full"] == "empty"
    assert not [line for line in proc.err if "Traceback" in line or "Exception" in line], \
        proc.err


FORK_AFTER_SERVE = """
import os, sys, time, shmfifo
with shmfifo.serve(sys.argv[1]):
    q = shmfifo.attach(sys.argv[1])
    q.put("held")
    assert q.get() == "held"          # taken, not acknowledged
    pid = os.fork()
    if pid == 0:                      # never touches shmfifo
        time.sleep(60)
        os._exit(0)
    print("child", pid, flush=True)
    time.sleep(60)
"""


def test_leases_do_not_survive_into_a_forked_child(procs, fifo_name):
    """A daemon (serve) with a client forks; the parent is SIGKILLed while the child lives:
    both the daemon's lease and the client's die with the parent."""
    parent = procs.python(FORK_AFTER_SERVE, fifo_name)
    child = int(parent.wait_for("^child ").split()[1])
    try:
        os.kill(parent.pid, signal.SIGKILL)
        assert parent.wait() == -signal.SIGKILL
        assert status_of(fifo_name)["daemon"] == "gone"
        daemon = procs.daemon(fifo_name)           # adopts at once
        daemon.wait_for(r"adopting FIFO")
        daemon.wait_for(r"recovery \d+ done")
        st = wait_until(lambda: (s := status_of(fifo_name))["items"] == 1 and s)
        assert st["requeued"] == 1 and not st["clients"]
        daemon.signal()
        assert daemon.wait() == 0
    finally:
        os.kill(child, signal.SIGKILL)


EXITS = {
    "normal exit": "sys.exit(0)",
    "os._exit after close": "q.close(); os._exit(0)",
    "os._exit holding nothing": "q.ack(); os._exit(0)",
}


@pytest.mark.parametrize("how", list(EXITS))
def test_a_client_that_exits_holding_nothing_is_detached_quietly(procs, fifo_name, how):
    daemon = procs.daemon(fifo_name)
    code = ("import os, sys, shmfifo\n"
            "q = shmfifo.attach(sys.argv[1])\n"
            "q.put('x'); assert q.get() == 'x'\n" + EXITS[how] + "\n")
    client = procs.python(code, fifo_name)
    assert client.wait() == 0, client.err
    wait_until(lambda: not status_of(fifo_name)["clients"], what="the entry to be freed")
    st = status_of(fifo_name)
    assert st["items"] == 0 and st["recoveries"] == 0 and st["requeued"] == 0
    daemon.signal()
    assert daemon.wait() == 0
    assert not [line for line in daemon.err if "died" in line or "WARN" in line], daemon.err


def test_a_client_that_exits_holding_an_item_is_recovered_and_warned_about(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    code = ("import os, sys, shmfifo\n"
            "q = shmfifo.attach(sys.argv[1])\n"
            "q.put('x'); assert q.get() == 'x'\n"
            "os._exit(0)\n")
    assert procs.python(code, fifo_name).wait() == 0
    daemon.wait_for(r"client\(s\) died")
    daemon.wait_for(r"recovery \d+ done")
    assert status_of(fifo_name)["items"] == 1
    daemon.signal()
    assert daemon.wait() == 0
