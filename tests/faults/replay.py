"""A scriptable Docker Engine API stand-in on a unix socket, for the fault tests.

Like tests/dockerreplay.py it answers GET /version with a body captured from a real dockerd, but
its container list can be swapped while it runs, it can misbehave on purpose (hang, close the
connection at once, answer garbage), it streams /events (so a `v6gen watch` can follow it), and
it records when each /containers/json request was in flight, so a test can prove that syncs never
overlapped.
"""

from __future__ import annotations

import hashlib
import json
import socketserver
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "docker"
VERSION = (FIXTURES / "version.json").read_bytes()
# GET /networks as the same dockerd 20.10 answers it (see tests/dockerreplay.py).
NETWORKS = (FIXTURES / "firewall/bookworm-20.10.24/networks.json").read_bytes()
NETWORK = "app_net"


def container(
    name: str,
    address: Any,
    *,
    network: str = NETWORK,
    labels: Mapping[str, Any] | None = None,
    state: str = "running",
    names: Any = None,
) -> dict[str, Any]:
    """One entry of GET /containers/json as dockerd 20.10 writes it (only the fields v6gen
    reads, plus a few it must ignore)."""
    return {
        "Id": hashlib.sha256(name.encode()).hexdigest(),
        "Names": [f"/{name}"] if names is None else names,
        "Image": "v6gen-busybox:lab",
        "Labels": dict(labels or {}),
        "State": state,
        "NetworkSettings": {
            "Networks": {
                network: {
                    "IPAddress": "172.30.0.2",
                    "GlobalIPv6Address": address,
                    "GlobalIPv6PrefixLen": 64,
                }
            }
        },
    }


def body(containers: Iterable[Mapping[str, Any]]) -> bytes:
    return json.dumps(list(containers)).encode()


@dataclass(frozen=True)
class Served:
    """One /containers/json request: when it arrived and left, and which body it got."""

    start: float
    end: float
    body: bytes


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # dockerd listens with the kernel's somaxconn (Go's net.Listen); socketserver's default of 5
    # refused connections when a dozen concurrent syncs and a watch connected at once under load.
    request_queue_size = 128
    block_on_close = False
    owner: DockerReplay

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that was killed mid-request (the point of some tests) is no error


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *_: Any) -> None:
        pass


class DockerReplay:
    """Modes: "ok"; "hang" (never answer /containers/json: the request is held until the
    replay shuts down, so only the client's own timeout, or its death, ends the wait); "close"
    (accept, then close the connection without a word); "garbage" (a 200 whose body is not
    JSON). With `together` = n, each /containers/json request is held until n have been in
    flight at once (then all go; at most `together_wait` s), so overlap, where there can be
    some, shows whatever the clients' speed."""

    def __init__(self, socket_path: Path, containers: bytes = b"[]") -> None:
        self.socket_path = socket_path
        self.containers = containers
        self.schedule: list[bytes] = []  # when set, answers in turn instead of `containers`
        self.mode = "ok"
        self.together = 0
        self.together_wait = 30.0
        self.served: list[Served] = []
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified as requests come in
        self._in_flight = 0
        self.max_in_flight = 0
        self._stopping = threading.Event()
        self._events: list[bytes] = []
        self._events_cond = threading.Condition()
        self._server = _Server(str(socket_path), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def emit(self, event: Mapping[str, Any]) -> None:
        """Send one event to every open /events stream."""
        with self._events_cond:
            self._events.append(json.dumps(dict(event)).encode() + b"\n")
            self._events_cond.notify_all()

    def _handle(self, h: _Handler) -> None:
        path = h.path.split("?", 1)[0]
        # The SDK prefixes /vX.Y once it knows the API version; the replay ignores it.
        route = "/" + path.split("/", 2)[2] if path.startswith("/v1.") else path
        with self._lock:
            self.counts[route] = self.counts.get(route, 0) + 1
        if self.mode == "close":
            h.close_connection = True
            h.connection.close()
            return
        if route == "/version":
            self._send(h, VERSION)
        elif route == "/containers/json":
            self._containers(h)
        elif route == "/events":
            self._stream_events(h)
        elif route == "/networks":
            self._send(h, NETWORKS)
        else:
            h.send_error(404)

    def _containers(self, h: _Handler) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._arrived.notify_all()
            self._arrived.wait_for(
                lambda: self.max_in_flight >= self.together or self._stopping.is_set(),
                self.together_wait,
            )
        start = time.monotonic()
        with self._lock:
            if self.schedule:  # round robin: request n gets schedule[n % len]
                answer = self.schedule[len(self.served) % len(self.schedule)]
                self.served.append(Served(start, start, answer))  # a placeholder, see below
                slot = len(self.served) - 1
            else:
                answer, slot = self.containers, -1
        try:
            if self.mode == "hang":
                self._stopping.wait()
            if self.mode == "garbage":
                answer = b"<html>502 Bad Gateway</html>"
            # A small, fixed think time: without the lock, two syncs would overlap here.
            time.sleep(0.01)
        finally:
            with self._lock:
                self._in_flight -= 1
                if slot >= 0:
                    self.served[slot] = Served(start, time.monotonic(), answer)
                else:
                    self.served.append(Served(start, time.monotonic(), answer))
        if not self._stopping.is_set():
            self._send(h, answer)

    @staticmethod
    def _send(h: _Handler, data: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _stream_events(self, h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.flush()
        sent = len(self._events)
        h.close_connection = True
        try:
            while not self._stopping.is_set():
                with self._events_cond:
                    if len(self._events) <= sent:
                        self._events_cond.wait(timeout=0.5)  # woken by emit() and __exit__
                    fresh, sent = self._events[sent:], len(self._events)
                for chunk in fresh:
                    h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                h.wfile.flush()
        except OSError:
            return  # the watcher went away

    def __enter__(self) -> DockerReplay:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        with self._arrived:
            self._arrived.notify_all()
        with self._events_cond:
            self._events_cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)
