"""A Docker Engine API stand-in on a unix socket that replays bodies captured from a real
dockerd (tests/fixtures/docker) and counts the requests it gets."""

from __future__ import annotations

import socketserver
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

FIXTURES = Path(__file__).parent / "fixtures" / "docker"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # dockerd listens with the kernel's somaxconn (Go's net.Listen); socketserver's default of 5
    # refused connections when a dozen concurrent syncs and a watch connected at once under load.
    request_queue_size = 128
    bodies: dict[str, bytes]
    requests: Counter[str]
    hanging = False
    released: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        # The SDK prefixes /vX.Y once it knows the version; the replay ignores it.
        route = "/" + path.split("/", 2)[2] if path.startswith("/v1.") else path
        self.server.requests[route] += 1
        if self.server.hanging:
            self.server.released.wait()  # until the replay shuts down: a daemon that never answers
        body = self.server.bodies.get(route)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *_: Any) -> None:
        pass


# Captured from the same dockerd 20.10 (its own network names: a container's network missing
# from the list is judged as on a default bridge, as for a network created meanwhile).
NETWORKS = (FIXTURES / "firewall/bookworm-20.10.24/networks.json").read_bytes()


class DockerReplay:
    handler: type[_Handler] = _Handler

    def __init__(self, socket_path: Path, containers: bytes | str = "seed_running.json") -> None:
        self.socket_path = socket_path
        if isinstance(containers, str):
            containers = (FIXTURES / containers).read_bytes()
        self._server = _Server(str(socket_path), self.handler)
        self._server.bodies = {
            "/version": (FIXTURES / "version.json").read_bytes(),
            "/containers/json": containers,
            "/networks": NETWORKS,
        }
        self._server.requests = Counter()
        self._server.released = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def requests(self) -> Counter[str]:
        return self._server.requests

    def hang(self) -> None:
        """From now on, take requests and never answer them."""
        self._server.hanging = True

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.released.set()
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)
