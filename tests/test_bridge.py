"""The bridge over Redis Streams, against a real redis-server on a free loopback port.

Two FIFOs on this machine stand for two hosts: producers put into FIFO A, a bridge carries
A's items to a stream (calling this host "hostA"), a second bridge carries the stream into
FIFO B, where consumers take them. Every test starts its own redis-server (with an
append-only file where it restarts it), and skips with a clear message where there is none
(.ci/run installs it).
"""

import collections
import json
import struct
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from procs import WAIT, records, status_json, status_of, wait_until

redis = pytest.importorskip("redis", reason="the bridge tests need redis-py: pip install "
                                            "'shmfifo[redis]' (or the test extra)")
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="no redis-server on PATH: install it (apt-get install "
                                 "redis-server; .ci/run does) to test the bridge")

PATHS = {"c": {"SHMFIFO_PURE": "0"}, "pure": {"SHMFIFO_PURE": "1"}}
HOST_A = "hostA"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of this test's: started, restarted on the same port and data, stopped."""

    def __init__(self, directory, *options):
        self.port = _free_port()
        self.directory = str(directory)
        self.options = list(options)
        self.proc = None
        self.password = None
        if "--requirepass" in self.options:
            self.password = self.options[self.options.index("--requirepass") + 1]
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", self.directory, "--appendonly", "yes", "--appendfsync", "always",
             *self.options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        wait_until(lambda: self._pong(client), what="redis-server to answer")

    @staticmethod
    def _pong(client):
        try:
            return client.ping()
        except redis.RedisError:
            return False

    def client(self):
        return redis.Redis(port=self.port, password=self.password)

    def url(self, stream):
        return f"redis://127.0.0.1:{self.port}/0/{stream}"

    def stop(self):
        """A clean shutdown: the append-only file has everything Redis answered."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(WAIT)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def stopped_in_order(procs, fifo_names):
    """At the end of a test, SIGTERM what still runs, the last started first: clients and
    bridges, then the daemons, which then remove their FIFOs (fifo_names checks)."""
    yield
    for proc in reversed(procs.all):
        if proc.alive():
            proc.signal(signal.SIGTERM)
            try:
                proc.wait()
            except AssertionError:
                pass


def _two_hosts(procs, fifo_names, *, size=256, batch=64):
    a, b = fifo_names("a"), fifo_names("b")
    procs.daemon(a, "--size", size, "--batch", batch)
    procs.daemon(b, "--size", size, "--batch", batch)
    return a, b


def _outward(procs, a, url, *options):
    bridge = procs.spawn("bridge", a, url, "--host-name", HOST_A, *options)
    bridge.wait_for("connected to redis")
    return bridge


def _inward(procs, url, b, *options):
    bridge = procs.spawn("bridge", url, b, *options)
    bridge.wait_for("connected to redis")
    return bridge


def _origins(found):
    """(producer, seq) -> times seen, from consumer --json records."""
    return collections.Counter((r["producer"], r["seq"]) for r in found)


# -- what crosses -------------------------------------------------------------------------------

GET_ALL = """
import sys, shmfifo, json, array
allow = sys.argv[2] == "allow"
q = shmfifo.attach(sys.argv[1], allow_pickle=allow)
out = []
for _ in range(int(sys.argv[3])):
    try:
        m = q.get_message(timeout=10)
        item = m.item
        kind = type(item).__name__
        value = item.tolist() if kind in ("ndarray", "array") else (
            list(item) if kind == "memoryview" else item)
        if isinstance(value, (bytes, bytearray)):
            value = value.hex()
        out.append([kind, repr(value), m.host, m.producer, m.seq])
    except shmfifo.UntrustedItem as refused:
        out.append(["refused", str(refused), refused.host, refused.producer, refused.seq])
print(json.dumps(out))
"""


@pytest.mark.parametrize("pack", [1, 3])
@pytest.mark.parametrize("path", PATHS)
def test_items_keep_their_type_and_their_origin(procs, fifo_names, redis_server, path, pack):
    np = pytest.importorskip("numpy")
    import array
    import shmfifo
    a, b = _two_hosts(procs, fifo_names)
    url = redis_server.url("types")
    _outward(procs, a, url, "--pack", pack)
    _inward(procs, url, b)
    items = [b"\x00raw", "text é", 42, bytearray(b"ba"), array.array("h", [1, -2]),
             np.arange(4, dtype="<i4"), {"a": 1}]
    with shmfifo.attach(a) as q:
        q.put_many(items[:3])
        for item in items[3:]:
            q.put(item)
    me = os.getpid()
    for allow in ("deny", "allow"):
        got = procs.python(GET_ALL, b, allow, len(items), env=PATHS[path])
        assert got.wait() == 0, got.err[-5:]
        rows = json.loads(got.out[-1])
        assert [r[2:] for r in rows] == [[HOST_A, me, seq] for seq in range(1, 8)], rows
        assert [r[0] for r in rows[:6]] == ["bytes", "str", "int", "bytearray", "array",
                                              "ndarray"]
        assert [r[1] for r in rows[:6]] == [repr(b"\x00raw".hex()), repr("text é"), "42",
                                              repr("6261"), "[1, -2]", "[0, 1, 2, 3]"]
        if allow == "deny":
            # A pickle that came over a bridge: whoever can write to the stream could have
            # written it, so it is not unpickled, even in a FIFO only we can write.
            assert rows[6][0] == "refused" and "came over a bridge" in rows[6][1], rows[6]
        else:
            assert rows[6][:2] == ["dict", repr({"a": 1})]
        if allow == "deny":
            with shmfifo.attach(a) as q:
                for item in items:
                    q.put(item)


def test_an_entry_another_program_wrote_arrives_as_bytes(procs, fifo_names, redis_server):
    import shmfifo
    _, b = _two_hosts(procs, fifo_names)
    url = redis_server.url("foreign")
    r = redis_server.client()
    r.xadd("foreign", {"item": b"hello"})
    r.xadd("foreign", {"item": "hi", "type": "str", "origin": "far 7 3"})
    r.xadd("foreign", {"item": b"x", "type": "no-such-type"})
    bridge = _inward(procs, url, b)
    with shmfifo.attach(b) as q:
        got = [q.get_message(timeout=WAIT) for _ in range(3)]
    assert [(m.item, m.host, m.producer, m.seq) for m in got] == [
        (b"hello", "redis", 0, 0), ("hi", "far", 7, 3), (b"x", "redis", 0, 0)]
    bridge.wait_for("has type b'no-such-type', which this shmfifo does not know")
    # a packed entry that does not parse: named in the log, acknowledged, and the next goes
    r.xadd("foreign", {"format": "shmfifo-pack-1", "count": "1", "hosts": "h",
                       "items": b"\x05\x00\x00\x00"})
    r.xadd("foreign", {"item": "after", "type": "str"})
    with shmfifo.attach(b) as q:
        assert q.get(timeout=WAIT) == "after"
    bridge.wait_for(r"stream entry \S+ is not a shmfifo pack \(.*\): skipped")
    wait_until(lambda: r.xpending("foreign", "shmfifo")["pending"] == 0,
               what="every entry acknowledged")


# -- kill -9, Redis restarts ---------------------------------------------------------------------

def _run_with_producers(procs, a, n_producers, count, rate):
    return [procs.spawn("producer", "--fifo", a, f"item=p{k}", f"rate={rate}", f"count={count}")
            for k in range(n_producers)]


def _expect_all(consumer, producers, count):
    pids = {p.pid for p in producers}
    wanted = {(pid, seq) for pid in pids for seq in range(1, count + 1)}

    def complete():
        seen = _origins(records(consumer))
        return wanted <= set(seen) and seen
    seen = wait_until(complete, what="every (producer, seq) at the far consumer", timeout=60)
    assert set(seen) == wanted, set(seen) - wanted          # nothing foreign either
    return seen


@pytest.mark.parametrize("pack", [1, 8])
def test_kill_9_of_either_bridge_loses_nothing(procs, fifo_names, redis_server, pack):
    a, b = _two_hosts(procs, fifo_names, batch=32)
    url = redis_server.url("chaos")
    out = _outward(procs, a, url, "--batch", 32, "--pack", pack)
    inward = _inward(procs, url, b, "--batch", 32, "--claim-idle", 1)
    consumer = procs.spawn("consumer", "--fifo", b, "--json", "rate=max")
    count = 3000
    producers = _run_with_producers(procs, a, 2, count, 1500)
    kills = 0
    for round_ in range(3):
        time.sleep(0.4)
        os.kill(out.pid, signal.SIGKILL)
        out.wait()
        kills += 1
        out = _outward(procs, a, url, "--batch", 32, "--pack", pack)
        time.sleep(0.3)
        os.kill(inward.pid, signal.SIGKILL)
        inward.wait()
        kills += 1
        inward = _inward(procs, url, b, "--batch", 32, "--claim-idle", 1)
    for p in producers:
        assert p.wait(30) == 0, p.err[-3:]
    seen = _expect_all(consumer, producers, count)
    duplicates = sum(n - 1 for n in seen.values())
    # Explained: a killed sending bridge re-sends at most its batch (taken, maybe added, not
    # acknowledged in A); a killed receiving bridge leaves at most its batch put and not
    # XACKed, which the next one (same host, pid gone) delivers again at once (with --pack,
    # whole entries: at most 32 of them, of up to `pack` items).
    assert duplicates <= kills * 32 * pack, (duplicates, kills)
    assert {r["host"] for r in records(consumer)} == {HOST_A}
    # per producer, the first delivery of each seq comes in order (one FIFO, one stream)
    for pid in {p.pid for p in producers}:
        firsts = list(dict.fromkeys(r["seq"] for r in records(consumer) if r["producer"] == pid))
        assert firsts == sorted(firsts)
    st = status_of(b)
    bridge = [c for c in st["clients"] if c["role"] == "bridge"][0]
    print(f"{kills} kills, {duplicates} duplicates, resent counted by the last receiving "
          f"bridge: {bridge['resent']}")
    r = redis_server.client()
    wait_until(lambda: r.xpending("chaos", "shmfifo")["pending"] == 0,
               what="every entry acknowledged in the group")


def test_redis_restart_mid_run_loses_nothing(procs, fifo_names, redis_server):
    a, b = _two_hosts(procs, fifo_names)
    url = redis_server.url("restart")
    out = _outward(procs, a, url)
    inward = _inward(procs, url, b)
    consumer = procs.spawn("consumer", "--fifo", b, "--json", "rate=max")
    count = 2000
    producers = _run_with_producers(procs, a, 2, count, 1000)
    time.sleep(0.7)
    redis_server.stop()
    out.wait_for("unreachable")
    inward.wait_for("unreachable")
    time.sleep(0.5)                       # the producers go on: A keeps their items
    assert status_of(a)["items"] > 0
    assert [c["state"] for c in status_of(a)["clients"] if c["role"] == "bridge"] == \
        ["peer unreachable"]
    redis_server.start()
    out.wait_for("reachable again")
    inward.wait_for("reachable again")
    for p in producers:
        assert p.wait(30) == 0
    seen = _expect_all(consumer, producers, count)
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates <= 2 * 64, duplicates
    # the state change is logged once each way, not once per retry
    assert sum("unreachable" in line for line in out.err) == 1, out.err
    assert sum("reachable again" in line for line in inward.err) == 1, inward.err


def test_redis_down_at_start_keeps_items_in_the_fifo(procs, fifo_names, tmp_path):
    import shmfifo
    a = fifo_names("a")
    procs.daemon(a)
    server = RedisServer(tmp_path)
    server.stop()
    bridge = procs.spawn("bridge", a, server.url("late"))
    bridge.wait_for("unreachable")
    with shmfifo.attach(a) as q:
        q.put_many([b"1", b"2", b"3"])
    time.sleep(0.5)
    assert status_of(a)["items"] == 3
    server.start()
    try:
        bridge.wait_for("reachable again")
        wait_until(lambda: server.client().xlen("late") == 3, what="the items in the stream")
        assert status_of(a)["items"] == 0
        bridge.signal(signal.SIGTERM)
        assert bridge.wait() == 0
    finally:
        server.stop()


# -- bounds ----------------------------------------------------------------------------------

def test_the_stream_stays_bounded_and_the_fifo_keeps_the_rest(procs, fifo_names, redis_server):
    import shmfifo
    a, b = _two_hosts(procs, fifo_names, size=512)
    url = redis_server.url("bounded")
    out = _outward(procs, a, url, "--maxlen", 100)
    r = redis_server.client()
    with shmfifo.attach(a) as q:
        q.put_many([str(k) for k in range(300)])
    wait_until(lambda: r.xlen("bounded") == 100, what="the stream at its bound")
    time.sleep(0.3)
    assert r.xlen("bounded") == 100 and status_of(a)["items"] == 200
    out.wait_for("waiting")
    lengths = []
    _inward(procs, url, b)
    with shmfifo.attach(b) as q:
        got = []
        while len(got) < 300:
            got.append(q.get(timeout=WAIT))
            lengths.append(r.xlen("bounded"))
    assert got == [str(k) for k in range(300)]
    assert max(lengths) <= 100, max(lengths)


def test_the_receiving_bridge_reads_only_what_its_fifo_has_room_for(procs, fifo_names,
                                                                    redis_server):
    import shmfifo
    a, b = fifo_names("a"), fifo_names("b")
    procs.daemon(a, "--size", 256)
    procs.daemon(b, "--size", 8)
    url = redis_server.url("room")
    _outward(procs, a, url)
    _inward(procs, url, b)
    with shmfifo.attach(a) as q:
        q.put_many([b"x"] * 100)
    r = redis_server.client()
    wait_until(lambda: status_of(b)["items"] == 8, what="FIFO B full")
    time.sleep(0.5)
    group = r.xinfo_groups("room")[0]
    # what B cannot hold is still unread in the stream, not pending with the bridge
    assert group["pending"] == 0 and group["entries-read"] == 8, group
    with shmfifo.attach(b) as q:
        got = [q.get(timeout=WAIT) for _ in range(100)]
    assert got == [b"x"] * 100


# -- status, metrics -------------------------------------------------------------------------

def test_status_and_metrics_show_a_bridge(procs, fifo_names, redis_server):
    pytest.importorskip("prometheus_client")
    import shmfifo
    a, b = _two_hosts(procs, fifo_names)
    url = redis_server.url("shown")
    out = _outward(procs, a, url)
    with shmfifo.attach(a) as q:
        q.put_many([b"1"] * 10)
    wait_until(lambda: redis_server.client().xlen("shown") == 10, what="the stream")
    st = status_json(procs, a)
    bridge = [c for c in st["clients"] if c["role"] == "bridge"][0]
    assert bridge["pid"] == out.pid
    assert bridge["item"] == f"→ redis://127.0.0.1:{redis_server.port}/0/shown"
    assert (bridge["gets"], bridge["link"], bridge["resent"]) == (10, "up", 0), bridge
    text = procs.spawn("status", a)
    assert text.wait() == 0
    assert any(line.split()[:2] == ["bridge", str(out.pid)] and "→ redis://" in line
               for line in text.out), text.out
    prom = procs.spawn("status", a, "--prometheus")
    assert prom.wait() == 0
    up = [line for line in prom.out if line.startswith("shmfifo_bridge_up")]
    assert up == [f'shmfifo_bridge_up{{entry="{bridge["index"]}",fifo="{a}",'
                  f'peer="redis://127.0.0.1:{redis_server.port}/0/shown",pid="{out.pid}"}} 1.0'
                  ], up


# -- bad URLs and credentials ----------------------------------------------------------------------

@pytest.mark.parametrize("url, code, says", [
    ("http://127.0.0.1/s", 2, "the scheme must be redis or rediss"),
    ("redis://127.0.0.1:6379", 2, "its path must be /STREAM or /DB/STREAM"),
    ("redis://127.0.0.1:6379/0/", 2, "it names no stream"),
    ("redis://127.0.0.1:99999/s", 2, "its port must be a number from 1 to 65535"),
    ("redis://user:hunter2@127.0.0.1:notaport/s", 2, "redis://user:***@127.0.0.1:notaport/s"),
    ("redis://no-such-host.invalid/s", 1, "cannot find host 'no-such-host.invalid'"),
    ("redis://127.0.0.1:0/s", 2, "its port must be a number from 1 to 65535"),
    ("redis://127.0.0.1/²/s", 2, "its path must be /STREAM or /DB/STREAM"),
    ("redis://u:hunter2#x@127.0.0.1:6379/s", 2, "must be percent-encoded"),
    ("redis://127.0.0.1/%FF/s", 2, "is not UTF-8 once percent-decoded"),
])
def test_a_wrong_url_is_one_line_and_an_exit_code(procs, fifo_name, url, code, says):
    procs.daemon(fifo_name)
    bridge = procs.spawn("bridge", fifo_name, url)
    assert bridge.wait() == code, bridge.err
    assert len(bridge.err) == 1 and says in bridge.err[0], bridge.err
    assert "hunter2" not in bridge.err[0]


def test_two_fifos_or_two_urls_or_no_fifo(procs, fifo_name, redis_server):
    for args, code in (((fifo_name, fifo_name), 2),
                       ((redis_server.url("s"), redis_server.url("t")), 2),
                       ((fifo_name, redis_server.url("s")), 3)):
        bridge = procs.spawn("bridge", *args)
        assert bridge.wait() == code, bridge.err
        assert len(bridge.err) == 1, bridge.err


def test_a_password(procs, fifo_names, tmp_path):
    import shmfifo
    server = RedisServer(tmp_path, "--requirepass", "s3cret")
    try:
        a = fifo_names("a")
        procs.daemon(a)
        port = server.port
        for url, env in ((f"redis://:wrong@127.0.0.1:{port}/s", None),
                         (f"redis://127.0.0.1:{port}/s", None),
                         (f"redis://127.0.0.1:{port}/s", {"REDISCLI_AUTH": "nope"})):
            bridge = procs.spawn("bridge", a, url, env=env)
            assert bridge.wait() == 1, bridge.err
            assert "refused the credentials" in bridge.err[-1], bridge.err
            assert "wrong" not in bridge.err[-1] and "nope" not in bridge.err[-1]
        for url, env in ((f"redis://127.0.0.1:{port}/s", {"REDISCLI_AUTH": "s3cret"}),
                         (f"redis://:s3cret@127.0.0.1:{port}/s", None)):
            bridge = procs.spawn("bridge", a, url, env=env)
            bridge.wait_for("connected to redis")
            st = status_of(a)
            assert "s3cret" not in json.dumps(st)
            with shmfifo.attach(a) as q:
                q.put(b"x")
            wait_until(lambda: status_of(a)["items"] == 0, what="the item sent")
            bridge.signal(signal.SIGTERM)
            assert bridge.wait() == 0
        assert server.client().xlen("s") == 2
    finally:
        server.stop()


def test_a_scribbled_slot_is_reported_and_the_rest_goes(procs, fifo_names, redis_server):
    import struct
    import shmfifo
    from shmfifo import layout
    from shmfifo.layout import H_TAIL
    from shmfifo.segment import Segment
    from test_corrupt import _slot_offset, scribble
    a, b = _two_hosts(procs, fifo_names)
    with shmfifo.attach(a) as q:
        q.put_many([b"1", b"2", b"3"])
    seg = Segment.open(a, semaphores=False)
    slot = _slot_offset(seg, seg.words[H_TAIL] + 1)
    seg.close()
    scribble(a, offset=slot, data=struct.pack("<IH", 0xFFFFFFFF, layout.TAG_BYTES))
    url = redis_server.url("scribbled")
    out = _outward(procs, a, url)
    _inward(procs, url, b)
    with shmfifo.attach(b) as q:
        got = [q.get_message(timeout=WAIT) for _ in range(2)]
    assert [(m.item, m.seq) for m in got] == [(b"1", 1), (b"3", 3)]
    out.wait_for(r"seq 2\) of FIFO .* its length word says 4294967295 bytes.*: skipped")
    assert status_of(a)["items"] == 0


# -- what the stream's writers can send (another program, or a hostile one) ------------------

EVIL = """
import os, pickle
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + {marker!r},))
payload = pickle.dumps(Evil())
"""


def test_a_forged_origin_never_makes_a_pickle_trusted(procs, fifo_names, redis_server,
                                                      tmp_path):
    import shmfifo
    _, b = _two_hosts(procs, fifo_names)
    marker = tmp_path / "ran"
    scope = {}
    exec(EVIL.format(marker=str(marker)), scope)
    r = redis_server.client()
    here = socket.gethostname()
    r.xadd("forged", {"item": scope["payload"], "type": "pickle", "origin": f"{here} 1 1"})
    r.xadd("forged", {"format": "shmfifo-pack-1", "count": "1", "hosts": here,
                      "items": struct.pack("<IHHQQ", len(scope["payload"]), 4, 0, 1, 2) +
                      scope["payload"]})
    _inward(procs, redis_server.url("forged"), b)
    with shmfifo.attach(b) as q:          # a FIFO only we can write: local pickles are trusted
        for seq in (1, 2):
            with pytest.raises(shmfifo.UntrustedItem, match="came over a bridge") as refused:
                q.get(timeout=WAIT)
            assert (refused.value.seq, refused.value.host) == (seq, here)
        q.put({"local": 1})
        assert q.get(timeout=WAIT) == {"local": 1}
    assert not marker.exists()


def test_odd_origins_and_types_are_delivered_as_what_they_can_be(procs, fifo_names,
                                                                 redis_server):
    import shmfifo
    _, b = _two_hosts(procs, fifo_names)
    r = redis_server.client()
    for origin in ("h 99999999999999999999999 6", "h 1", "  1 1", "h 1 2 3"):
        r.xadd("odd", {"item": "x", "type": "str", "origin": origin})
    r.xadd("odd", {"item": b"\xff\xfe", "type": "str", "origin": "h 1 7"})
    r.xadd("odd", {"item": b"abc", "type": "999", "origin": "h 1 8"})
    bridge = _inward(procs, redis_server.url("odd"), b)
    with shmfifo.attach(b) as q:
        got = [q.get_message(timeout=WAIT) for _ in range(6)]
        assert [(m.item, m.host, m.producer, m.seq) for m in got] == [
            ("x", "redis", 0, 0)] * 4 + [(b"\xff\xfe", "h", 1, 7), (b"abc", "h", 1, 8)]
        q.put_many(["still", "works"])             # the put lock was never left taken
        assert [q.get(timeout=WAIT) for _ in range(2)] == ["still", "works"]
    bridge.wait_for("has type str, but its bytes are not UTF-8: delivered as bytes")
    assert status_of(b)["semaphores"]["mutex"] == 1


def test_a_consumer_name_that_is_no_pid_does_not_stop_a_bridge(procs, fifo_names,
                                                              redis_server):
    import shmfifo
    _, b = _two_hosts(procs, fifo_names)
    r = redis_server.client()
    r.xgroup_create("names", "shmfifo", id="0", mkstream=True)
    r.xadd("names", {"item": b"a"})
    r.xreadgroup("shmfifo", f"{socket.gethostname()}:99999999999999999999", {"names": ">"})
    _inward(procs, redis_server.url("names"), b, "--claim-idle", 0.5)
    with shmfifo.attach(b) as q:
        assert q.get(timeout=WAIT) == b"a"        # claimed once idle, as any other's


def test_a_refused_xadd_leaves_the_items_in_the_fifo(procs, fifo_names, redis_server):
    import shmfifo
    a = fifo_names("a")
    procs.daemon(a)
    r = redis_server.client()
    r.acl_setuser("noadd", enabled=True, passwords=["+pw"], keys=["*"],
                  commands=["+@all", "-xadd"])
    with shmfifo.attach(a) as q:
        q.put_many([b"1", b"2", b"3"])
    bridge = procs.spawn("bridge", a, f"redis://noadd:pw@127.0.0.1:{redis_server.port}/s")
    assert bridge.wait() == 1
    assert "refused the credentials or the command" in bridge.err[-1], bridge.err
    assert status_of(a)["items"] == 3


def test_a_deleted_group_or_stream_is_made_again(procs, fifo_names, redis_server):
    import shmfifo
    a, b = _two_hosts(procs, fifo_names)
    url = redis_server.url("gone")
    _outward(procs, a, url)
    inward = _inward(procs, url, b)
    r = redis_server.client()
    with shmfifo.attach(a) as qa, shmfifo.attach(b) as qb:
        qa.put("before")
        assert qb.get(timeout=WAIT) == "before"
        for drop in (lambda: r.xgroup_destroy("gone", "shmfifo"), lambda: r.delete("gone")):
            drop()
            inward.wait_for("creating the group again")
            inward.err.clear()
            qa.put("after")
            got = qb.get(timeout=WAIT)
            while got == "before":                 # a new group reads the stream from 0
                got = qb.get(timeout=WAIT)
            assert got == "after"
    assert inward.alive()


def test_a_stop_while_waiting_for_room_or_for_redis_is_clean(procs, fifo_names, tmp_path):
    import shmfifo
    a, b = fifo_names("a"), fifo_names("b")
    procs.daemon(a)
    procs.daemon(b, "--size", 2)
    server = RedisServer(tmp_path)
    try:
        url = server.url("stop")
        _outward(procs, a, url)
        inward = _inward(procs, url, b)
        with shmfifo.attach(a) as q:
            q.put_many([b"x"] * 10)
        wait_until(lambda: status_of(b)["items"] == 2, what="B full")
        inward.signal(signal.SIGTERM)
        assert inward.wait() == 0, inward.err[-3:]
        assert "stopped (SIGTERM)" in inward.err[-1]
        server.stop()
        out = procs.spawn("bridge", a, url)
        out.wait_for("unreachable")
        out.signal(signal.SIGTERM)
        assert out.wait() == 0, out.err[-3:]
        assert not any("Traceback" in line for line in out.err + inward.err)
    finally:
        server.stop()


def test_the_receiving_bridge_stops_with_its_fifo(procs, fifo_names, redis_server):
    _, b = _two_hosts(procs, fifo_names)
    daemon = procs.all[-1]
    inward = _inward(procs, redis_server.url("ends"), b)
    daemon.signal(signal.SIGTERM)
    assert inward.wait() == 0, inward.err[-3:]
    assert "is shutting down" in inward.err[-2], inward.err[-3:]
    assert daemon.wait() == 0
