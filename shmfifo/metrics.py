"""Prometheus metrics of FIFOs, read from their shared memory at each scrape.

    $ shmfifo fifo --name lab --metrics-port 9464
    2026-12-01 19:29:32.798 fifo[17231]: metrics at http://127.0.0.1:9464/metrics
    $ curl -s http://127.0.0.1:9464/metrics
    # HELP shmfifo_up 1 if the FIFO's daemon is running; 0 if it is gone or the FIFO cannot be read
    # TYPE shmfifo_up gauge
    shmfifo_up{fifo="lab"} 1.0
    ...
    shmfifo_items{fifo="lab"} 2.0
    shmfifo_capacity{fifo="lab"} 32.0
    ...
    # HELP shmfifo_taken_total Items taken since the FIFO was created (re-queued ones again)
    # TYPE shmfifo_taken_total counter
    shmfifo_taken_total{fifo="lab"} 12.0
    ...
    shmfifo_daemon_state{fifo="lab",state="running"} 1.0
    shmfifo_daemon_state{fifo="lab",state="recovering"} 0.0
    ...
    shmfifo_clients{fifo="lab",role="producer",state="running"} 1.0
    shmfifo_clients{fifo="lab",role="producer",state="blocked on full"} 0.0
    ...
    shmfifo_client_rate{entry="0",fifo="lab",pid="17251",role="producer"} 5.0
    shmfifo_client_rate{entry="1",fifo="lab",pid="17253",role="consumer"} 4.0
    ...
    shmfifo_client_items_total{entry="0",fifo="lab",pid="17251",role="producer"} 15.0

``shmfifo status lab --prometheus`` prints the same text once (node_exporter's textfile
collector); without a name, for every FIFO on the machine.

Nothing is counted here. Each scrape takes a status snapshot (status.py) and turns it into
metric families, so the numbers are the ones ``shmfifo status`` prints, the daemon keeps no
state for them, and the counters go on across daemon restarts that adopt the FIFO (they
live in the segment). A FIFO that cannot be read, or is gone, is a scrape like any other:
``shmfifo_up 0`` and ``shmfifo_scrape_error 1``.

Every series has a ``fifo`` label. A client's are labelled by ``role``, ``pid`` and
``entry``, its index in the FIFO's client table: a program has a client per thread, so the
pid alone does not tell them apart. Client counts list every role and state, zeros
included, so that "no consumer attached" is a 0 to alert on rather than a missing series.

The registry is a dedicated one, without the library's process and platform collectors:
the daemon is not in the data path, so its CPU and memory say nothing about the FIFO, and
in ``status --prometheus`` they would describe the status command itself.

The exposition is the ``prometheus_client`` library's, an optional dependency:
``pip install 'shmfifo[metrics]'``.
"""

import errno
import math
from operator import attrgetter

from . import layout, status
from .errors import CannotListen, MissingExtra, ShmfifoError

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError:          # the optional extra is not installed: _require says how to
    prometheus_client = None

__all__ = ["FifoCollector", "registry", "exposition", "serve", "Exporter", "DEFAULT_ADDR"]

# What runs on a machine is nobody else's business unless asked: serve on loopback.
DEFAULT_ADDR = "127.0.0.1"

# (name, help, value of a FifoStatus): one series per FIFO each.
_GAUGES = (
    ("shmfifo_items", "Items queued now", attrgetter("items")),
    ("shmfifo_capacity", "Capacity in items", attrgetter("capacity")),
    ("shmfifo_item_size_bytes", "Largest item in bytes, after encoding",
     attrgetter("item_size")),
    ("shmfifo_max_clients", "Most clients that can be attached at once",
     attrgetter("max_clients")),
    ("shmfifo_reserved_bytes", "Bytes of shared memory the FIFO's segment holds, all "
     "reserved when it was created", attrgetter("reserved")),
)
# Counter names without the _total the exposition adds.
_COUNTERS = (
    ("shmfifo_put", "Items put since the FIFO was created", attrgetter("puts")),
    ("shmfifo_taken", "Items taken since the FIFO was created (re-queued ones again)",
     attrgetter("taken")),
    ("shmfifo_requeued", "Items a dead consumer had taken and a recovery put back at the "
     "front", attrgetter("requeued")),
    ("shmfifo_recoveries", "Recoveries after a client died", attrgetter("recoveries")),
)
ROLES = tuple(layout.ROLE_NAMES.values())


def _require(feature):
    if prometheus_client is None:
        raise MissingExtra(feature, "prometheus_client", "metrics")


class FifoCollector:
    """A ``prometheus_client`` collector of one FIFO (``name``) or of every FIFO on this
    machine (``name=None``), read when collected."""

    def __init__(self, name=None):
        self.name = name

    def _found(self):
        if self.name is None:
            return status.snapshot_all()
        try:
            # No waiting for a half-built segment: a scrape answers now.
            return [(self.name, status.snapshot(self.name, grace=0))]
        except (ShmfifoError, OSError) as error:      # gone (a daemon stopping), unreadable
            return [(self.name, error)]

    def collect(self):
        found = self._found()
        up = GaugeMetricFamily(
            "shmfifo_up", "1 if the FIFO's daemon is running; 0 if it is gone or the FIFO "
            "cannot be read", labels=["fifo"])
        scrape_error = GaugeMetricFamily(
            "shmfifo_scrape_error", "1 if the FIFO could not be read (gone, not a valid "
            "segment, not readable by this user); its other series are then left out",
            labels=["fifo"])
        gauges = [(GaugeMetricFamily(name, text, labels=["fifo"]), value)
                  for name, text, value in _GAUGES]
        counters = [(CounterMetricFamily(name, text, labels=["fifo"]), value)
                    for name, text, value in _COUNTERS]
        daemon = GaugeMetricFamily(
            "shmfifo_daemon_state", "1 for the state the FIFO's daemon is in, 0 for the "
            "others", labels=["fifo", "state"])
        clients = GaugeMetricFamily(
            "shmfifo_clients", "Clients attached, by role and state",
            labels=["fifo", "role", "state"])
        rate = GaugeMetricFamily(
            "shmfifo_client_rate", "A client's configured rate in items per second (+Inf: "
            "max); library clients, which are not paced, have none",
            labels=["fifo", "role", "pid", "entry"])
        count = CounterMetricFamily(
            "shmfifo_client_items", "Items a client has put (producer), taken (consumer) or "
            "both (library client) since it attached; a bridge, what it carried", labels=[
                "fifo", "role", "pid", "entry"])
        resent = CounterMetricFamily(
            "shmfifo_bridge_resent", "Items a bridge sent again after an error or took over "
            "from a dead bridge: duplicates downstream at most", labels=["fifo", "pid", "entry",
                                                                         "peer"])
        link = GaugeMetricFamily(
            "shmfifo_bridge_up", "1 while a bridge reaches its peer, 0 while it retries",
            labels=["fifo", "pid", "entry", "peer"])
        for name, st in found:
            readable = not isinstance(st, Exception)
            up.add_metric([name], 1 if readable and st.daemon != "gone" else 0)
            scrape_error.add_metric([name], 0 if readable else 1)
            if not readable:
                continue
            for family, value in gauges + counters:
                family.add_metric([name], value(st))
            for state in dict.fromkeys(status.DAEMON_STATES + (st.daemon,)):
                daemon.add_metric([name, state], 1 if state == st.daemon else 0)
            by_state = {(role, state): 0 for role in ROLES for state in status.CLIENT_STATES}
            for c in st.clients:
                by_state[c.role, c.state] = by_state.get((c.role, c.state), 0) + 1
                labels = [name, c.role, str(c.pid), str(c.index)]
                if c.rate != 0:
                    rate.add_metric(labels, math.inf if c.rate is None else c.rate)
                count.add_metric(labels, c.count)
                if c.role == "bridge":
                    peer = [name, str(c.pid), str(c.index), c.item[2:]]   # after the arrow
                    resent.add_metric(peer, c.resent)
                    link.add_metric(peer, 1 if c.link == "up" else 0)
            for (role, state), n in by_state.items():
                clients.add_metric([name, role, state], n)
        yield up
        yield scrape_error
        # The others only where a FIFO gave them values: no headers without a sample.
        for family in [f for f, _ in gauges + counters] + [daemon, clients, rate, count,
                                                           resent, link]:
            if family.samples:
                yield family


def registry(name=None):
    """A registry holding only the collector of FIFO ``name`` (every FIFO if None)."""
    _require("Prometheus metrics")
    found = prometheus_client.CollectorRegistry(auto_describe=False)
    found.register(FifoCollector(name))
    return found


def exposition(name=None):
    """The metrics of FIFO ``name`` (every FIFO if None) in Prometheus' text format."""
    _require("--prometheus")
    return prometheus_client.generate_latest(registry(name)).decode("utf-8")


class Exporter:
    """An HTTP server of a FIFO's metrics, in a thread of this process."""

    def __init__(self, server, thread, addr):
        self._server = server
        self._thread = thread
        self.addr = addr
        self.port = server.server_address[1]

    @property
    def url(self):
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self):
        """Stop serving and close the socket (within the server's half-second poll)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(name, port, addr=DEFAULT_ADDR):
    """Serve the metrics of FIFO ``name`` over HTTP at ``addr:port`` (port 0: any free one)
    from a thread; return the :class:`Exporter`. The socket is bound before this returns,
    so a port in use is a :class:`CannotListen` here, not a log line later."""
    _require("--metrics-port")
    try:
        server, thread = prometheus_client.start_http_server(port, addr=addr,
                                                             registry=registry(name))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            hint = "choose another --metrics-port, or 0 for a free one"
        elif error.errno == errno.EACCES:
            hint = "ports below 1024 need privileges: choose another --metrics-port"
        else:
            hint = "give an address of this machine with --metrics-addr, such as 127.0.0.1"
        raise CannotListen("metrics", addr, port, error.strerror or str(error), hint) from None
    return Exporter(server, thread, addr)
