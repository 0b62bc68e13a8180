"""One adapter per implementation under test, all with the same small interface.

The parent calls ``create()`` before forking workers and ``destroy()`` after joining them (in a
``finally``; it is safe on a half-built peer and idempotent). Each worker, and the parent when it
sends the stop markers, calls ``connect()`` and uses the returned endpoint::

    with peer.connect() as ep:
        ep.put(item); ep.put_many(items)      # items are bytes of the workload's item size
        ep.get(); ep.get_many(n)              # get_many returns 1..n items

Workers are forked, so objects created in ``create()`` (queues, pipe fds, locks) are inherited.
Peers without a native batch API (``batching = False``) fall back to single put/get; the suite
does not run them in batched workloads but reports their single-item figure as the nearest
equivalent.

Capacities are made as close to the workload's as each implementation allows; where they cannot
be, ``capacity_note`` says so and the report prints it.
"""

import contextlib
import fcntl
import io
import multiprocessing
import os
import pickle
import select

import posix_ipc

from . import ipc_names

__all__ = ["Peer", "MpQueue", "MpSimpleQueue", "FasterFifo", "PosixMq", "Pipe", "PipeStream",
           "Shmfifo", "python_peers"]

CTX = multiprocessing.get_context("fork")
# A blocking call in a benchmark should block "forever"; the harness bounds every run from the
# outside and kills stuck workers, so a library timeout would only mask a hang as an exception.
FOREVER = 3600.0


class Peer:
    """Base class: a single-item endpoint on top of ``put``/``get``."""

    label = "?"
    batching = False

    def __init__(self, capacity, item_size, producers, consumers):
        self.capacity = capacity
        self.item_size = item_size
        self.producers = producers
        self.consumers = consumers
        self.capacity_note = ""

    def create(self):
        pass

    def destroy(self):
        pass

    @contextlib.contextmanager
    def connect(self):
        yield self

    def put_many(self, items):
        for item in items:
            self.put(item)

    def get_many(self, max_items):
        return [self.get()]


class MpQueue(Peer):
    """multiprocessing.Queue(maxsize=capacity): pickles, a feeder thread writes to a pipe."""

    label = "mp.Queue"

    def create(self):
        self.queue = CTX.Queue(maxsize=self.capacity)
        self.put = self.queue.put
        self.get = self.queue.get

    @contextlib.contextmanager
    def connect(self):
        try:
            yield self
        finally:
            # put() only hands the item to the feeder thread; flush before the worker counts
            # as finished, or a stop marker sent afterwards could overtake it.
            self.queue.close()
            self.queue.join_thread()

    def destroy(self):
        queue = getattr(self, "queue", None)
        if queue is not None:
            queue.close()
            queue.join_thread()
            self.queue = None


class MpSimpleQueue(Peer):
    """multiprocessing.SimpleQueue: pickles, writes the pipe directly under a process lock."""

    label = "mp.SimpleQueue"

    def create(self):
        self.queue = CTX.SimpleQueue()
        self.put = self.queue.put
        self.get = self.queue.get
        self.capacity_note = "unbounded API; bounded only by its 64 KiB pipe"

    def destroy(self):
        queue = getattr(self, "queue", None)
        if queue is not None:
            queue.close()
            self.queue = None


class FasterFifo(Peer):
    """faster_fifo.Queue: a circular byte buffer in shared memory with a pthread mutex/condvars."""

    label = "faster-fifo"
    batching = True
    # Each message is stored as a size_t length followed by the pickled bytes (measured: a
    # buffer of capacity * (pickled + 8) bytes holds exactly `capacity` items).
    MESSAGE_OVERHEAD = 8

    def create(self):
        import faster_fifo

        pickled = len(pickle.dumps(bytes(self.item_size)))
        self.queue = faster_fifo.Queue(
            max_size_bytes=self.capacity * (pickled + self.MESSAGE_OVERHEAD))
        self.capacity_note = "bounded in bytes, sized to hold `capacity` items"

    def put(self, item):
        self.queue.put(item, timeout=FOREVER)

    def get(self):
        return self.queue.get(timeout=FOREVER)

    def put_many(self, items):
        self.queue.put_many(items, timeout=FOREVER)

    def get_many(self, max_items):
        return self.queue.get_many(timeout=FOREVER, max_messages_to_get=max_items)

    def destroy(self):
        queue = getattr(self, "queue", None)
        if queue is not None:
            queue.close()
            self.queue = None


class PosixMq(Peer):
    """posix_ipc.MessageQueue: the kernel's POSIX message queue, one syscall per message."""

    label = "posix_ipc.mq"

    def create(self):
        limit = _read_int("/proc/sys/fs/mqueue/msg_max", posix_ipc.QUEUE_MESSAGES_MAX_DEFAULT)
        depth = min(self.capacity, limit)
        if depth < self.capacity:
            self.capacity_note = f"capacity capped at {depth} by /proc/sys/fs/mqueue/msg_max"
        self.name = "/" + ipc_names.unique("mq")
        ipc_names.note_message_queue(self.name)
        self.queue = posix_ipc.MessageQueue(
            self.name, posix_ipc.O_CREX, mode=0o600,
            max_messages=depth, max_message_size=self.item_size)
        self.put = self.queue.send

    def get(self):
        return self.queue.receive()[0]

    def destroy(self):
        queue = getattr(self, "queue", None)
        if queue is not None:
            queue.close()
            queue.unlink()
            self.queue = None


class Pipe(Peer):
    """os.pipe carrying fixed-size records, sized (F_SETPIPE_SZ) to the capacity.

    Producers need no lock: a write of at most PIPE_BUF bytes to a pipe is atomic (POSIX), so
    records from several writers never interleave. Reads carry no such guarantee, so several
    consumers share a lock around reading one whole record.
    """

    label = "os.pipe"

    def create(self):
        if self.item_size > select.PIPE_BUF:
            raise ValueError(f"item_size {self.item_size} > PIPE_BUF {select.PIPE_BUF}: "
                             "writes would no longer be atomic")
        self._open_pipe()
        self.read_lock = CTX.Lock() if self.consumers > 1 else None

    def _open_pipe(self):
        self.reader, self.writer = os.pipe()
        # The kernel rounds the size up to a power-of-two number of pages, and refuses more than
        # /proc/sys/fs/pipe-max-size to a process without CAP_SYS_RESOURCE.
        wanted = min(self.capacity * self.item_size,
                     _read_int("/proc/sys/fs/pipe-max-size", 1 << 20))
        actual = fcntl.fcntl(self.writer, fcntl.F_SETPIPE_SZ, wanted)
        if actual != self.capacity * self.item_size:
            self.capacity_note = (f"holds {actual / self.item_size:.3g} items "
                                  "(pipe size: whole pages, at most pipe-max-size)")

    def put(self, item):
        os.write(self.writer, item)

    def get(self):
        if self.read_lock is None:
            return self._read_record()
        with self.read_lock:
            return self._read_record()

    def _read_record(self):
        record = os.read(self.reader, self.item_size)
        while len(record) < self.item_size:
            more = os.read(self.reader, self.item_size - len(record))
            if not more:
                raise EOFError("pipe closed in the middle of a record")
            record += more
        return record

    def destroy(self):
        for fd in (getattr(self, "reader", None), getattr(self, "writer", None)):
            if fd is not None:
                os.close(fd)
        self.reader = self.writer = None


class PipeStream(Pipe):
    """os.pipe between one producer and one consumer, for items of any size.

    A write larger than PIPE_BUF is not atomic, hence one producer. The consumer reads each item
    with ``io.BufferedReader.read(item_size)``, which reads from the pipe straight into the
    bytes object it returns (only a tail shorter than the reader's buffer, a page, passes
    through that buffer): one copy out of the kernel, as one copy went in.
    """

    def create(self):
        if self.producers != 1 or self.consumers != 1:
            raise ValueError("PipeStream is for one producer and one consumer: writes of "
                             "more than PIPE_BUF bytes to a pipe may interleave")
        self._open_pipe()

    @contextlib.contextmanager
    def connect(self):
        with io.open(self.reader, "rb", closefd=False) as stream:
            def get():
                item = stream.read(self.item_size)
                if len(item) < self.item_size:
                    raise EOFError("pipe closed in the middle of a record")
                return item

            self.get = get
            yield self

    def put(self, item):
        # Linux writes the whole item before a blocking write returns, unless a signal
        # interrupts it; the loop covers that case.
        view = memoryview(item).cast("B")
        while view:
            view = view[os.write(self.writer, view):]


class Shmfifo(Peer):
    """shmfifo, with its daemon in a process of its own so it never competes for our GIL."""

    batching = True

    def __init__(self, capacity, item_size, producers, consumers, split_locks=False, **options):
        """options: more of ``shmfifo.serve``'s FIFO options (max_clients, batch_max)."""
        super().__init__(capacity, item_size, producers, consumers)
        self.split_locks = split_locks
        self.options = options
        self.label = "shmfifo split" if split_locks else "shmfifo"
        self.daemon = None

    def create(self):
        self.name = ipc_names.unique("f")
        ready = CTX.Event()
        self.stop = CTX.Event()
        self.daemon = CTX.Process(
            target=_serve, name=f"daemon {self.name}",
            args=(self.name, self.capacity, self.item_size, self.split_locks, self.options,
                  ready, self.stop))
        self.daemon.start()
        if not ready.wait(timeout=20):
            raise RuntimeError(f"shmfifo daemon for {self.name} not ready after 20 s "
                               f"(exit code {self.daemon.exitcode})")

    @contextlib.contextmanager
    def connect(self):
        import shmfifo

        with shmfifo.attach(self.name) as queue:
            self.queue = queue
            self.put = queue.put
            self.get = queue.get
            self.put_many = queue.put_many
            self.get_many = queue.get_many
            yield self

    def destroy(self):
        if self.daemon is None:
            return
        self.stop.set()
        self.daemon.join(timeout=20)
        if self.daemon.exitcode is None:
            self.daemon.kill()
            self.daemon.join(timeout=5)
            raise RuntimeError(f"shmfifo daemon {self.name} did not stop within 20 s; killed")
        self.daemon = None


def _serve(name, capacity, item_size, split_locks, options, ready, stop):
    import shmfifo

    with shmfifo.serve(name, capacity=capacity, item_size=item_size, split_locks=split_locks,
                       **options):
        ready.set()
        stop.wait()


def _read_int(path, default):
    try:
        with open(path) as f:
            return int(f.read())
    except OSError:
        return default


def python_peers():
    """The Python-side implementations, in report order: ``[(label, factory), ...]``."""
    return [
        ("shmfifo", lambda *geometry: Shmfifo(*geometry, split_locks=False)),
        ("shmfifo split", lambda *geometry: Shmfifo(*geometry, split_locks=True)),
        ("mp.Queue", MpQueue),
        ("mp.SimpleQueue", MpSimpleQueue),
        ("faster-fifo", FasterFifo),
        ("posix_ipc.mq", PosixMq),
        ("os.pipe", Pipe),
    ]
