"""sd_notify over $NOTIFY_SOCKET without libsystemd: READY, STATUS, WATCHDOG and STOPPING."""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        # Ping at half the deadline, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else None

    def send(self, **fields: str) -> None:
        if not self._address:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # The manager may have gone away; nothing useful to do about that here.
        with sock, contextlib.suppress(OSError):
            sock.sendto(message, self._address)
