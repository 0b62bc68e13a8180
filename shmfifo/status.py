"""What a FIFO is doing, read from its shared memory: the lab's ``lsmod`` and
``/sys/module/*/parameters``.

    $ shmfifo status lab
    FIFO 'lab'  daemon pid 4700 (running)  single mutex
      items     12/32 (slots of 128 bytes, 32 clients max)
      semaphores empty=20 fill=12 mutex=1
      totals    put 340, taken 328, re-queued 0, recoveries 0
      ROLE      PID    ITEM   RATE    COUNT  STATE
      producer  4711   'a'    5/s     170    running
      producer  4712   'b'    3/s     102    blocked on full
      consumer  4713   -      8/s     328    running

A :class:`FifoStatus` is a frozen snapshot; formatting lives apart from reading, so the CLI,
``--json`` and the live view all print the same numbers.
"""

import dataclasses
import math
import os
import stat
import time
from typing import Optional, Tuple

import posix_ipc

from . import layout, names
from .errors import ShmfifoError
from .layout import H_BLOCKER, H_DAEMON_PID, H_DEBT, H_EPOCH, H_HEAD, H_RECOVERIES, H_REQUEUED, \
    H_STATE, H_TAIL
from .recovery import process_state
from .segment import Segment
from .table import entries

__all__ = ["ClientStatus", "FifoStatus", "snapshot", "snapshot_all", "format_status",
           "format_list", "status_dict", "status_json", "find_client", "JSON_SCHEMA",
           "CLIENT_STATES", "DAEMON_STATES"]

DEAD = "dead (recovery pending)"
PEER_DOWN = "peer unreachable"          # a bridge retrying its connection to Redis
LINKS = {layout.LINK_UP: "up", layout.LINK_DOWN: "down"}
# Every state a client is shown in, for those who list them all (metrics.py counts clients
# in each, zeros included).
CLIENT_STATES = ("running", "blocked on full", "blocked on empty", "blocked on in-flight limit",
                 "parked", "stopped", PEER_DOWN, DEAD)
DAEMON_STATES = ("running", "recovering", "draining", "stopping", "corrupt", "gone")
# How long to look for a moment between recoveries to read the totals at (see _totals).
TOTALS_PATIENCE = 0.05


@dataclasses.dataclass(frozen=True)
class ClientStatus:
    index: int
    role: str
    pid: int
    item: str                 # the producer's configured item, as text ('' for others)
    rate: Optional[float]     # configured items/s; None = unlimited; 0.0 = not paced
    puts: int
    gets: int
    state: str                # running, blocked on full/empty, parked, stopped, dead, ...
    in_flight: int            # items taken and not yet acknowledged
    attached_ns: int
    writing: int = 0          # 1 while a put_view of this client holds a slot and its room
    resent: int = 0           # a bridge's items sent again (possible duplicates downstream)
    link: str = ""            # a bridge's link to its peer: "up", "down" or "" (not yet)

    @property
    def count(self):
        return self.puts if self.role == "producer" else (self.gets if self.role == "consumer"
                                                          else self.puts + self.gets)


@dataclasses.dataclass(frozen=True)
class FifoStatus:
    name: str
    capacity: int
    item_size: int
    max_clients: int
    batch_max: int
    split_locks: bool
    items: int
    semaphores: Tuple[Tuple[str, int], ...]
    puts: int
    taken: int
    requeued: int
    recoveries: int
    debt: int                 # items re-queued beyond the capacity (paid by the next takes)
    in_flight: int            # items taken by consumers and not yet acknowledged
    daemon_pid: int
    daemon: str               # running, gone, recovering, draining, stopped
    blocker: int              # pid a recovery waits for, or a stopped lock holder; 0 if none
    clients: Tuple[ClientStatus, ...]
    mode: int
    owner: int = -1           # uid owning the segment
    reserved: int = 0         # bytes of the segment, all reserved when it was created
    in_flight_max: int = 0    # how many items may be in flight (the geometry's in_flight)
    writing: int = 0          # items being written in place (put_view): room reserved


def _client(entry):
    if not entry.active:
        return None
    pid = entry.pid
    rate = entry.rate
    if not entry.alive():
        state = DEAD
    else:
        proc = process_state(pid, entry.start)
        if proc == "stopped":
            state = "stopped"
        else:
            state = layout.PHASE_NAMES.get(entry.phase, "running")
            if state in ("putting", "getting"):
                state = "running"
    inflight = entry.inflight_n if entry.inflight in (layout.PREPARED, layout.TAKEN) else 0
    link = LINKS.get(entry.link, "") if entry.role == layout.ROLE_BRIDGE else ""
    if link == "down" and state != DEAD:
        state = PEER_DOWN
    return ClientStatus(
        index=entry.index, role=entry.role_name, pid=pid, item=entry.param,
        rate=None if math.isinf(rate) else rate, puts=entry.puts, gets=entry.gets,
        state=state, in_flight=inflight, writing=int(entry.inflight == layout.WRITING),
        attached_ns=entry.attached, resent=entry.resent,
        link=link)


def snapshot(name, grace=None):
    """Read the status of FIFO ``name``; FifoNotFound or CorruptSegment if it cannot.
    ``grace``: how long a half-built segment may take to become valid (Segment.open)."""
    seg = Segment.open(name, require_daemon=False, writable=False, trust="any", grace=grace)
    try:
        return _read(seg)
    finally:
        seg.close()


def _read(seg):
    w, g = seg.words, seg.geometry
    head, tail, requeued, recoveries = _totals(w)
    sems = []
    for which, sem in seg.semaphores():
        try:
            sems.append((which, sem.value))
        except posix_ipc.Error:
            sems.append((which, -1))
    alive = seg.daemon_alive()
    if not alive:
        daemon = "gone"
    elif w[H_EPOCH] & 1:
        daemon = "recovering"
    else:
        daemon = {layout.RUNNING: "running", layout.DRAINING: "draining",
                  layout.STOPPED: "stopping", layout.CORRUPT: "corrupt"}.get(w[H_STATE],
                                                                             "running")
    clients = tuple(c for c in map(_client, entries(seg)) if c)
    return FifoStatus(
        name=seg.name, capacity=g.capacity, item_size=g.item_size, max_clients=g.max_clients,
        batch_max=g.batch_max, split_locks=g.split_locks, items=max(0, head - tail),
        semaphores=tuple(sems), puts=head - layout.BASE,
        taken=tail - layout.BASE + requeued, requeued=requeued,
        recoveries=recoveries, debt=w[H_DEBT], in_flight=sum(c.in_flight for c in clients),
        writing=sum(c.writing for c in clients), in_flight_max=g.in_flight,
        daemon_pid=w[H_DAEMON_PID], daemon=daemon,
        blocker=w[H_BLOCKER], clients=clients,
        mode=stat.S_IMODE(os.fstat(seg.fd).st_mode), owner=os.fstat(seg.fd).st_uid,
        reserved=g.total_size)


def _totals(w, patience=TOTALS_PATIENCE):
    """``head, tail, requeued, recoveries`` as of one moment between recoveries.

    A re-queue moves ``tail`` back before it adds to ``requeued``: read in between, the total
    taken would dip for a moment, and a monitoring system takes a counter that goes down for
    a restart from zero. Only a recovery re-queues, and it runs with ``epoch`` odd, so the
    epoch serves as a sequence lock: the words are read again until the epoch is even and
    the same before and after. A recovery that stays blocked (on a stopped client) waits
    before any re-queue, so after ``patience`` seconds the words are taken as they are."""
    deadline = time.monotonic() + patience
    while True:
        epoch = w[H_EPOCH]
        words = w[H_HEAD], w[H_TAIL], w[H_REQUEUED], w[H_RECOVERIES]
        if (not epoch & 1 and w[H_EPOCH] == epoch) or time.monotonic() > deadline:
            return words
        time.sleep(0.001)


def snapshot_all():
    """(name, FifoStatus or the error that stopped it being read) for every FIFO here."""
    found = []
    for name in names.list_fifos():
        try:
            # No waiting for half-built segments here: anyone can plant those by the dozen.
            found.append((name, snapshot(name, grace=0)))
        except ShmfifoError as error:       # corrupt, not a segment at all, unreadable
            found.append((name, error))
    return found


def find_client(seg, pid):
    """The live client entry of ``pid``, or None."""
    for entry in entries(seg):
        if entry.active and entry.pid == pid and entry.alive():
            return entry
    return None


# -- formatting ------------------------------------------------------------------------------

def rate_text(rate):
    if rate is None:
        return "max"
    if rate == 0:
        return "-"
    return f"{rate:g}/s"


def daemon_text(st):
    text = f"daemon pid {st.daemon_pid} ({st.daemon})"
    if st.daemon == "gone":
        text += f" -- restart it with: shmfifo fifo --name {st.name}"
    if st.blocker:
        text += (f"; recovery waits for pid {st.blocker}" if st.daemon == "recovering" else
                 f"; a lock is held by stopped pid {st.blocker}")
    return text


def _owner(st):
    if st.owner in (-1, os.geteuid()):
        return ""
    try:
        import pwd
        return f", owner {pwd.getpwuid(st.owner).pw_name}"
    except (KeyError, ImportError):
        return f", owner uid {st.owner}"


def format_status(st):
    locks = "split locks" if st.split_locks else "single mutex"
    sems = " ".join(f"{which}={value}" for which, value in st.semaphores)
    lines = [
        f"FIFO {st.name!r}  {daemon_text(st)}  {locks}",
        f"  items       {st.items}/{st.capacity}" +
        (f" +{st.in_flight} in flight" if st.in_flight else "") +
        (f" +{st.writing} being written" if st.writing else "") +
        f" (slots of {st.item_size} bytes, {st.max_clients} clients max, mode "
        f"{st.mode:04o}{_owner(st)})",
        f"  memory      {size_text(st.reserved)} reserved: {st.capacity + st.in_flight_max} "
        f"slots, for {st.capacity} queued and {st.in_flight_max} in flight at most",
        f"  semaphores  {sems}" + (f"  debt={st.debt}" if st.debt else ""),
        f"  totals      put {st.puts}, taken {st.taken}, re-queued {st.requeued}, "
        f"recoveries {st.recoveries}",
    ]
    if not st.clients:
        lines.append("  no clients attached")
        return "\n".join(lines)
    rows = [("ROLE", "PID", "ITEM", "RATE", "COUNT", "STATE")]
    for c in st.clients:
        item = (_short(repr(c.item)) if c.role == "producer" else
                c.item + (f" ({c.resent} re-sent)" if c.resent else "")
                if c.role == "bridge" else "-")
        rows.append((c.role, str(c.pid), item, rate_text(c.rate), str(c.count), c.state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  " + "  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip())
    return "\n".join(lines)


def size_text(n):
    """Bytes for a person: 5.2 KiB, 8.0 MiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _short(text, width=16):
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= width else text[:width - 1] + "…"


def format_list(found):
    if not found:
        return "no shmfifo FIFOs on this machine (start one with: shmfifo fifo)"
    rows = [("NAME", "DAEMON", "ITEMS", "CLIENTS")]
    for name, st in found:
        if isinstance(st, Exception):
            rows.append((name, "-", "-", f"unreadable: {getattr(st, 'reason', st)}"))
            continue
        daemon = f"{st.daemon_pid} ({st.daemon})"
        roles = {}
        for c in st.clients:
            roles[c.role] = roles.get(c.role, 0) + 1
        clients = ", ".join(f"{n} {role}{'s' if n > 1 else ''}" for role, n in
                            sorted(roles.items())) or "none"
        rows.append((name, daemon, f"{st.items}/{st.capacity}", clients))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip()
                     for r in rows)


# The version of what ``status --json`` prints; a field's meaning never changes within one
# (fields may be added), and the README lists them.
JSON_SCHEMA = 1


def status_dict(st):
    """A JSON-ready dict of one FIFO's snapshot: an element of ``fifos`` in status_json."""
    data = dataclasses.asdict(st)
    data["semaphores"] = dict(st.semaphores)
    data["mode"] = f"{st.mode:04o}"
    for client in data["clients"]:
        if client["rate"] is not None and client["rate"] == 0:
            client["rate"] = None
    return data


def status_json(found):
    """What ``status --json`` prints, for one FIFO or every one: ``found`` is a list of
    (name, FifoStatus or the error that kept it from being read)."""
    return {"schema": JSON_SCHEMA,
            "fifos": [status_dict(st) if not isinstance(st, Exception)
                      else {"name": name, "error": str(st)} for name, st in found]}
