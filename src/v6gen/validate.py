"""Checks for every value that comes from outside (Docker labels, config, kernel) before it can
reach a file, a hook input line or an `ip` argument."""

from __future__ import annotations

import re
from ipaddress import IPv6Address, IPv6Network

# Stricter than the kernel (which allows any bytes but '/', ':' and whitespace): these names end
# up in file names, INI comments and `ip -batch` lines, so only boring characters get through.
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,14}")

# Global unicast plus unique local: both have global scope, and NDP proxying only makes sense
# for scope-global addresses. 2001:db8::/32 is deliberately allowed (documentation and labs).
PROXYABLE = (IPv6Network("2000::/3"), IPv6Network("fc00::/7"))


def interface_name(value: str) -> str | None:
    """The reason a string is not an acceptable interface name, or None if it is."""
    if not _IFNAME.fullmatch(value):
        if len(value) > 15:
            return "longer than 15 characters"
        return "must be 1-15 of A-Z a-z 0-9 _ . + - and start with a letter or digit"
    return None


def parse_address(value: str) -> tuple[IPv6Address | None, str]:
    """(address, "") or (None, reason). Accepts only a bare, proxyable IPv6 unicast address."""
    if "/" in value:
        return None, "carries a prefix length; a single address is expected"
    if "%" in value:
        return None, "carries a zone id; only global addresses can be proxied"
    try:
        addr = IPv6Address(value)
    except ValueError:
        return None, "is not an IPv6 address"
    if addr.ipv4_mapped is not None:
        return None, "is an IPv4-mapped address"
    for kind, flag in (
        ("unspecified", addr.is_unspecified),
        ("loopback", addr.is_loopback),
        ("multicast", addr.is_multicast),
        ("link-local", addr.is_link_local),
        ("site-local (deprecated)", addr.is_site_local),
    ):
        if flag:
            article = "an" if kind[0] in "aeiou" else "a"
            return (
                None,
                f"is {article} {kind} address; only global unicast addresses can be proxied",
            )
    if not any(addr in net for net in PROXYABLE):
        return None, "is outside global unicast (2000::/3) and unique local (fc00::/7) space"
    return addr, ""


_PRINTABLE = re.compile(r"[^A-Za-z0-9_.:/@+=-]")


def display(value: str, limit: int = 64) -> str:
    """A container/service/network name made safe for a one-line comment in a generated file."""
    cleaned = _PRINTABLE.sub("?", value)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
