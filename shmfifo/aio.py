"""asyncio for a handle: ``await q.aget()``, ``await q.aput(item)`` and their batch forms.

A POSIX semaphore has no file descriptor for an event loop to watch, so each handle has, per
event loop and per direction, one *watcher* thread (started on first need, whatever the
number of coroutines) that waits for a token of ``fill`` (for getters) or ``empty`` (for
putters) by the ring's protocol, gives it straight back and wakes the loop. Items are only
ever taken, and slots only filled, by the coroutine itself, in the loop's thread, with the
non-blocking ``get_nowait``/``put_nowait`` — as ``asyncio.Queue`` does. So:

* a cancelled or timed-out ``aget`` has taken nothing, and a cancelled ``aput`` has put
  nothing or, for ``aput_many``, whole items (``Full.put`` says how many on a timeout);
* any number of coroutines wait on one handle: they queue in order, one is woken per
  token seen, and a woken coroutine that finds nothing (another reader was quicker) queues
  again; one that succeeds wakes the next, so a burst of items wakes as many waiters;
* the loop is never blocked waiting, and no thread is spent per waiter or taken from the
  loop's default executor. The watcher is a client of its own (``status`` shows it, with the
  same pid), holding nothing while it sleeps.
"""

import collections
import os
import threading

from .errors import Empty, FifoClosed, Full, HandleClosed, ShmfifoError, Stopped


def _running_loop():
    # asyncio is imported by whoever awaits; importing it with shmfifo cost every process
    # (producers and consumers included) tens of milliseconds and megabytes at start-up.
    import asyncio
    return asyncio.get_running_loop()

__all__ = ["get", "put", "get_many", "put_many"]

# How long a watcher waits for a token before it looks at whether it is still wanted.
WATCH_SLICE = 1.0


class _Watcher:
    """Wakes the coroutines of one loop waiting for one direction of one handle.

    The wake-up pipe's read end belongs to the loop (closed when the watcher closes, in the
    loop's thread); its write end to the watcher thread, and is closed only once the watcher
    is closed and its thread has ended, so that no write can ever land in a descriptor that
    was closed and reused.
    """

    def __init__(self, handle, loop, for_put):
        self.handle = handle
        self.loop = loop
        self.for_put = for_put
        self.waiters = collections.deque()
        self.armed = threading.Event()
        self.closed = False
        self.error = None
        self._lock = threading.Lock()
        self._running = False
        # The watcher writes to this pipe (from C without the GIL, on the fast path) and the
        # loop reads it: one wake-up costs no Python code in the watcher.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        loop.add_reader(self._wake_r, self._on_wake)

    def arm(self):
        with self._lock:
            if not self._running and not self.closed:
                kind = "put" if self.for_put else "get"
                self._running = True
                threading.Thread(target=self._run, daemon=True,
                                 name=f"shmfifo-{kind}-watcher-{self.handle.name}").start()
        self.armed.set()

    def _run(self):
        handle = self.handle
        try:
            client = handle._client()
            while not self.closed and not self.loop.is_closed():
                if not self.armed.wait(WATCH_SLICE):
                    continue
                # Cleared before the wait: a coroutine that arms again while the loop
                # handles this wake-up is not forgotten.
                self.armed.clear()
                if self.closed:
                    break
                try:
                    ready = client.wait_ready(self.for_put, WATCH_SLICE, self._wake_w)
                except FifoClosed:
                    ready = False
                    self._notify()          # the waiters' own tries raise it for them
                if not ready and self.waiters:
                    self.armed.set()         # still wanted: wait again
        except (Stopped, HandleClosed):
            pass       # the handle is closing
        except ShmfifoError as error:       # no free entry for the watcher, say
            self.error = error              # raised once to a waiter; the next arm retries
            self._notify()
        finally:
            with self._lock:
                self._running = False
                if self.closed:
                    os.close(self._wake_w)

    def _notify(self):
        try:
            os.write(self._wake_w, b"\1")
        except (BlockingIOError, BrokenPipeError):
            pass                  # a wake-up is pending, or the loop's end is closed

    def _on_wake(self):
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        self.wake()

    def wake(self):
        """In the loop: let the first coroutine still waiting try again."""
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(True)
                return

    def close(self):
        """Stop the watcher and let every waiting coroutine try once more (and find the
        handle closed). From any thread; the loop's part runs in the loop's thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if not self._running:
                os.close(self._wake_w)
        self.armed.set()
        loop = self.loop
        if loop.is_closed():
            os.close(self._wake_r)       # nothing can wait on a closed loop
            return
        try:
            running = _running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._close_in_loop()
        else:
            loop.call_soon_threadsafe(self._close_in_loop)

    def _close_in_loop(self):
        try:
            self.loop.remove_reader(self._wake_r)
        finally:
            os.close(self._wake_r)
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(True)


class State:
    """A handle's watchers for one event loop."""

    def __init__(self, handle, loop):
        self.loop = loop
        self.getters = _Watcher(handle, loop, for_put=False)
        self.putters = _Watcher(handle, loop, for_put=True)

    def close(self):
        self.getters.close()
        self.putters.close()


def close_all(handle):
    """The handle is closing: every loop's watchers go, and their waiters wake."""
    states, handle._async = handle._async, {}
    for state in states.values():
        state.close()


def _watcher(handle, for_put):
    loop = _running_loop()
    if handle.closed:
        raise HandleClosed(handle.name)
    states = handle._async
    state = states.get(loop)
    if state is None:
        for other in [s for s in states.values() if s.loop.is_closed()]:
            del states[other.loop]
            other.close()
        state = states[loop] = State(handle, loop)
    return state.putters if for_put else state.getters


async def _wait(watcher, deadline):
    """Queue behind the other waiters until woken; False when the deadline passes."""
    if watcher.error is not None:
        error, watcher.error = watcher.error, None
        raise error
    loop = watcher.loop
    future = loop.create_future()
    watcher.waiters.append(future)
    watcher.arm()
    timer = None
    if deadline is not None:
        timer = loop.call_at(deadline, lambda: future.done() or future.set_result(False))
    try:
        return await future
    except BaseException:
        # Cancelled: if a wake-up was meant for us, hand it to the next waiter.
        if future.done() and not future.cancelled() and future.result():
            watcher.wake()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        try:
            watcher.waiters.remove(future)
        except ValueError:
            pass


def _deadline(timeout):
    if timeout is None:
        return None
    if timeout < 0:
        from .errors import UsageError
        raise UsageError("timeout", timeout, "use None, 0 or a positive number of seconds")
    return _running_loop().time() + timeout


async def _retry(handle, attempt, for_put, timeout, on_timeout):
    """Run the non-blocking ``attempt`` until it succeeds, waiting between tries. The
    watcher is set up only once a try has failed and the timeout allows waiting."""
    deadline = _deadline(timeout)
    watcher = None
    while True:
        try:
            try:
                result = attempt()
            except (Empty, Full) as missed:
                if isinstance(missed, Empty) and handle.state() != "running" \
                        and handle.qsize() == 0:
                    raise FifoClosed(handle.name) from None   # as a blocking get says
                if timeout == 0:
                    on_timeout()
                if watcher is None:
                    watcher = _watcher(handle, for_put)
                if not await _wait(watcher, deadline):
                    on_timeout()
                continue
        except ShmfifoError:
            if watcher is not None:
                watcher.wake()     # the others will find the same answer
            raise
        if watcher is not None and watcher.waiters:
            watcher.wake()         # there may be more: let the next waiter look
        return result


async def get(handle, timeout=None):
    def timed_out():
        raise Empty(f"FIFO {handle.name!r} is empty")
    return await _retry(handle, handle.get_nowait, False, timeout, timed_out)


async def get_many(handle, max_items, timeout=None):
    def timed_out():
        raise Empty(f"FIFO {handle.name!r} is empty")
    return await _retry(handle, lambda: handle.get_many(max_items, block=False), False,
                        timeout, timed_out)


async def put(handle, item, timeout=None):
    def timed_out():
        raise Full(f"FIFO {handle.name!r} is full ({handle.capacity} items)")
    return await _retry(handle, lambda: handle.put_nowait(item), True, timeout, timed_out)


async def put_many(handle, items, timeout=None):
    items = list(items)
    done = 0

    def attempt():
        nonlocal done
        try:
            handle.put_many(items[done:] if done else items, block=False)
        except Full as full:
            done += full.put
            raise
        done = len(items)

    def timed_out():
        error = Full(f"FIFO {handle.name!r} is full ({handle.capacity} items)")
        error.put = done
        raise error

    await _retry(handle, attempt, True, timeout, timed_out)
