"""Telling a service manager how the daemon is doing: systemd's notification protocol.

Under a unit with ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; the daemon then sends::

    READY=1                       once the FIFO is usable (after any adoption and recovery)
    STATUS=12/32 items, 2 producers, 1 consumer, 0 recoveries
    WATCHDOG=1                    every half WATCHDOG_USEC, from the loop that watches clients
    STOPPING=1                    when a stop begins (SIGTERM, SIGINT, SIGHUP)

The protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket named by
``NOTIFY_SOCKET`` (``@`` first: the abstract namespace). systemd documents that protocol,
not its C wrapper, as the stable interface, and recommends a few lines of one's own over
linking libsystemd for it; so this module is those lines, and shmfifo needs no binding.
Without ``NOTIFY_SOCKET`` every call does nothing.
"""

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    """The sending side of sd_notify, configured from the environment."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.address = _address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = None
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process the watchdog is meant for; a child that inherited
        # the variable is not it.
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_s = int(usec) / 1e6 or None
            except ValueError:
                self.watchdog_s = None
        self.error = None         # the last failure to send, for the caller to log once
        self._sock = None

    @property
    def enabled(self):
        return self.address is not None

    def send(self, **fields):
        """Send ``KEY=value`` lines (``ready=1`` becomes ``READY=1``); True if sent."""
        if self.address is None:
            return False
        text = "\n".join(f"{key.upper()}={_one_line(value)}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode("utf-8", "replace"), self.address)
        except OSError as error:
            self.error = error
            return False
        self.error = None
        return True

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value):
    if not value:
        return None
    if value[0] == "@":
        return "\0" + value[1:]
    if value[0] == "/":
        return value
    return None         # vsock: and other transports are not spoken here


def _one_line(value):
    return " ".join(str(value).split())
