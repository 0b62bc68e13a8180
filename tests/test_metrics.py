"""Prometheus metrics: ``shmfifo fifo --metrics-port`` scraped over real HTTP, and
``shmfifo status --prometheus``, parsed with the prometheus_client parser and compared
with what the real producers, consumers and recoveries did.
"""

import math
import os
import re
import signal
import socket
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from procs import READY, WAIT, holder_code, status_of, stop, wait_until
from shmfifo import names
from shmfifo.layout import H_HEAD, H_TAIL, ROLE_NAMES
from shmfifo.segment import Segment
from shmfifo.status import CLIENT_STATES, _totals
from test_cli import assert_one_line_error, run

MISSING = ("needs the prometheus_client library, which is not installed (install it with: "
           "pip install 'shmfifo[metrics]')")


def exporting_daemon(procs, name, *options, env=None):
    """A daemon serving metrics on a free port; (process, URL of /metrics)."""
    daemon = procs.daemon(name, "--metrics-port", "0", *options, env=env)
    url = re.search(r"metrics at (http://\S+)", daemon.wait_for("metrics at ")).group(1)
    return daemon, url


def scrape(url):
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.status == 200
        return response.read().decode("utf-8")


def samples(text, fifo=None):
    """{(sample name, sorted labels without fifo): value} of one FIFO's series."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if fifo is not None and labels.pop("fifo") != fifo:
                continue
            key = (s.name, tuple(sorted(labels.items())))
            assert key not in found, f"duplicate series {key}"
            found[key] = s.value
    return found


def value(found, name, **labels):
    return found[name, tuple(sorted(labels.items()))]


def clients(found):
    """The client counts that are not zero, as {(role, state): n}."""
    return {(dict(k)["role"], dict(k)["state"]): n for (name, k), n in found.items()
            if name == "shmfifo_clients" and n}


def holding_one(procs, name, tmp_path, put):
    """Put ``put`` items, then start a library client that takes one and holds it unacked;
    return the client's process once it holds it."""
    assert procs.spawn("producer", "--fifo", name, "item=a", "rate=max",
                       f"count={put}").wait() == 0
    held = str(tmp_path / "held")
    holder = procs.python(holder_code(name, held))
    wait_until(lambda: os.path.exists(held) and open(held).read(), what="a held item")
    return holder


def wait_for_state(name, state):
    """Wait until the FIFO's only client is in ``state``; return the client (a dict)."""
    def check():
        found = status_of(name)["clients"]
        return found and found[0]["state"] == state and found[0]
    return wait_until(check, what=f"a client {state}")


def test_a_scrape_shows_items_totals_clients_and_rates(procs, fifo_name):
    daemon, url = exporting_daemon(procs, fifo_name, "--size", "8")
    assert procs.spawn("producer", "--fifo", fifo_name, "item=a", "rate=max",
                       "count=5").wait() == 0
    assert procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=2").wait() == 0
    # A paced consumer takes the other 3, then waits on the empty FIFO: a steady state.
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=20.5")
    client = wait_for_state(fifo_name, "blocked on empty")
    found = samples(scrape(url), fifo_name)
    assert value(found, "shmfifo_up") == 1
    assert value(found, "shmfifo_scrape_error") == 0
    assert value(found, "shmfifo_items") == 0
    assert value(found, "shmfifo_capacity") == 8
    assert value(found, "shmfifo_item_size_bytes") == 128
    assert value(found, "shmfifo_max_clients") == 32
    assert value(found, "shmfifo_reserved_bytes") == os.stat(names.shm_path(fifo_name)).st_size
    assert value(found, "shmfifo_put_total") == 5
    assert value(found, "shmfifo_taken_total") == 5
    assert value(found, "shmfifo_requeued_total") == 0
    assert value(found, "shmfifo_recoveries_total") == 0
    assert value(found, "shmfifo_daemon_state", state="running") == 1
    assert value(found, "shmfifo_daemon_state", state="gone") == 0
    assert clients(found) == {("consumer", "blocked on empty"): 1}
    # Every role and state is there, zeros included.
    assert value(found, "shmfifo_clients", role="producer", state="running") == 0
    assert len([k for k in found if k[0] == "shmfifo_clients"]) == len(ROLE_NAMES) * len(CLIENT_STATES)
    me = dict(role="consumer", pid=str(consumer.pid), entry=str(client["index"]))
    assert value(found, "shmfifo_client_rate", **me) == 20.5
    assert value(found, "shmfifo_client_items_total", **me) == 3
    stop(consumer)
    stop(daemon)


def test_a_max_rate_producer_blocked_on_full_on_the_pure_path(procs, fifo_name):
    env = {"SHMFIFO_PURE": "1"}
    daemon, url = exporting_daemon(procs, fifo_name, "--size", "4", env=env)
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=max", env=env)
    client = wait_for_state(fifo_name, "blocked on full")
    found = samples(scrape(url), fifo_name)
    assert value(found, "shmfifo_items") == 4
    assert value(found, "shmfifo_put_total") == 4
    assert clients(found) == {("producer", "blocked on full"): 1}
    me = dict(role="producer", pid=str(producer.pid), entry=str(client["index"]))
    assert math.isinf(value(found, "shmfifo_client_rate", **me))
    assert value(found, "shmfifo_client_items_total", **me) == 4
    stop(producer)
    stop(daemon)


def test_a_library_client_has_a_count_and_no_rate(procs, fifo_name, tmp_path):
    daemon, url = exporting_daemon(procs, fifo_name)
    holder = holding_one(procs, fifo_name, tmp_path, put=2)
    found = samples(scrape(url), fifo_name)
    assert clients(found) == {("client", "running"): 1}
    assert not [k for k in found if k[0] == "shmfifo_client_rate"]
    assert [v for k, v in found.items() if k[0] == "shmfifo_client_items_total"] == [1]
    holder.kill()
    stop(daemon)


def test_a_recovery_moves_the_requeued_and_recoveries_counters(procs, fifo_name, tmp_path):
    daemon, url = exporting_daemon(procs, fifo_name)
    holder = holding_one(procs, fifo_name, tmp_path, put=3)
    before = samples(scrape(url), fifo_name)
    assert value(before, "shmfifo_taken_total") == 1
    assert value(before, "shmfifo_items") == 2
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    daemon.wait_for(r"recovery \d+ done")
    found = samples(scrape(url), fifo_name)
    assert value(found, "shmfifo_recoveries_total") == 1
    assert value(found, "shmfifo_requeued_total") == 1
    assert value(found, "shmfifo_taken_total") == 1       # a counter never goes back
    assert value(found, "shmfifo_items") == 3
    assert clients(found) == {}
    stop(daemon)


def test_status_prometheus_prints_what_the_daemon_serves(procs, fifo_name):
    daemon, url = exporting_daemon(procs, fifo_name)
    assert procs.spawn("producer", "--fifo", fifo_name, "item=a", "rate=max",
                       "count=3").wait() == 0
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=7", "count=100")
    wait_for_state(fifo_name, "blocked on empty")      # nothing moves: a quiet FIFO
    code, out, err = run(procs, "status", fifo_name, "--prometheus")
    assert code == 0 and not err, err
    printed = samples("\n".join(out) + "\n")
    assert printed == samples(scrape(url))
    assert value(printed, "shmfifo_taken_total", fifo=fifo_name) == 3
    # Without a name: every FIFO, this one among them with the same series.
    code, out, err = run(procs, "status", "--prometheus")
    assert code == 0 and not err, err
    assert samples("\n".join(out) + "\n", fifo_name) == samples(scrape(url), fifo_name)
    stop(consumer)
    stop(daemon)


def test_a_fifo_that_is_gone_or_unreadable_is_up_0_not_a_failed_scrape(procs, fifo_names):
    missing, junk = fifo_names("missing"), fifo_names("junk")
    code, out, err = run(procs, "status", missing, "--prometheus")
    assert code == 0 and not err, err
    found = samples("\n".join(out) + "\n", missing)
    assert found == {("shmfifo_up", ()): 0, ("shmfifo_scrape_error", ()): 1}
    path = names.shm_path(junk)
    with open(path, "wb") as f:
        f.write(b"not a shmfifo segment")
    try:
        code, out, err = run(procs, "status", "--prometheus")
    finally:
        os.unlink(path)
    assert code == 0 and not err, err
    found = samples("\n".join(out) + "\n", junk)
    assert found == {("shmfifo_up", ()): 0, ("shmfifo_scrape_error", ()): 1}


def test_a_fifo_its_daemon_marked_corrupt_says_so(procs, fifo_name):
    daemon, url = exporting_daemon(procs, fifo_name)
    seg = Segment.open(fifo_name, semaphores=False)
    try:
        seg.words[H_TAIL] = seg.words[H_HEAD] + 1        # more taken than put
    finally:
        seg.close()
    daemon.wait_for("is corrupt")
    found = samples(scrape(url), fifo_name)
    assert value(found, "shmfifo_up") == 1
    assert value(found, "shmfifo_daemon_state", state="corrupt") == 1
    assert value(found, "shmfifo_daemon_state", state="running") == 0
    stop(daemon)


def test_the_default_address_is_loopback_and_another_can_be_given(procs, fifo_name):
    for options, addr in (((), "127.0.0.1"), (("--metrics-addr", "127.0.0.2"), "127.0.0.2")):
        daemon, url = exporting_daemon(procs, fifo_name, *options)
        assert url.startswith(f"http://{addr}:")
        proc = psutil.Process(daemon.pid)
        listening = [c.laddr for c in (getattr(proc, "net_connections", None)
                                       or proc.connections)(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert [(a.ip, a.port) for a in listening] == [(addr, int(url.split(":")[2]
                                                                 .split("/")[0]))]
        assert value(samples(scrape(url), fifo_name), "shmfifo_up") == 1
        stop(daemon)


def test_a_port_in_use_exits_1_with_one_line_and_creates_nothing(procs, fifo_name):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(procs, "fifo", "--name", fifo_name, "--metrics-port", port)
    assert code == 1
    assert err == [f"shmfifo fifo: error: cannot serve metrics on 127.0.0.1:{port}: Address "
                   f"already in use (choose another --metrics-port, or 0 for a free one)"]
    assert not os.path.exists(names.shm_path(fifo_name))


# A real command line, in a process where importing prometheus_client fails.
WITHOUT_LIBRARY = ("import sys\n"
                   "sys.modules['prometheus_client'] = None\n"
                   "from shmfifo.cli import main\n"
                   "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.parametrize("argv, feature", [
    (["fifo", "--metrics-port", "0"], "--metrics-port"),
    (["status", "--prometheus"], "--prometheus"),
])
def test_without_prometheus_client_it_says_how_to_install_it(procs, fifo_name, argv,
                                                            feature):
    if argv[0] == "fifo":
        argv = argv + ["--name", fifo_name]
    proc = procs.python(WITHOUT_LIBRARY, *argv)
    assert proc.wait() == 1
    assert proc.err == [f"shmfifo {argv[0]}: error: {feature} {MISSING}"]
    assert not os.path.exists(names.shm_path(fifo_name))


@pytest.mark.parametrize("argv, fragments", [
    (["status", "--prometheus", "--json"], ["--prometheus and --json do not go together"]),
    (["status", "--prometheus", "--watch"], ["--prometheus and --watch do not go together"]),
    (["fifo", "--metrics-addr", "::1"], ["--metrics-addr goes with --metrics-port"]),
    (["fifo", "--metrics-port", "65536"], ["--metrics-port: '65536' is not allowed",
                                           "0 to 65535"]),
    (["fifo", "--metrics-port", "http"], ["--metrics-port: 'http' is not allowed"]),
])
def test_usage_errors_exit_2(procs, argv, fragments):
    code, out, err = run(procs, *argv)
    assert code == 2
    assert_one_line_error(err, argv[0], *fragments)


def test_the_daemon_still_starts_as_before_without_metrics(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    assert not [line for line in daemon.err if "metrics" in line], daemon.err
    assert READY in daemon.err[-1]
    stop(daemon)


class _Recovering(list):
    """Header words whose epoch is odd for the first ``odd`` reads of it: a recovery that
    has moved tail back and not yet added to requeued, then finishes."""

    def __init__(self, words, odd, done):
        super().__init__(words)
        self.odd, self.done = odd, done

    def __getitem__(self, index):
        from shmfifo.layout import H_EPOCH
        if index == H_EPOCH:
            self.odd -= 1
            if self.odd < 0:
                for word, value in self.done.items():
                    list.__setitem__(self, word, value)
                return 2
            return 1
        return list.__getitem__(self, index)


def test_totals_are_read_between_recoveries():
    """A re-queue moves tail back before it adds to requeued; read in between, the total
    taken would go down for a moment, which Prometheus takes for a counter reset."""
    from shmfifo.layout import H_HEAD, H_RECOVERIES, H_REQUEUED, H_TAIL
    words = [0] * 64
    words[H_HEAD], words[H_TAIL], words[H_REQUEUED], words[H_RECOVERIES] = 10, 5, 0, 0
    torn = _Recovering(words, odd=3, done={H_REQUEUED: 2, H_RECOVERIES: 1})
    assert _totals(torn) == (10, 5, 2, 1)
    # A recovery blocked for good (on a stopped client) does not block a reader.
    stuck = _Recovering(words, odd=10 ** 9, done={})
    assert _totals(stuck, patience=0.01) == (10, 5, 0, 0)
