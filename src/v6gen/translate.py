"""Stable container addresses across renumbering: 1:1 prefix translation, opt-in per Docker
network (label `v6gen.translate=true`). The containers keep their addresses on the network's
own subnet (a ULA, or an old prefix); the LAN reaches each at the same suffix on a prefix the
uplink has now, which v6gen proxies and reports, and the nftables table `ip6 v6gen` rewrites
the prefix both ways (`dnat/snat ip6 prefix to`). When the uplink's prefix changes, the next
sync (watch: at once, adapters/addrmonitor.py) moves the proxied addresses and the rules; a
deprecated prefix keeps its translated addresses, inward only, until it expires.

Why stateful prefix NAT and not RFC 6296 NPTv6 (ip6tables SNPT/DNPT): both held in the lab
wherever Docker's and netavark's firewalls let anything in, with the same reach (README,
"Stable addresses across renumbering"); prefix NAT keeps the interface identifier, so the
address the LAN uses is the container's own suffix on the new prefix, where NPTv6 changes one
16-bit word of it to stay checksum-neutral; it is native nftables (NPTv6 exists only as an
ip6tables target), and its conntrack state is what Docker's and netavark's own rules accept
replies by anyway. Pure, but for the adapter that loads the table.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from v6gen.model import DockerNetwork, LinkFacts, Plan, Translation
from v6gen.prefixes import moved_subnet

LABEL = "v6gen.translate"
_TRUE = frozenset({"true", "yes", "1", "on"})


def wanted(network: DockerNetwork | None) -> bool:
    return network is not None and network.labels.get(LABEL, "").strip().lower() in _TRUE


def translation(
    network: DockerNetwork, address: IPv6Address, uplink: str, link: LinkFacts
) -> Translation | str:
    """The translation of the network subnet that holds `address` onto the uplink's prefix
    (one whose addresses are not deprecated, the lowest, so every sync picks the same), or why
    there is none. Deprecated prefixes keep their own translations meanwhile (still_valid)."""
    inner = next((s for s in network.subnets if address in s), None)
    if inner is None:
        return f"label {LABEL}: the address is in none of the network's subnets"
    fresh = [p for p in link.prefixes if p not in link.deprecated]
    outer = moved_subnet(inner, fresh) or moved_subnet(inner, link.deprecated)
    if outer is None:
        have = ", ".join(map(str, link.prefixes)) or "no global prefix"
        return f"label {LABEL}: no prefix of {uplink} can hold {inner} ({have})"
    return Translation(network.name, uplink, inner, outer)


def still_valid(t: Translation, link: LinkFacts) -> list[Translation]:
    """The same subnet on each deprecated prefix of the uplink that can hold it, other than
    `t`'s: as with direct proxying, a deprecated prefix keeps reaching the container until its
    valid lifetime ends, so peers that still use the old address are not cut off."""
    found = []
    for prefix in link.deprecated:
        outer = moved_subnet(t.inner, [prefix])
        if outer is not None and outer != t.outer:
            found.append(Translation(t.network, t.uplink, t.inner, outer, primary=False))
    return found


def ruleset(plan: Plan) -> str:
    """The `nft -f` input that makes the kernel's table what the plan says (none: deleted)."""
    from v6gen.render import template

    return template("translate.nft.j2", translations=plan.translations)


def lines(plan: Plan) -> list[str]:
    """status and sync -v: where the LAN reaches each translated network."""
    return [
        f"network {t.network}: {t.inner} reached from the LAN at {t.outer} on {t.uplink} "
        + ("(prefix translation)" if t.primary else "(deprecated prefix, until it expires)")
        for t in plan.translations
    ]
