"""Which container engine v6gen asks, when the config does not say: Docker or rootful Podman.

One engine at a time. Docker wins wherever it is installed, even while its socket is gone (a
stopped docker.socket): falling back to Podman then would have the next sync drop every entry of
Docker's containers. Podman is followed on its own only on a host without Docker. Rootless
Podman sockets are noted, never followed: their containers live in the user's own network
namespace, behind slirp4netns or pasta, with no address on the host to proxy.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from v6gen.paths import Paths

DOCKER = "Docker"
PODMAN = "Podman"
# /var/run is a symlink to /run on Debian; both are looked at for hosts where it is not.
DOCKER_SOCKETS = ("run/docker.sock", "var/run/docker.sock")
# docker.io installs dockerd in /usr/sbin, docker-ce in /usr/bin.
DOCKERD = ("usr/sbin/dockerd", "usr/bin/dockerd")
PODMAN_SOCKET = "run/podman/podman.sock"
NOTHING_FOUND = "no engine's socket found"


@dataclass(frozen=True)
class EngineChoice:
    host: str | None  # the API's URL; None: the docker SDK's default (/var/run/docker.sock)
    engine: str  # DOCKER or PODMAN: what is expected there; the daemon's /version says for sure
    why: str  # how it was chosen, for -v, status and doctor
    unfollowed: tuple[str, ...] = ()  # "Podman at unix:///run/podman/podman.sock", ...
    rootless: tuple[Path, ...] = ()  # rootless Podman sockets, as host paths
    env: str | None = None  # DOCKER_HOST, which the docker SDK reads itself when host is None

    @property
    def where(self) -> str:
        return self.host or self.env or f"unix:///{DOCKER_SOCKETS[1]}"

    def describe(self) -> str:
        return f"{self.engine} at {self.where} ({self.why})"


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def _url(paths: Paths, path: Path) -> str:
    return f"unix://{paths.host_path(path)}"


def rootless_sockets(paths: Paths) -> tuple[Path, ...]:
    found = sorted(p for p in paths.root.glob("run/user/*/podman/podman.sock") if _is_socket(p))
    return tuple(paths.host_path(p) for p in found)


def is_rootless(url: str) -> bool:
    """A rootless Podman's socket: /run/user/UID/podman/podman.sock."""
    parts = url.removeprefix("unix://").split("/")
    return parts[1:3] == ["run", "user"] and "podman" in parts[-1]


def engine_of(host: str) -> str:
    """A configured URL's engine, by its socket's name (the daemon's /version says for sure)."""
    return PODMAN if "podman" in host.rsplit("/", 1)[-1] else DOCKER


def choose(configured: str | None, environ: Mapping[str, str], paths: Paths) -> EngineChoice:
    """The engine v6gen asks: docker_host, else DOCKER_HOST, else the host's own sockets."""
    rootless = rootless_sockets(paths)
    docker_socket = next(
        (paths.root / s for s in DOCKER_SOCKETS if _is_socket(paths.root / s)), None
    )
    podman_socket = paths.root / PODMAN_SOCKET
    podman = _is_socket(podman_socket)
    if configured:
        return EngineChoice(
            configured, engine_of(configured), "docker_host in the config", rootless=rootless
        )
    if environ.get("DOCKER_HOST"):
        env = environ["DOCKER_HOST"]
        return EngineChoice(None, engine_of(env), "DOCKER_HOST", rootless=rootless, env=env)
    podman_url = _url(paths, podman_socket)
    if docker_socket is not None or any((paths.root / d).exists() for d in DOCKERD):
        why = "Docker's socket" if docker_socket is not None else "dockerd is installed"
        also = (f"{PODMAN} at {podman_url}",) if podman else ()
        url = _url(paths, docker_socket) if docker_socket is not None else None
        return EngineChoice(url, DOCKER, why, also, rootless)
    if podman:
        return EngineChoice(podman_url, PODMAN, "found its socket; no Docker here", (), rootless)
    return EngineChoice(None, DOCKER, NOTHING_FOUND, (), rootless)
