"""Docker Engine API through the docker SDK's low-level client: one GET /containers/json per
sync, never an inspect per container; for watch's fast path, one container's entry of that list
(and, for an address dockerd picked itself, its network) while dockerd starts it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from v6gen.detect import DOCKER, PODMAN, EngineChoice, engine_of
from v6gen.discover import (
    assigned_address,
    endpoints_from_list,
    networks_from_list,
    starting_endpoints,
)
from v6gen.errors import DockerError
from v6gen.model import DockerFacts, Endpoint

EVENT_FILTERS = {
    "type": ["container", "network"],
    "event": ["create", "start", "die", "destroy", "connect", "disconnect"],
}
# Podman's compat API sends `remove`, not `destroy`, and no `connect` when a container starts
# (tests/fixtures/podman), and its `event` filter can't be trusted: measured on past events,
# 4.3 matches nothing with it, 5.4 and 5.8 not `die` in Docker's list. Filtered by type only,
# every container and network event leads to a resync, which watch does for any event anyway.
PODMAN_EVENT_FILTERS = {"type": ["container", "network"]}


def event_filters(engine: str) -> dict[str, list[str]]:
    return EVENT_FILTERS if engine == DOCKER else PODMAN_EVENT_FILTERS


class DockerEvents:
    """A live /events stream; close() from another thread ends the iteration."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for event in self._stream:
                if isinstance(event, dict):
                    yield event
        except Exception as exc:  # the connection dropped: tell the caller by ending
            raise DockerError(
                f"Docker event stream lost: {exc}", "is dockerd restarting?"
            ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


def engine_name(about: Any) -> str:
    """Podman when GET /version lists the Podman Engine among its components (Podman's
    Docker-compatible API answers the same call), else Docker."""
    components = about.get("Components") if isinstance(about, dict) else None
    names = [c.get("Name") for c in components or () if isinstance(c, dict)]
    return PODMAN if any(isinstance(n, str) and n.startswith("Podman") for n in names) else DOCKER


class DockerAPI:
    def __init__(
        self, host: str | None = None, timeout: float = 10.0, choice: EngineChoice | None = None
    ) -> None:
        self._host = host
        self._timeout = timeout
        self._client: Any = None
        self._version: str | None = None
        # Without a choice (tests, the lab): the URL given, taken as the config's docker_host.
        self._choice = choice or EngineChoice(
            host,
            engine_of(host) if host else DOCKER,
            "docker_host in the config" if host else "the default socket",
        )
        self._engine: str | None = None  # what /version said

    def choice(self) -> EngineChoice:
        if self._engine is None or self._engine == self._choice.engine:
            return self._choice
        return replace(self._choice, engine=self._engine)

    def client(self) -> Any:
        """The low-level client, created on first use (importing the SDK costs ~100 ms)."""
        if self._client is None:
            import docker

            kwargs: dict[str, Any] = docker.utils.kwargs_from_env()
            if self._host:
                kwargs["base_url"] = self._host
            try:
                # One unversioned GET /version gives both the API version to speak (a pinned
                # one breaks on old or new dockerds) and the daemon's own, which the SDK's
                # version="auto" would ask for and throw away.
                # An explicit version: the probe itself must not ask the daemon.
                floor = docker.constants.MINIMUM_DOCKER_API_VERSION
                probe = docker.APIClient(version=floor, timeout=self._timeout, **kwargs)
                try:
                    about = probe.version(api_version=False)
                finally:
                    probe.close()
                version = about.get("Version") if isinstance(about, dict) else None
                self._version = version if isinstance(version, str) else None
                self._engine = engine_name(about)
                api = about.get("ApiVersion") if isinstance(about, dict) else None
                self._client = docker.APIClient(
                    version=api if isinstance(api, str) else "auto",
                    timeout=self._timeout,
                    **kwargs,
                )
            except Exception as exc:
                raise self._error(exc) from None
        return self._client

    def _error(self, exc: BaseException) -> DockerError:
        text = str(exc)
        where = self._host or "DOCKER_HOST or /var/run/docker.sock"
        engine = self.choice().engine
        daemon = "dockerd" if engine == DOCKER else "Podman"
        if "Permission denied" in text or isinstance(exc, PermissionError):
            hint = "run as root" + (
                " (or a member of the docker group)" if engine == DOCKER else ""
            )
        elif "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
            hint = f"{daemon} did not answer within {self._timeout:.0f} s (docker_timeout)"
        elif engine == DOCKER:
            hint = f"is dockerd running? v6gen asked {where}; set docker_host in the config"
        else:
            hint = (
                f"is Podman's API service running? v6gen asked {where}: "
                "`systemctl enable --now podman.socket`, or set docker_host in the config"
            )
        first = text.splitlines()[0] if text else type(exc).__name__
        return DockerError(f"cannot ask {engine} for its containers: {first[:300]}", hint)

    def endpoints(self) -> list[Endpoint]:
        try:
            listing = self.client().containers()  # GET /containers/json: running ones only
        except DockerError:
            raise
        except Exception as exc:  # the SDK raises requests', urllib3's and its own exceptions
            raise self._error(exc) from None
        if not isinstance(listing, list):
            raise DockerError("Docker returned something other than a container list", "")
        return endpoints_from_list(c for c in listing if isinstance(c, dict))

    def facts(self) -> DockerFacts:
        try:
            networks = self.client().networks()  # GET /networks
        except DockerError:
            raise
        except Exception as exc:
            raise self._error(exc) from None
        if not isinstance(networks, list):
            raise DockerError("Docker returned something other than a network list", "")
        return DockerFacts(self._version, networks_from_list(networks), self.choice().engine)

    def starting_endpoints(
        self, container_id: str, network: tuple[str, str] | None = None
    ) -> list[Endpoint]:
        """The IPv6 endpoints of one container dockerd is starting or runs ([] once it is gone):
        one GET /containers/json?all=1 filtered by its ID, which answers at once (an inspect
        waits until the container runs); plus GET /networks/ID when `network` (ID and name, from
        a `connect` event) gave it an address of dockerd's own choosing, not known before."""
        try:
            listing = self.client().containers(all=True, filters={"id": container_id})
            if not isinstance(listing, list):
                raise DockerError("Docker returned something other than a container list", "")
            entry = next(
                (c for c in listing if isinstance(c, dict) and c.get("Id") == container_id), None
            )
            if entry is None:
                return []
            found = starting_endpoints(entry)
            if network is None or any(e.network == network[1] for e in found):
                return found
            address = assigned_address(self.client().inspect_network(network[0]), container_id)
            return found if address is None else starting_endpoints(entry, {network[1]: address})
        except DockerError:
            raise
        except Exception as exc:  # the SDK raises requests', urllib3's and its own exceptions
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                return []  # the network is gone meanwhile, and with it the container's endpoint
            raise self._error(exc) from None

    def events(self) -> DockerEvents:
        """Subscribe to the events that can change the plan. Raises DockerError when dockerd is
        unreachable; the returned iterator ends (or raises) when the connection is lost."""
        try:
            client = self.client()  # asks /version first: the engine is known after it
            stream = client.events(decode=True, filters=event_filters(self.choice().engine))
        except DockerError:
            raise
        except Exception as exc:
            raise self._error(exc) from None
        return DockerEvents(stream)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
