"""Never claim an address in use (issue 23, part 3), and announce the ones v6gen keeps (issue 22,
part 1).

Before v6gen keeps an address it does not own yet, it asks the uplink as Duplicate Address
Detection does (one solicitation from ::, ndp.dad_probe) and listens PROBE_WAIT seconds. An
address someone else answered for is "held": recorded with the holder's MAC in
/var/lib/v6gen/claims.json, where discover hands it to the plan as a LAN neighbour, so no
drop-in, restore line or entry gets it, and every later sync probes it again (the holder may
be gone). The first holder keeps an address: it answers (its own kernel does, for a proxy
entry too) and probes nothing, the newcomer hears that and steps back; two that claim at the
same moment hear each other's kernel and both step back.

sync probes before it claims. watch's fast path claims optimistically (the entry first, so a
LAN host that asks at once is answered; the kernel's proxied answers carry Override=0, so they
take nothing from a LAN host that already knows the real holder) and withdraws at once when the
probe is answered. An address that passed its probe is announced with one unsolicited NA with
Override (RFC 4861 §7.2.6), so a LAN host whose entry still points at the host the container
left, or is INCOMPLETE, moves to this host now rather than after its entry goes stale."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address
from typing import Protocol

from v6gen import fsutil, validate
from v6gen.model import HostFacts
from v6gen.paths import Paths
from v6gen.ports import ProxyKey

# A LAN host answers a DAD probe within a millisecond (measured in the lab: 0.05-0.3 ms for a
# host's own address, 0.05-0.8 ms for a proxying v6gen host with proxy_delay 0), a busy one in
# a few. 100 ms is a hundred times that, and leaves half of the 200 ms a moved container may
# take to be reached. What it can't hear: a holder that answers later, a proxy whose
# proxy_delay is not 0 (the kernel's default delays each answer by up to 0.8 s; v6gen sets 0)
# or a Wi-Fi client asleep through a DTIM interval.
PROBE_WAIT = 0.1
FORMAT = 1


class Prober(Protocol):
    def probe(
        self, uplink: str, addresses: Collection[IPv6Address], wait: float
    ) -> dict[IPv6Address, str]:
        """address -> MAC of whoever else answered a DAD probe for it within `wait` s."""
        ...

    def announce(self, uplink: str, addresses: Iterable[IPv6Address], *, override: bool) -> None:
        """One unsolicited NA per address from the uplink's link-local address (<= 100/s)."""
        ...


@dataclass(frozen=True)
class Held:
    """Addresses someone else answers for: (uplink, address) -> the holder's MAC."""

    by: Mapping[ProxyKey, str] = field(default_factory=dict)

    def on(self, uplink: str) -> dict[IPv6Address, str]:
        return {a: mac for (u, a), mac in self.by.items() if u == uplink}

    def to_json(self) -> str:
        held: dict[str, dict[str, str]] = {}
        for (uplink, address), mac in sorted(self.by.items()):
            held.setdefault(uplink, {})[str(address)] = mac
        return json.dumps({"format": FORMAT, "generated_by": "v6gen", "held": held}, indent=2)


def load(paths: Paths) -> Held:
    """What the last probes found; a missing or damaged file holds nothing (the next probe
    asks again)."""
    try:
        doc = json.loads(paths.claims_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Held()
    found: dict[ProxyKey, str] = {}
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        for uplink, held in dict(doc.get("held", {})).items():
            if validate.interface_name(str(uplink)) or not isinstance(held, dict):
                continue
            for text, mac in held.items():
                address, _ = validate.parse_address(str(text))
                if address is not None:
                    found[(str(uplink), address)] = validate.display(str(mac), 17)
    return Held(found)


def save(paths: Paths, held: Held) -> None:
    if held.by:
        fsutil.write_atomic(paths.claims_file, held.to_json() + "\n")
    else:
        paths.claims_file.unlink(missing_ok=True)


def with_held(facts: HostFacts, held: Held) -> HostFacts:
    """The facts as the plan sees them: a held address is a LAN neighbour that answers for it
    (plan._in_use), so it is left out with the holder named, exactly like one the neighbour
    table shows."""
    links = {
        name: replace(link, neighbours={**held.on(name), **link.neighbours})
        for name, link in facts.links.items()
    }
    return replace(facts, links=links)


def probe(prober: Prober, keys: Iterable[ProxyKey]) -> dict[ProxyKey, str]:
    """One probe round over every uplink: (uplink, address) -> holder, for those answered."""
    by_uplink: dict[str, set[IPv6Address]] = {}
    for uplink, address in keys:
        by_uplink.setdefault(uplink, set()).add(address)
    found: dict[ProxyKey, str] = {}
    for uplink, addresses in sorted(by_uplink.items()):
        for address, mac in prober.probe(uplink, addresses, PROBE_WAIT).items():
            found[(uplink, address)] = mac
    return found


def settle(
    paths: Paths,
    asked: Iterable[ProxyKey],
    found: Mapping[ProxyKey, str],
    wanted: Collection[ProxyKey] | None = None,
) -> Held:
    """The held record after a probe round that asked `asked`: the answered are held, the
    rest are free again; of the others, only those a container still asks for (`wanted`, when
    known) are kept, so the record does not grow."""
    asked = set(asked)
    old = load(paths)
    held = {k: v for k, v in old.by.items() if k not in asked and (wanted is None or k in wanted)}
    held.update(found)
    new = Held(held)
    if new != old:
        save(paths, new)
    return new


def announce(prober: Prober, keys: Iterable[ProxyKey]) -> None:
    by_uplink: dict[str, list[IPv6Address]] = {}
    for uplink, address in sorted(keys):
        by_uplink.setdefault(uplink, []).append(address)
    for uplink, addresses in by_uplink.items():
        prober.announce(uplink, addresses, override=True)


def withdrawn_lines(found: Mapping[ProxyKey, str]) -> list[str]:
    """watch's word for addresses its fast path proxied and took back after the probe."""
    return [
        f"warning: withdrew {address} on {uplink}: {mac} answers for it on the LAN; give the "
        "container another address (v6gen proxies it again once nobody answers)"
        for (uplink, address), mac in sorted(found.items())
    ]
