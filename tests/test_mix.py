"""Mixed chaos: producers and consumers that use the library in every way programs do —
one handle, threads sharing a handle, coroutines, a handle inherited through fork, a handle
pickled to a spawn child — SIGKILLed at random while they run, on the C and the pure path;
then every item is accounted for (mix_agents.py says what each log records).
"""

import collections
import os
import random
import signal
import sys
import time

import pytest

from procs import AGENT_READY, WAIT, Proc, log_lines as lines, status_of as status
from mix_agents import BATCH

HERE = os.path.dirname(os.path.abspath(__file__))
SECONDS = float(os.environ.get("SHMFIFO_MIX_SECONDS", "10"))
KILLS = 10          # at least this many, however long starting the agents takes
STYLES = ["plain", "threads", "async", "fork", "spawn"]


@pytest.mark.chaos
@pytest.mark.timeout(SECONDS + 240)
@pytest.mark.parametrize("pure", ["0", "1"], ids=["c", "pure"])
def test_mixed_clients_killed_at_random_lose_nothing(procs, fifo_name, tmp_path, pure):
    rng = random.Random(int(os.environ.get("SHMFIFO_CHAOS_SEED", time.time_ns() % 10**6)))
    env = {"SHMFIFO_PURE": pure}
    daemon = procs.daemon(fifo_name, "--size", "16", "--max-clients", "64", env=env)
    generation = collections.Counter()
    agents = {}             # slot -> (role, style, ident, Proc)
    killed = []             # (role, ident) of every SIGKILLed agent

    def spawn(slot, role):
        generation[slot] += 1
        ident = f"{slot}.{generation[slot]}"
        style = rng.choice(STYLES)
        proc = Proc([sys.executable, os.path.join(HERE, "mix_agents.py"), role, style,
                     fifo_name, ident, str(tmp_path)], env=env)
        procs.all.append(proc)
        agents[slot] = (role, style, ident, proc)

    for slot, role in (("P0", "producer"), ("P1", "producer"),
                       ("C0", "consumer"), ("C1", "consumer")):
        spawn(slot, role)
    started = time.monotonic()
    styles = collections.Counter()
    while time.monotonic() - started < SECONDS or len(killed) < KILLS:
        time.sleep(rng.uniform(0.3, 0.8))
        slot = rng.choice(sorted(agents))
        role, style, ident, proc = agents[slot]
        proc.wait_for(AGENT_READY, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed.append((role, ident))
        styles[style] += 1
        spawn(slot, role)

    for role, style, ident, proc in agents.values():
        proc.wait_for(AGENT_READY, timeout=30)
    for stop_role in ("producer", "consumer"):
        for role, style, ident, proc in agents.values():
            if role == stop_role:
                proc.signal()
        for role, style, ident, proc in agents.values():
            if role == stop_role:
                assert proc.wait(WAIT) == 0, proc.err[-5:]
        if stop_role == "producer":
            deadline = time.monotonic() + 30
            while status(fifo_name)["items"] and time.monotonic() < deadline:
                time.sleep(0.1)
    deadline = time.monotonic() + 10
    while status(fifo_name)["clients"] and time.monotonic() < deadline:
        time.sleep(0.1)
    final = status(fifo_name)

    # Accounting: logs are IDENT.mN.log (the agent's process) and IDENT.cN.log (its child,
    # killed with it).
    def unit_of(path):
        return path.name[:-len(".log")]

    put, unlogged = set(), set()
    killed_idents = {ident for _, ident in killed}
    for path in tmp_path.glob("P*.log"):
        unit = unit_of(path)
        seqs = [int(x) for x in lines(path)]
        put.update(f"{unit}:{seq}" for seq in seqs)
        ident = unit.rsplit(".", 1)[0]
        if ident in killed_idents:
            last = max(seqs, default=0)
            unlogged.update(f"{unit}:{last + k}" for k in range(1, BATCH + 1))
    delivered = collections.Counter()
    explained = set()
    for path in tmp_path.glob("C*.log"):
        got = lines(path)
        delivered.update(got)
        ident, unit = unit_of(path).rsplit(".", 1)
        if ident in killed_idents and got:
            explained.add(got[-1])
    lost = put - set(delivered)
    duplicates = {item: n for item, n in delivered.items() if n > 1}
    unexplained = {item for item in duplicates if item not in explained}
    phantoms = set(delivered) - put - unlogged
    sems = final["semaphores"]
    report = (f"mix ({'pure' if pure == '1' else 'C'}): {SECONDS:.0f} s, {len(killed)} kills "
              f"({dict(styles)}), {len(put)} items put, {sum(delivered.values())} delivered, "
              f"{len(lost)} lost, {len(phantoms)} never put, "
              f"{sum(n - 1 for n in duplicates.values())} duplicated "
              f"({len(unexplained)} unexplained), {final['recoveries']} recoveries, "
              f"semaphores {sems} for {final['items']} items")
    print("\n" + report)
    assert len(put) > 1000
    assert not lost, f"{report}; lost e.g. {sorted(lost)[:5]}"
    assert not unexplained, f"{report}; unexplained duplicates {sorted(unexplained)[:5]}"
    assert not phantoms, f"{report}; delivered but never put e.g. {sorted(phantoms)[:5]}"
    assert final["items"] == 0 and not final["clients"], final
    assert sems["fill"] == 0 and sems["empty"] == final["capacity"] and sems["mutex"] == 1
    daemon.signal()
    assert daemon.wait(WAIT) == 0
