"""Whatever a container's owner puts in names, labels and addresses, the files v6gen renders
hold only v6gen's keys and only well-formed proxy entries for their own uplink."""

from __future__ import annotations

import configparser
import re
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from hypothesis import event, given, settings
from hypothesis import strategies as st

from v6gen.config import Config
from v6gen.model import Endpoint, HostFacts, LinkFacts
from v6gen.paths import Paths
from v6gen.plan import make_plan
from v6gen.render import render

T = TypeVar("T")
# Typed loosely: the keyword's Literal type differs between hypothesis releases.
SURROGATES: Any = ("Cs",)
ROOT = Path("/target")
KEYS = {"ipv6proxyndp", "ipv6proxyndpaddress", "ipv6acceptra", "ipv6forwarding"}
RESTORE_LINE = re.compile(r"neigh replace proxy [0-9a-f:]+ dev (uplink0|uplink1)")
NETWORK_LINE = re.compile(
    r"\[Network\]|IPv6ProxyNDP=yes|IPv6AcceptRA=yes|IPv6Forwarding=yes"
    r"|IPv6ProxyNDPAddress=(?P<address>[0-9a-f:]+)"
)

nasty = st.text(
    alphabet=st.characters(blacklist_categories=SURROGATES), max_size=40
) | st.sampled_from(
    [
        "\n[Network]\nDHCP=yes",
        "eth0\nIPv6ProxyNDP=no",
        "=",
        "uplink1",
        "uplink0",
        "true",
        "false",
        "a" * 10_000,
        "$(reboot)",
        "../../etc/passwd",
    ]
)


def mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Four in five draws from `good`, so many examples get far enough to render entries."""
    return st.integers(0, 4).flatmap(lambda i: bad if i == 0 else good)


addresses = st.one_of(
    st.ip_addresses(v=6).map(str),
    st.sampled_from(
        [
            "2001:db8::a:71a5",
            "2001:db8:1::5",
            "fe80::1%eth0",
            "2001:db8::1/64",
            "::ffff:1.2.3.4",
            "2001:db8::5\nIPForward=no",
        ]
    ),
    nasty,
)
endpoint = st.builds(
    Endpoint,
    container_id=nasty,
    container=nasty,
    network=nasty,
    address=mostly(st.integers(1, 40).map(lambda n: f"2001:db8::{n:x}"), addresses),
    project=st.none() | nasty,
    service=st.none() | nasty,
    # Mostly well-behaved labels, so that many examples proxy several addresses.
    enable_label=mostly(st.sampled_from([None, "true", "yes"]), nasty),
    uplink_label=mostly(st.sampled_from([None, "uplink0", "uplink1"]), nasty),
)


def _facts() -> HostFacts:
    def link(name: str, prefix: str) -> LinkFacts:
        nf = PurePosixPath(f"/etc/systemd/network/10-{name}.network")
        return LinkFacts(name, True, (IPv6Network(prefix),), nf, managed=True)

    return HostFacts(
        "uplink0",
        {"uplink0": link("uplink0", "2001:db8::/64"), "uplink1": link("uplink1", "::/0")},
        None,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(endpoint, max_size=12))
def test_rendered_files_hold_only_our_keys_and_entries(endpoints: list[Endpoint]) -> None:
    plan = make_plan(endpoints, Config(uplinks=("uplink0", "uplink1")), _facts())
    for path, content in render(plan, Paths(ROOT)).items():
        body = [line for line in content.splitlines() if line and not line.startswith("#")]
        assert all(line.isprintable() for line in content.splitlines())
        if path.suffix == ".proxy":
            uplink = path.stem
            for line in body:
                m = RESTORE_LINE.fullmatch(line)
                assert m is not None and m.group(1) == uplink, line
        elif "sysctl.d" in path.parts:
            sysctl = (
                r"net/ipv6/(neigh/uplink[01]/proxy_delay = 0|conf/(all|uplink[01])/forwarding = 1"
                r"|conf/all/proxy_ndp = 1)"
            )
            assert all(re.fullmatch(sysctl, b) for b in body), body
        else:
            for line in body:
                m = NETWORK_LINE.fullmatch(line)
                assert m is not None, line
                if m["address"]:
                    assert str(IPv6Address(m["address"])) == m["address"]  # canonical
            parser = configparser.ConfigParser(strict=False, interpolation=None)
            parser.read_string(content)
            assert parser.sections() == ["Network"]
            assert set(parser["Network"]) <= KEYS
    event(f"proxied addresses: {min(3, len(plan.wanted_entries()))}+")
