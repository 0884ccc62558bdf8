"""A minimal Docker Engine API client over a unix socket.

The harness talks to the lab's dockerd from outside its mount namespace (through
/proc/<pid>/root/run/docker.sock) and needs raw response bodies for the fixtures, so it uses
plain HTTP rather than the docker SDK, which v6gen itself uses.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


class DockerAPIError(RuntimeError):
    pass


class DockerAPI:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> tuple[int, bytes]:
        conn = _UnixConnection(self.socket_path, timeout)
        try:
            headers = {"Content-Type": content_type} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        status, out = self.request(method, path, data, timeout=timeout)
        if status >= 400:
            raise DockerAPIError(f"{method} {path}: {status} {out.decode(errors='replace')}")
        return out

    def get(self, path: str, timeout: float = 30) -> bytes:
        return self.call("GET", path, timeout=timeout)

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def ping(self) -> bool:
        try:
            return self.request("GET", "/_ping", timeout=2)[0] == 200
        except OSError:
            return False

    def import_image(self, tarball: Path, image: str) -> None:
        repo, _, tag = image.partition(":")
        status, out = self.request(
            "POST",
            f"/images/create?fromSrc=-&repo={repo}&tag={tag or 'latest'}",
            tarball.read_bytes(),
            content_type="application/x-tar",
            timeout=60,
        )
        if status >= 400 or b'"error"' in out:
            raise DockerAPIError(f"image import failed: {status} {out.decode(errors='replace')}")

    def remove_all_containers(self) -> None:
        """SIGKILL first: Podman's force-remove (unlike dockerd's) stops a running container
        with its 10 s stop timeout, which busybox `sleep` as PID 1 (it ignores SIGTERM) uses up."""
        for c in self.get_json("/containers/json?all=1"):
            if c.get("State") == "running":
                self.request("POST", f"/containers/{c['Id']}/kill", None)
            self.call("DELETE", f"/containers/{c['Id']}?force=1&v=1")
