"""The bridge: a FIFO on this machine and a Redis stream, in one direction.

    shmfifo bridge lab redis://broker:6379/0/lab      FIFO -> stream, on the producers' host
    shmfifo bridge redis://broker:6379/0/lab lab      stream -> FIFO, on the consumers' host

Shared memory ends at the machine; Redis Streams with a consumer group keep what the FIFO
promises across machines: competing consumers, delivery at least once with acknowledgements,
and a dead reader's pending entries claimed by another. So the bridge keeps the same rule on
both sides: an item is acknowledged where it came from only once where it goes has it.

* FIFO -> stream takes a batch from the FIFO (never decoding it: nothing is unpickled),
  XADDs each item as one stream entry in one pipelined round trip, and acknowledges the batch
  in the FIFO only when Redis has answered every XADD. A kill before that re-delivers the
  batch to the next bridge: duplicates, never a loss.
* stream -> FIFO reads with XREADGROUP in a consumer group (default ``shmfifo``), puts into
  the FIFO, and XACKs only after the put. It claims the entries of a dead bridge of its
  group: at once for one that ran on this host (its pid is gone), after ``--claim-idle``
  seconds of idleness (XAUTOCLAIM) for any other.

An entry has three fields: ``item`` (the item as the FIFO encodes it, items.py), ``type``
(``bytes``, ``str``, ``int``, ``pickle``, ... WIRE_TYPES) and ``origin`` (``HOST PID SEQ``,
where the item was first put). The receiving bridge puts the item with its origin, so a
consumer there sees the producer's host, pid and sequence number (Message.host, ``consumer
--json``). An entry that another program XADDs needs only ``item``: it arrives as bytes (or
as its ``type``), from host ``redis`` with pid and seq 0.

Bounds and back-pressure. The stream holds at most ``--maxlen`` entries: the sending bridge
trims (XTRIM MINID) only entries that every group of the stream has acknowledged, and when
none can go it stops taking from its FIFO, whose producers then block as on a full FIFO. The
receiving bridge reads only as many entries as its FIFO has room for. When Redis cannot be
reached, each bridge keeps its items where they are (taken items are re-sent, counted as
``resent``), retries with a backoff of up to RETRY_MAX seconds, and logs once per change.

Commands other than the XADDs go through redis-py. The XADDs of a batch are encoded here (the
protocol's bulk strings, RESP) and sent on redis-py's connection, whose replies redis-py
reads: its pipeline spends about 10 us per command in Python, more than the rest of the
bridge together, and would cap a bridge at about 70k items/s (README, Bridge).
"""

import os
import signal
import socket
import struct
import time
import urllib.parse

from . import hosts, layout, table
from .errors import Empty, FifoClosed, MissingExtra, ShmfifoError, Stopped, UsageError
from .handle import attach
from .items import (TAG_ARRAY, TAG_BYTEARRAY, TAG_BYTES, TAG_INT, TAG_MEMORYVIEW, TAG_NDARRAY,
                    TAG_PICKLE, TAG_PICKLE5, TAG_STR)

try:
    import redis
except ImportError:        # an optional extra: shmfifo[redis]
    redis = None

__all__ = ["Peer", "BridgeError", "run_bridge", "parse_url", "is_url", "WIRE_TYPES"]

DEFAULT_GROUP = "shmfifo"
PID_LIMIT = 1 << 22                 # Linux's largest pid_max: a larger "pid" names no process
DEFAULT_MAXLEN = 100_000
DEFAULT_BATCH = 256
DEFAULT_CLAIM_IDLE = 30.0
RETRY_MIN, RETRY_MAX = 0.1, 2.0     # seconds between attempts to reach Redis, doubling
SOCKET_TIMEOUT = 10.0               # a Redis command that takes longer: the link is down
POLL = 0.2                          # how often an idle bridge looks at its stop flag
FULL_LOG_INTERVAL = 60.0            # "the stream is full" at most once a minute

# The ``type`` field of an entry: the item's encoding in the FIFO (items.py).
WIRE_TYPES = {TAG_BYTES: b"bytes", TAG_STR: b"str", TAG_INT: b"int", TAG_PICKLE: b"pickle",
              TAG_BYTEARRAY: b"bytearray", TAG_MEMORYVIEW: b"memoryview",
              TAG_ARRAY: b"array", TAG_NDARRAY: b"ndarray", TAG_PICKLE5: b"pickle5"}
TAGS = {name: tag for tag, name in WIRE_TYPES.items()}
FOREIGN_HOST = "redis"      # the origin of an entry that has none (another program's XADD)
MAX_ORIGIN = hosts.MAX_ORIGIN
# A packed entry (--pack): fields format, count, hosts (names, space-separated) and items:
# each item a PACKED header (length, type tag, index into hosts, producer, seq), then its bytes.
PACK_FORMAT = b"shmfifo-pack-1"
PACKED = struct.Struct("<IHHQQ")


def _is_pack(fields):
    if type(fields) is list:
        return len(fields) > 1 and fields[0] == b"format" and fields[1] == PACK_FORMAT
    return fields.get(b"format") == PACK_FORMAT

URL_FORM = "use redis://[user:password@]host[:port][/db]/STREAM (rediss:// for TLS)"


class BridgeError(ShmfifoError):
    """The bridge cannot go on (bad credentials, a key that is not a stream, an item too large
    for the FIFO): one line naming the problem and the fix; exit 1."""


class NoGroup(BridgeError):
    """The stream or its group is gone (deleted, or a Redis restarted without persistence):
    the receiving bridge creates them again."""


def is_url(text):
    return "://" in text


class Peer:
    """A Redis stream named by a URL ``redis://[user:password@]host[:port][/db]/STREAM``."""

    def __init__(self, scheme, host, port, db, stream, username, password):
        self.scheme, self.host, self.port, self.db = scheme, host, port, db
        self.stream, self.username, self.password = stream, username, password

    @property
    def display(self):
        """The URL without its password: what logs and ``status`` show."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.scheme}://{user}{host}:{self.port}/{self.db}/"
                f"{urllib.parse.quote(self.stream, safe='')}")

    def connect(self):
        """A redis-py client (it connects on its first command). Its own retries are off: the
        bridge's Link retries, with its backoff, and knows when the link is down."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        return redis.Redis(host=self.host, port=self.port, db=self.db, username=self.username,
                           password=self.password, ssl=self.scheme == "rediss",
                           socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
                           client_name="shmfifo-bridge", retry=Retry(NoBackoff(), 0))


def parse_url(text):
    """The Peer a URL names; UsageError (naming the URL without its password) if it is not
    one. The password may also come from REDISCLI_AUTH, as for redis-cli, which keeps it out
    of the process list."""
    shown = _redacted(text)
    try:
        parts = urllib.parse.urlsplit(text)
        port = 6379 if parts.port is None else parts.port
    except ValueError:
        # (urllib's message may quote part of the password: not shown)
        raise UsageError("URL", shown, f"its port must be a number from 1 to 65535, and a "
                         f"password with # ? / or @ must be percent-encoded (%23 %3F %2F "
                         f"%40); {URL_FORM}") from None
    if port == 0:
        raise UsageError("URL", shown, f"its port must be a number from 1 to 65535; {URL_FORM}")
    if parts.scheme not in ("redis", "rediss"):
        raise UsageError("URL", shown, f"the scheme must be redis or rediss; {URL_FORM}")
    if not parts.hostname:
        raise UsageError("URL", shown, f"it names no host; {URL_FORM}")
    if parts.query or parts.fragment:
        raise UsageError("URL", shown, f"it has a query or fragment; {URL_FORM}")
    try:
        path = [urllib.parse.unquote(p, errors="strict") for p in parts.path.split("/")[1:]]
    except UnicodeDecodeError:
        raise UsageError("URL", shown, f"its stream name is not UTF-8 once percent-decoded; "
                         f"{URL_FORM}") from None
    if len(path) == 2 and path[0].isascii() and path[0].isdigit():
        db, stream = int(path[0]), path[1]
        if db >= 1 << 31:
            raise UsageError("URL", shown, f"its database number must be below 2**31 (Redis "
                             f"has 16 unless configured); {URL_FORM}")
    elif len(path) == 1:
        db, stream = 0, path[0]
    else:
        raise UsageError("URL", shown, f"its path must be /STREAM or /DB/STREAM; {URL_FORM}")
    if not stream:
        raise UsageError("URL", shown, f"it names no stream; {URL_FORM}")
    password = parts.password
    if password is not None:
        password = urllib.parse.unquote(password)
    else:
        password = os.environ.get("REDISCLI_AUTH") or None
    username = urllib.parse.unquote(parts.username) if parts.username else None
    return Peer(parts.scheme, parts.hostname, port, db, stream, username, password)


def _redacted(text):
    """``text`` with the password of its user-info replaced by ***."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


class Link:
    """The bridge's connection to Redis: up or down, logged once per change, with the
    backoff between attempts, and shown in the bridge's entry for ``status``."""

    def __init__(self, peer, entry, log, stopping):
        self.peer = peer
        self.entry = entry
        self.log = log
        self.stopping = stopping
        self.redis = peer.connect()
        self.up = None             # None: not yet connected
        self.down_since = 0.0
        self.delay = RETRY_MIN
        self.failures = 0          # connection errors so far
        self.resent = 0            # items sent again (the entry's RESENT word, kept here too:
                                   # the entry is unmapped once the FIFO is closed)

    def count_resent(self, n):
        self.resent += n
        self.entry.resent = self.resent

    def ok(self):
        if self.up is not True:
            if self.up is False:
                self.log.info("redis at %s reachable again after %.1f s", self.peer.display,
                              time.monotonic() - self.down_since)
            else:
                self.log.info("connected to redis at %s", self.peer.display)
            self.up = True
            self.entry.link = layout.LINK_UP
        self.delay = RETRY_MIN

    def failed(self, error):
        """After a connection error: log it if the link was up, then wait the backoff."""
        self.failures += 1
        if self.up is not False:
            hint = (" (rediss:// speaks TLS: is that port a TLS port?)"
                    if self.peer.scheme == "rediss" and self.up is None else "")
            self.log.warning("redis at %s unreachable (%s)%s; items stay where they are, "
                             "retrying", self.peer.display, _reason(error), hint)
            self.up = False
            self.down_since = time.monotonic()
            self.entry.link = layout.LINK_DOWN
        self.redis.connection_pool.disconnect()
        _sleep(self.delay, self.stopping)
        self.delay = min(self.delay * 2, RETRY_MAX)

    def call(self, function, *args, **kwargs):
        """``function(*args)`` against Redis, retried until it answers (or a stop: None)."""
        while not self.stopping():
            try:
                result = function(*args, **kwargs)
            except redis.ConnectionError as error:
                _fatal_connection(error, self.peer)
                self.failed(error)
                continue
            except redis.TimeoutError as error:
                self.failed(error)
                continue
            except redis.ResponseError as error:
                if not _error_text(error).startswith("OOM"):
                    raise _response_error(error, self.peer) from None
                self.failed(error)            # out of memory: waited out like a lost link
                continue
            self.ok()
            return result
        return None


def _reason(error):
    return str(error).rstrip(".") or type(error).__name__


def _fatal_connection(error, peer):
    """Raise BridgeError for a connection error no retry can mend: bad credentials."""
    if isinstance(error, redis.AuthenticationError):
        raise BridgeError(f"redis at {peer.display} refused the credentials ({_reason(error)}): "
                          f"give the right user and password in the URL or in "
                          f"REDISCLI_AUTH") from None


def _error_text(error):
    # a pipeline's error names the command first: "Command # 2 (...) of pipeline caused
    # error: NOGROUP ..."
    return _reason(error).split("of pipeline caused error: ", 1)[-1]


def _response_error(error, peer):
    text = _error_text(error)
    if isinstance(error, redis.AuthenticationError) or text.startswith(
            ("NOAUTH", "WRONGPASS", "NOPERM")) or isinstance(
            error, getattr(redis.exceptions, "NoPermissionError", ())):
        return BridgeError(f"redis at {peer.display} refused the credentials or the command "
                           f"({text}): give a user allowed to use streams, in the URL or "
                           f"REDISCLI_AUTH")
    if text.startswith("WRONGTYPE"):
        return BridgeError(f"key {peer.stream!r} at {peer.display} holds something other than "
                           f"a stream: name another stream in the URL")
    if text.startswith(("NOGROUP", "UNBLOCKED")):       # UNBLOCKED: the key was deleted
        return NoGroup(text)
    if "DB index is out of range" in text:
        return BridgeError(f"redis at {peer.display} has no database {peer.db}: name one "
                           f"that it has in the URL")
    return BridgeError(f"redis at {peer.display} answered: {text}")


def _sleep(seconds, stopping):
    end = time.monotonic() + seconds
    while not stopping():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def _resolve(peer):
    """BridgeError if the URL's host has no address: a wrong URL, not a Redis that is down."""
    try:
        socket.getaddrinfo(peer.host, peer.port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise BridgeError(f"cannot find host {peer.host!r} of {peer.display} "
                          f"({error.strerror}): check the URL") from None


def _ensure_group(link, group):
    """The consumer group exists (made at the stream's start, with the stream if need be):
    from then on nothing the sending bridge adds is trimmed before the group has it."""
    def create():
        try:
            link.redis.xgroup_create(link.peer.stream, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise
    link.call(create)


# -- FIFO -> stream --------------------------------------------------------------------------

def _bulk(data):
    return b"$%d\r\n%s\r\n" % (len(data), data)


class _Sender:
    """XADDs of a batch, encoded as RESP and pipelined on one of redis-py's connections."""

    def __init__(self, link, host_name, pack=1):
        self.link = link
        self.pack = pack
        stream = _bulk(link.peer.stream.encode())
        # XADD stream * format PACK_FORMAT count N hosts H items DATA
        self.pack_head = (b"*11\r\n$4\r\nXADD\r\n" + stream + b"$1\r\n*\r\n" +
                          _bulk(b"format") + _bulk(PACK_FORMAT) + _bulk(b"count"))
        # XADD stream * item %s type %s origin %s: one format per item
        self.format = (b"*9\r\n$4\r\nXADD\r\n" + _bulk(link.peer.stream.encode()) +
                       b"$1\r\n*\r\n$4\r\nitem\r\n$%d\r\n%s\r\n$4\r\ntype\r\n%s"
                       b"$6\r\norigin\r\n$%d\r\n%s\r\n")
        self.kinds = {tag: _bulk(name) for tag, name in WIRE_TYPES.items()}
        self.hosts = {}
        if host_name:               # what this machine is called on the stream
            self.hosts[hosts.local_name()] = _host_word(host_name)

    def command(self, record):
        tag, payload, host, producer, seq = record
        name = self.hosts.get(host)
        if name is None:
            name = self.hosts[host] = _host_word(host or "?")
        kind = self.kinds.get(tag) or _bulk(str(tag).encode())
        origin = b"%s %d %d" % (name, producer, seq)
        return self.format % (len(payload), payload, kind, len(origin), origin)

    def packed(self, records):
        """One XADD of several records (PACK_FORMAT)."""
        names = {}
        body = []
        for tag, payload, host, producer, seq in records:
            name = self.hosts.get(host)
            if name is None:
                name = self.hosts[host] = _host_word(host or "?")
            index = names.setdefault(name, len(names))
            body.append(PACKED.pack(len(payload), tag, index, producer, seq))
            body.append(payload)
        items = b"".join(body)
        return b"".join((self.pack_head, _bulk(b"%d" % len(records)), _bulk(b"hosts"),
                         _bulk(b" ".join(names)), _bulk(b"items"), b"$%d\r\n" % len(items),
                         items, b"\r\n"))

    def send(self, records):
        """XADD every record (``pack`` to an entry); return when Redis has answered."""
        pool = self.link.redis.connection_pool
        conn = pool.get_connection()
        if self.pack > 1:
            commands = [self.packed(records[k:k + self.pack])
                        for k in range(0, len(records), self.pack)]
        else:
            commands = list(map(self.command, records))
        try:
            conn.send_packed_command([b"".join(commands)])
            error = None
            for _ in commands:
                try:
                    conn.read_response()
                except redis.ResponseError as refused:       # read on: keep the replies paired
                    error = error or refused
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        if error is not None:
            raise error
        return True


def _host_word(name):
    """A host name as the origin field carries it: one word, UTF-8."""
    return hosts.fit(name).replace(" ", "_").encode("utf-8")


def _next_id(entry_id):
    ms, seq = (int(x) for x in entry_id.decode().split("-"))
    return f"{ms}-{seq + 1}" if seq < (1 << 64) - 1 else f"{ms + 1}-0"


def _id_key(entry_id):
    ms, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")
    return int(ms), int(seq)


def _trim(r, stream):
    """Remove the entries that every group has acknowledged (none if the stream has no group:
    then nothing is known to be delivered); return the stream's length."""
    floor = None
    for group in r.xinfo_groups(stream):
        if group["pending"]:
            first = r.xpending(stream, group["name"])["min"]
            keep = first.decode() if isinstance(first, bytes) else first
        else:
            keep = _next_id(group["last-delivered-id"])
        if floor is None or _id_key(keep) < _id_key(floor):
            floor = keep
    if floor is not None:
        r.xtrim(stream, minid=floor)
    return r.xlen(stream)


def _to_stream(fifo, link, *, maxlen, batch, host_name, pack, log, stopping):
    """FIFO -> stream until stopped; returns the number of items sent."""
    client = fifo._client()
    sender = _Sender(link, host_name, pack)
    r, stream = link.redis, link.peer.stream
    sent = 0
    length = link.call(_trim, r, stream)
    room = maxlen - (length or 0)
    full_logged = 0.0
    while not stopping():
        if room <= 0:
            length = link.call(_trim, r, stream)
            room = 0 if length is None else maxlen - length
            if room <= 0:
                if time.monotonic() - full_logged >= FULL_LOG_INTERVAL:
                    log.info("stream %r holds %s entries, --maxlen %d, not all acknowledged "
                             "by every group: waiting (the FIFO keeps the items)", stream,
                             length, maxlen)
                    full_logged = time.monotonic()
                _sleep(0.05, stopping)
                continue
        try:
            records = client.take_records(min(batch, room * pack), timeout=POLL)
        except Empty:
            continue
        except (Stopped, FifoClosed):
            break
        if any(type(x) is not tuple for x in records):
            for bad in [x for x in records if type(x) is not tuple]:
                log.warning("%s: skipped", bad)        # a scribbled slot: not an item
            records = [x for x in records if type(x) is tuple]
            if not records:
                client.ack()
                continue
        try:
            delivered = _send(sender, records, link)
        except BaseException:
            fifo.close(ack=False)      # (an error Redis answered): the batch stays in the FIFO
            raise
        if not delivered:
            # stopped while Redis was unreachable: the batch goes back to the FIFO
            fifo.close(ack=False)
            log.info("gave back %d item(s) not sent to FIFO %r", len(records), fifo.name)
            return sent
        client.ack()
        n = len(records)
        sent += n
        room -= -(-n // pack)          # entries added
    return sent


def _send(sender, records, link):
    """XADD the records until Redis has them all: True; False if stopped before. A failed
    attempt may have added some of them: the next one re-sends all, counted once as resent
    when it succeeds."""
    failures = link.failures
    if link.call(sender.send, records) is None:
        return False
    if link.failures != failures:
        link.count_resent(len(records))
    return True


# -- stream -> FIFO --------------------------------------------------------------------------

class _Receiver:
    """Entries into the FIFO: decoded to (tag, payload) and origin, put, then XACKed."""

    def __init__(self, fifo, link, group, consumer, log):
        self.fifo = fifo
        self.client = fifo._client()
        self.link = link
        self.group = group
        self.consumer = consumer
        self.log = log
        self.warned = set()
        self.item_size = fifo.item_size
        self.hosts = {}
        self.unacked = []           # ids put into the FIFO, to XACK with the next read
        self.most = 1               # the most items an entry has held so far (--pack)

    def host(self, word):
        name = self.hosts.get(word)
        if name is None:
            name = self.hosts[word] = word.decode("utf-8", "replace")
        return name

    def record(self, entry_id, fields):
        """(tag, payload), origin of an entry whose fields are a dict, or the flat list of
        names and values that XREADGROUP's raw reply gives (``_raw``)."""
        if type(fields) is list:
            if len(fields) == 6 and fields[0] == b"item" and fields[2] == b"type" and \
                    fields[4] == b"origin":           # a bridge's entry: the common case
                payload, kind, origin = fields[1], fields[3], fields[5]
                tag = TAGS.get(kind)
                words = origin.split(b" ")
                if tag is not None and len(words) == 3 and words[1].isdigit() and \
                        words[2].isdigit() and len(payload) <= self.item_size and \
                        (tag != TAG_STR or payload.isascii() or _utf8(payload)):
                    producer, seq = int(words[1]), int(words[2])
                    if producer <= MAX_ORIGIN and seq <= MAX_ORIGIN:
                        return (tag, payload), (self.host(words[0]), producer, seq)
            fields = dict(zip(fields[::2], fields[1::2]))
        payload = fields.get(b"item")
        if payload is None:
            payload = next(iter(fields.values()), b"") if len(fields) == 1 else b""
            self._warn("no-item", f"stream entry {entry_id.decode()} has no field 'item': "
                                  f"delivered as bytes (shmfifo entries have item, type and "
                                  f"origin)")
        kind = fields.get(b"type", b"bytes")
        tag = self.checked(entry_id, TAGS.get(kind), kind, payload)
        origin = fields.get(b"origin", b"").split(b" ")
        source = (FOREIGN_HOST, 0, 0)
        if len(origin) == 3 and origin[1].isdigit() and origin[2].isdigit():
            producer, seq = int(origin[1]), int(origin[2])
            if producer <= MAX_ORIGIN and seq <= MAX_ORIGIN:
                source = (self.host(origin[0]), producer, seq)
        if len(payload) > self.item_size:
            raise BridgeError(self._too_large(entry_id, len(payload)))
        return (tag, payload), source

    def _too_large(self, entry_id, length):
        return (f"stream entry {entry_id.decode()} holds an item of {length} bytes, more than "
                f"the {self.item_size} of FIFO {self.fifo.name!r}: restart that FIFO with a "
                f"larger --item-size (the entry stays pending in group {self.group!r} and is "
                f"delivered then)")

    def checked(self, entry_id, tag, kind, payload):
        """``tag`` if it is a type this shmfifo knows and a str payload is UTF-8; otherwise
        TAG_BYTES, with a warning: a consumer gets the bytes rather than skipping a corrupt
        item."""
        if tag is not None and (tag != TAG_STR or payload.isascii() or _utf8(payload)):
            return tag
        what = (f"type {kind!r}, which this shmfifo does not know" if tag is None else
                "type str, but its bytes are not UTF-8")
        self._warn(f"type {kind!r}", f"stream entry {entry_id.decode()} has {what}: "
                                     f"delivered as bytes")
        return TAG_BYTES

    def _warn(self, kind, text):
        if kind not in self.warned:
            self.warned.add(kind)
            self.log.warning("%s", text)

    def deliver(self, entries, later=False):
        """Put the items of the entries (id, fields), then XACK the entries (``later``: with
        the next read, see read); return how many items were put. An entry is acknowledged
        only once all its items are in the FIFO: a stop while the FIFO is full leaves the
        rest pending, for the next bridge."""
        records, origins, ids, counts = [], [], [], []
        error = None
        for entry_id, fields in entries:
            n = 0
            if fields:              # (none: deleted while pending, by someone else's trim)
                try:
                    if _is_pack(fields):
                        for record, origin in self.unpack(entry_id, fields):
                            records.append(record)
                            origins.append(origin)
                            n += 1
                    else:
                        record, origin = self.record(entry_id, fields)
                        records.append(record)
                        origins.append(origin)
                        n = 1
                except BridgeError as too_large:
                    del records[len(records) - n:], origins[len(origins) - n:]
                    error = too_large
                    break
            ids.append(entry_id)
            counts.append(n)
        if len(ids) > self.most and counts:
            self.most = max(counts)
        put = len(records)
        try:
            if records:
                self.client.put_records(records, origins)
        except (Stopped, FifoClosed) as stop:
            put = getattr(stop, "put", 0)
            error = stop
        if put < len(records):
            whole, total = 0, 0
            for n in counts:
                if total + n > put:
                    break
                total += n
                whole += 1
            ids = ids[:whole]
        self.unacked += ids
        if error is not None or not later:
            self.flush()
        if error is not None:
            raise error
        return put

    def unpack(self, entry_id, fields):
        """The (record, origin) of each item of a packed entry (PACK_FORMAT); an entry that
        does not parse is reported, and yields nothing (it is acknowledged: its id is in the
        log for whoever wants to look at it with XRANGE)."""
        fields = dict(zip(fields[::2], fields[1::2])) if type(fields) is list else fields
        data = fields.get(b"items", b"")
        names = [self.host(h) for h in fields.get(b"hosts", b"").split(b" ")]
        found, at, end = [], 0, len(data)
        try:
            while at < end:
                length, tag, host, producer, seq = PACKED.unpack_from(data, at)
                at += PACKED.size
                if at + length > end or host >= len(names):
                    raise ValueError("an item runs past the entry's end")
                if length > self.item_size:
                    raise BridgeError(self._too_large(entry_id, length))
                payload = data[at:at + length]
                tag = self.checked(entry_id, tag if tag in WIRE_TYPES else None, tag, payload)
                found.append(((tag, payload), (names[host], producer, seq)))
                at += length
        except (ValueError, struct.error) as bad:
            self.log.warning("stream entry %s is not a shmfifo pack (%s): skipped", 
                             entry_id.decode(), bad)
            return []
        return found

    def flush(self):
        """XACK what was put and is not acknowledged yet."""
        if self.unacked:
            self.link.call(self.link.redis.xack, self.link.peer.stream, self.group,
                           *self.unacked)
            self.unacked = []

    def read(self, count):
        """Read up to ``count`` new entries, acknowledging what the last read put in the same
        round trip, and put them into the FIFO (their XACK goes with the next read): how
        many were put."""
        link = self.link
        stream = link.peer.stream

        def exchange():
            pipe = link.redis.pipeline(transaction=False)
            if self.unacked:
                pipe.xack(stream, self.group, *self.unacked)
            pipe.execute_command("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT",
                                 count, "BLOCK", int(POLL * 1000), "STREAMS", stream, ">")
            return pipe.execute()[-1]
        answer = link.call(exchange)
        if answer is None:            # stopped while Redis was away: nothing was read
            return 0
        self.unacked = []
        if not answer:
            return 0
        return self.deliver(_entries(answer), later=True)


def _utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _raw(response, **options):
    return response


def _entries(answer):
    """The entries of a raw XREADGROUP reply of one stream: [[stream, entries]] in RESP2,
    {stream: entries} in RESP3."""
    return next(iter(answer.values())) if isinstance(answer, dict) else answer[0][1]


def _dead_here(link, group, me):
    """Consumers of the group that ran on this host and whose process is gone."""
    import psutil
    dead = []
    prefix = f"{hosts.local_name()}:"
    for consumer in link.call(link.redis.xinfo_consumers, link.peer.stream, group) or []:
        name = consumer["name"].decode("utf-8", "replace")
        if name == me or not name.startswith(prefix):
            continue
        pid = name[len(prefix):]
        if pid.isascii() and pid.isdigit() and int(pid) < PID_LIMIT and \
                not psutil.pid_exists(int(pid)):
            dead.append((name, consumer["pending"]))
    return dead


def _from_stream(fifo, link, *, group, batch, claim_idle, log, stopping):
    """Stream -> FIFO until stopped; returns the number of items put."""
    r, stream = link.redis, link.peer.stream
    # XREADGROUP's reply as hiredis gives it, entries as [id, [name, value, ...]]: redis-py's
    # parsing into dicts cost more than everything else the bridge does per entry.
    r.set_response_callback("XREADGROUP", _raw)
    me = f"{hosts.local_name()}:{os.getpid()}"
    receiver = _Receiver(fifo, link, group, me, log)
    put = 0
    # The pending entries of bridges of this host that died: theirs at once.
    for name, pending in _dead_here(link, group, me):
        while pending and not stopping():
            held = link.call(r.xpending_range, stream, group, "-", "+", batch, name) or []
            if not held:
                break
            ids = [h["message_id"] for h in held]
            claimed = link.call(r.xclaim, stream, group, me, 0, ids) or []
            log.info("re-delivering %d entries that bridge %s (gone) had read", len(claimed),
                     name)
            put += _redeliver(receiver, claimed, ids)
            pending -= len(ids)
        if not stopping():
            link.call(r.xgroup_delconsumer, stream, group, name)
    capacity = fifo.capacity
    next_claim = time.monotonic()
    cursor = "0-0"
    failures = link.failures
    own = False             # re-read this bridge's own pending entries first
    while not stopping():
        if fifo.state() != "running":       # its daemon is stopping: no put would be let in
            log.info("FIFO %r is shutting down", fifo.name)
            break
        room = capacity - fifo.qsize()
        if room <= 0:
            receiver.flush()
            _sleep(0.005, stopping)         # back-pressure: read nothing while the FIFO is full
            continue
        count = max(1, min(batch, room) // receiver.most)     # entries (--pack: of items)
        if link.failures != failures:
            # A connection lost during an XREADGROUP may have left entries pending under our
            # name that never reached us (an entry we put is XACKed before we read on).
            failures, own = link.failures, True
        try:
            if own:
                answer = link.call(r.xreadgroup, group, me, {stream: "0"}, count=count)
                entries = _entries(answer) if answer else []
                own = bool(entries)
                put += receiver.deliver(entries)
            elif time.monotonic() >= next_claim:
                # entries another bridge read and has not acknowledged for claim_idle seconds
                next_claim = time.monotonic() + max(claim_idle / 2, 0.5)
                found = link.call(r.xautoclaim, stream, group, me, int(claim_idle * 1000),
                                  cursor, count=count)
                if found:
                    cursor = found[0]
                    if found[1]:
                        log.info("re-delivering %d entries idle for %g s or more (their "
                                 "bridge is gone or stalled)", len(found[1]), claim_idle)
                        put += _redeliver(receiver, found[1], None)
                    if len(found) > 2 and found[2]:      # deleted while pending
                        link.call(r.xack, stream, group, *found[2])
            else:
                put += receiver.read(count)
        except NoGroup as gone:
            log.warning("%s: creating the group again (the stream or its group was deleted, "
                        "or Redis lost them in a restart)", gone)
            _ensure_group(link, group)
        except (Stopped, FifoClosed) as ended:
            # a stop while a put waited for room, or the FIFO's daemon stopping: what was not
            # put stays pending in the group, for the next bridge
            if isinstance(ended, FifoClosed):
                log.info("FIFO %r is shutting down", fifo.name)
            break
    receiver.flush()
    # A clean stop: the bridge's name leaves the group if it holds nothing.
    if link.up is not True:
        return put
    try:
        for consumer in r.xinfo_consumers(stream, group):
            if consumer["name"].decode() == me and not consumer["pending"]:
                r.xgroup_delconsumer(stream, group, me)
    except redis.RedisError:
        pass
    return put


def _redeliver(receiver, entries, ids):
    if ids is not None:          # XCLAIM leaves out entries trimmed since: acknowledge them
        present = {e[0] for e in entries}
        gone = [i for i in ids if i not in present]
        if gone:
            receiver.link.call(receiver.link.redis.xack, receiver.link.peer.stream,
                               receiver.group, *gone)
    n = receiver.deliver(entries)
    receiver.link.count_resent(n)
    return n


# -- the command -----------------------------------------------------------------------------

def run_bridge(src, dst, *, group=DEFAULT_GROUP, maxlen=DEFAULT_MAXLEN, batch=DEFAULT_BATCH,
               claim_idle=DEFAULT_CLAIM_IDLE, host_name=None, pack=1, shared=False, log):
    """Run a bridge between FIFO and stream (one of ``src``, ``dst`` a URL) until SIGTERM,
    SIGINT or SIGHUP; return the exit code. UsageError for a bad URL or pair, BridgeError
    when it cannot go on, FifoNotFound when there is no such FIFO."""
    if is_url(src) == is_url(dst):
        raise UsageError("SRC DST", f"{src} {dst}", "give one FIFO name and one redis:// URL, "
                         "the source first")
    outward = is_url(dst)
    peer = parse_url(dst if outward else src)
    name = src if outward else dst
    if redis is None:
        raise MissingExtra("shmfifo bridge", "redis", "redis")
    _resolve(peer)
    stop = []
    stopping = lambda: bool(stop)           # noqa: E731

    arrow = "→" if outward else "←"
    with attach(name, role=layout.ROLE_BRIDGE, param=f"{arrow} {peer.display}",
                shared=shared) as fifo:
        def on_signal(signum, frame):
            stop.append(signal.Signals(signum).name)
            fifo.request_stop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)
        client = fifo._client()
        entry = table.Entry(client._seg, client.index)
        link = Link(peer, entry, log, stopping)
        log.info("bridging FIFO %r %s %s (group %r)", name, "to" if outward else "from",
                 peer.display, group)
        started = time.monotonic()
        _ensure_group(link, group)
        if outward:
            n = _to_stream(fifo, link, maxlen=maxlen, batch=min(batch, fifo.batch_max),
                           host_name=host_name, pack=pack, log=log, stopping=stopping)
        else:
            n = _from_stream(fifo, link, group=group, batch=batch,
                             claim_idle=claim_idle, log=log, stopping=stopping)
        elapsed = time.monotonic() - started
        log.info("stopped (%s) after %d items in %.1f s (%d re-sent)",
                 stop[0] if stop else "request", n, elapsed, link.resent)
    return 0
