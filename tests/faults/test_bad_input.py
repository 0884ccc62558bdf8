"""Hostile container metadata, end to end: Docker's JSON (from a replay socket) through the real
CLI, with the kernel and networkd faked and the run live, on a temporary root.

Every case starts from a synced host (container `good`, foreign files and kernel entries beside
v6gen's) and adds the bad input. A rejected input must leave every byte of the root, every kernel
entry and sysctl exactly as they were, print exactly the expected warning and exit as expected;
an accepted one (odd names) must change exactly the expected files, each exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any

import pytest

from v6gen.render import HEADER

from .inproc import FOREIGN, CliHost
from .replay import NETWORK, DockerReplay, body, container
from .tree import changed

COMPOSE = {"com.docker.compose.project": "app", "com.docker.compose.service": "good"}
GOOD = container("good", "2001:db8::a:1", labels=COMPOSE)
GOOD_ENTRY = ("uplink0", IPv6Address("2001:db8::a:1"))
UP_TO_DATE = "up to date: 1 address on 1 uplink, nothing changed\n"
DROPIN = "etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
RESTORE = "var/lib/v6gen/uplinks/uplink0.proxy"
GLOBAL_ONLY = "only global unicast addresses can be proxied"
OFF_LINK = (
    "not on-link for uplink0 (2001:db8::/64): NDP proxying only answers for addresses inside "
    "the uplink's prefix; route the network to this host or announce it by router "
    "advertisement instead"
)
IFNAME_RULE = "must be 1-15 of A-Z a-z 0-9 _ . + - and start with a letter or digit"
TEN_KB = 10 * 1024


def skipped(address: str, name: str, reason: str, network: str = NETWORK) -> str:
    return f"warning: skipped {address} ({name}, {network}): {reason}\n"


def bad_uplink(shown: str, reason: str) -> str:
    return skipped("2001:db8::a:9", "bad", f"label v6gen.uplink={shown!r} is invalid: {reason}")


def labelled(**labels: Any) -> dict[str, Any]:
    return container(
        "bad", "2001:db8::a:9", labels={k.replace("_", "."): v for k, v in labels.items()}
    )


@dataclass(frozen=True)
class Rejected:
    id: str
    bad: list[Any]
    stderr: str
    config: str = ""
    exit: int = 0


REJECTED = [
    # -- addresses --------------------------------------------------------------------------
    Rejected(
        "link-local",
        [container("bad", "fe80::1")],
        skipped("fe80::1", "bad", f"address is a link-local address; {GLOBAL_ONLY}"),
    ),
    Rejected(
        "multicast",
        [container("bad", "ff02::1:ff00:9")],
        skipped("ff02::1:ff00:9", "bad", f"address is a multicast address; {GLOBAL_ONLY}"),
    ),
    Rejected(
        "loopback",
        [container("bad", "::1")],
        skipped("::1", "bad", f"address is a loopback address; {GLOBAL_ONLY}"),
    ),
    Rejected(
        "unspecified",
        [container("bad", "::")],
        skipped("::", "bad", f"address is an unspecified address; {GLOBAL_ONLY}"),
    ),
    Rejected(
        "ipv4-mapped",
        [container("bad", "::ffff:192.0.2.9")],
        skipped("::ffff:192.0.2.9", "bad", "address is an IPv4-mapped address"),
    ),
    Rejected(
        "site-local",
        [container("bad", "fec0::9")],
        skipped("fec0::9", "bad", f"address is a site-local (deprecated) address; {GLOBAL_ONLY}"),
    ),
    Rejected(
        "outside-2000::/3",
        [container("bad", "100::9")],
        skipped(
            "100::9",
            "bad",
            "address is outside global unicast (2000::/3) and unique local (fc00::/7) space",
        ),
    ),
    Rejected(
        "zone-id",
        [container("bad", "2001:db8::a:9%uplink0")],
        skipped(
            "2001:db8::a:9?uplink0",
            "bad",
            "address carries a zone id; only global addresses can be proxied",
        ),
    ),
    Rejected(
        "prefix-length",
        [container("bad", "2001:db8::a:9/64")],
        skipped(
            "2001:db8::a:9/64",
            "bad",
            "address carries a prefix length; a single address is expected",
        ),
    ),
    Rejected(
        "not-an-address",
        [container("bad", "proxy-me")],
        skipped("proxy-me", "bad", "address is not an IPv6 address"),
    ),
    Rejected(
        "ipv4-address",
        [container("bad", "192.0.2.9")],
        skipped("192.0.2.9", "bad", "address is not an IPv6 address"),
    ),
    Rejected(
        "ini-injection-in-address",
        [container("bad", "2001:db8::a:9\n[Network]\nIPForward=no")],
        skipped("2001:db8::a:9??Network??IPForward=no", "bad", "address is not an IPv6 address"),
    ),
    Rejected(
        "10KB-address",
        [container("bad", "2001:db8::" + "a" * TEN_KB)],
        skipped("2001:db8::" + "a" * 32 + "...", "bad", "address is not an IPv6 address"),
    ),
    Rejected("address-not-a-string", [container("bad", 42)], ""),
    Rejected(
        "off-link-global",
        [container("bad", "2001:db8:1::9")],
        skipped("2001:db8:1::9", "bad", OFF_LINK),
    ),
    Rejected(
        "off-link-ula",
        [container("bad", "fd00::9")],
        skipped("fd00::9", "bad", OFF_LINK),
    ),
    # -- labels ------------------------------------------------------------------------------
    Rejected(
        "uplink-10KB",
        [labelled(v6gen_uplink="x" * TEN_KB)],
        bad_uplink("x" * 61 + "...", "longer than 15 characters"),
    ),
    Rejected(
        "uplink-newline-section",
        [labelled(v6gen_uplink="u0\n[Network]")],
        bad_uplink("u0??Network?", IFNAME_RULE),
    ),
    Rejected(
        "uplink-long-injection",
        [labelled(v6gen_uplink="uplink0\n[Network]\nIPForward=no")],
        bad_uplink("uplink0??Network??IPForward=no", "longer than 15 characters"),
    ),
    Rejected(
        "uplink-equals", [labelled(v6gen_uplink="uplink0=1")], bad_uplink("uplink0=1", IFNAME_RULE)
    ),
    Rejected(
        "uplink-trailing-space",
        [labelled(v6gen_uplink="uplink0 ")],
        bad_uplink("uplink0?", IFNAME_RULE),
    ),
    Rejected(
        "uplink-inner-space", [labelled(v6gen_uplink="up link")], bad_uplink("up?link", IFNAME_RULE)
    ),
    Rejected(
        "uplink-tab", [labelled(v6gen_uplink="uplink0\t")], bad_uplink("uplink0?", IFNAME_RULE)
    ),
    Rejected("uplink-slash", [labelled(v6gen_uplink="a/b")], bad_uplink("a/b", IFNAME_RULE)),
    Rejected(
        "uplink-dotdot",
        [labelled(v6gen_uplink="../uplink0")],
        bad_uplink("../uplink0", IFNAME_RULE),
    ),
    Rejected(
        "uplink-16-chars",
        [labelled(v6gen_uplink="uplink0123456789")],
        bad_uplink("uplink0123456789", "longer than 15 characters"),
    ),
    Rejected("uplink-empty", [labelled(v6gen_uplink="")], bad_uplink("", IFNAME_RULE)),
    Rejected(
        "uplink-not-configured",
        [labelled(v6gen_uplink="lan1")],
        skipped(
            "2001:db8::a:9",
            "bad",
            "label v6gen.uplink=lan1 names an interface that is not a configured uplink "
            "(allowed: uplink0); add it to 'uplinks' in the config",
        ),
    ),
    Rejected(
        "uplink-configured-but-missing",
        [labelled(v6gen_uplink="ghost0")],
        skipped("2001:db8::a:9", "bad", "uplink ghost0 cannot be managed")
        + "error: uplink ghost0 does not exist\nhint: check `ip link`, the 'uplinks'/"
        "'network_uplinks' config keys and v6gen.uplink labels\n",
        config="uplinks: [uplink0, ghost0]\n",
        exit=6,
    ),
    Rejected(
        "uplink-configured-but-unmanaged",
        [container("bad", "2001:db8:1::9", labels={"v6gen.uplink": "lan1"})],
        skipped("2001:db8:1::9", "bad", "uplink lan1 cannot be managed")
        + "error: uplink lan1 is not managed by systemd-networkd\nhint: give it a .network "
        "file (or name one in network_files) and check `networkctl status lan1`\n",
        config="uplinks: [uplink0, lan1]\n",
        exit=6,
    ),
    Rejected(
        "enable-injection",
        [labelled(v6gen_enable="true\n[Network]\nIPForward=no")],
        skipped(
            "2001:db8::a:9",
            "bad",
            "label v6gen.enable='true??Network??IPForward=no' is neither true nor false",
        ),
    ),
    Rejected(
        "enable-equals",
        [labelled(v6gen_enable="true=1")],
        skipped("2001:db8::a:9", "bad", "label v6gen.enable='true=1' is neither true nor false"),
    ),
    Rejected(
        "enable-10KB",
        [labelled(v6gen_enable="y" * TEN_KB)],
        skipped(
            "2001:db8::a:9",
            "bad",
            f"label v6gen.enable={'y' * 61 + '...'!r} is neither true nor false",
        ),
    ),
    # -- Docker's answer itself --------------------------------------------------------------
    Rejected("exited-container", [container("bad", "2001:db8::a:9", state="exited")], ""),
    Rejected("entries-not-objects", ["bad", None, 7, ["2001:db8::a:9"]], ""),
]


def _sync(host: CliHost, replay: DockerReplay, containers: list[Any]) -> tuple[int, str, str]:
    replay.containers = body(containers)
    r = host.run("sync")
    return r.code, r.out, r.err


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.id)
def test_rejected_input_changes_nothing(
    host: CliHost, replay: DockerReplay, case: Rejected
) -> None:
    if case.config:
        host.write("etc/v6gen/config.yaml", case.config)
    assert _sync(host, replay, [GOOD])[0] == 0
    before, kernel = host.snapshot(), host.kernel_view()
    assert kernel.proxy == FOREIGN | {GOOD_ENTRY}

    code, out, err = _sync(host, replay, [GOOD, *case.bad])

    assert (code, out, err) == (case.exit, UP_TO_DATE, case.stderr)
    assert changed(before, host.snapshot()) == {}
    assert host.kernel_view() == kernel


# -- Docker answers that are not a container list: exit 4, nothing changed --------------------


@dataclass(frozen=True)
class Unreadable:
    id: str
    answer: bytes
    stderr: str


UNREADABLE = [
    Unreadable(
        "object-not-list",
        b'{"message": "page not found"}',
        "error: Docker returned something other than a container list\n",
    ),
    Unreadable(
        "labels-not-a-mapping",
        body([{**GOOD, "Labels": ["v6gen.uplink=uplink0"]}]),
        "error: Docker's container list is malformed: Labels of good is a list, not an "
        "object\nhint: is something other than dockerd answering on docker_host?\n",
    ),
    Unreadable(
        "networks-not-a-mapping",
        body([{**GOOD, "NetworkSettings": {"Networks": ["app_net"]}}]),
        "error: Docker's container list is malformed: NetworkSettings.Networks of good is a "
        "list, not an object\nhint: is something other than dockerd answering on docker_host?\n",
    ),
    Unreadable(
        "network-entry-not-a-mapping",
        body([{**GOOD, "NetworkSettings": {"Networks": {"app_net": "2001:db8::a:1"}}}]),
        "error: Docker's container list is malformed: network app_net of good is a str, not "
        "an object\nhint: is something other than dockerd answering on docker_host?\n",
    ),
]


@pytest.mark.parametrize("case", UNREADABLE, ids=lambda c: c.id)
def test_unreadable_docker_answer_changes_nothing(
    host: CliHost, replay: DockerReplay, case: Unreadable
) -> None:
    assert _sync(host, replay, [GOOD])[0] == 0
    before, kernel = host.snapshot(), host.kernel_view()
    replay.containers = case.answer
    r = host.run("sync")
    assert (r.code, r.out, r.err) == (4, "", case.stderr)
    assert changed(before, host.snapshot()) == {}
    assert host.kernel_view() == kernel


def test_garbage_docker_answer_changes_nothing(host: CliHost, replay: DockerReplay) -> None:
    assert _sync(host, replay, [GOOD])[0] == 0
    before, kernel = host.snapshot(), host.kernel_view()
    replay.mode = "garbage"
    r = host.run("sync")
    assert r.code == 4 and r.out == ""
    assert r.err == (
        "error: cannot ask Docker for its containers: Expecting value: line 1 column 1 (char 0)\n"
        f"hint: is dockerd running? v6gen asked {replay.url}; set docker_host in the config\n"
    )
    assert changed(before, host.snapshot()) == {}
    assert host.kernel_view() == kernel


# -- accepted: odd names become one-line comments, nothing else ------------------------------


def dropin(*owners: tuple[str, str]) -> str:
    """The drop-in v6gen must write for these (address, owner description) pairs."""
    lines = [
        f"{HEADER}: `v6gen sync` rewrites this file and `v6gen clean` removes it; do not edit.",
        "# v6gen-uplink: uplink0",
        "# Proxies Neighbour Discovery on uplink0 for these container addresses:",
        *(f"#   {a}  {who}" for a, who in owners),
        "[Network]",
        "IPv6ProxyNDP=yes",
        "# networkd stops accepting router advertisements on a forwarding link unless told "
        "otherwise.",
        "IPv6AcceptRA=yes",
        *(f"IPv6ProxyNDPAddress={a}" for a in sorted({a for a, _ in owners}, key=IPv6Address)),
    ]
    return "\n".join(lines) + "\n"


def restore(*addresses: str) -> str:
    lines = [
        f"{HEADER}: proxy entries of uplink0, replayed with `ip -6 -batch` by the "
        "networkd-dispatcher hook"
    ]
    lines += [f"neigh replace proxy {a} dev uplink0" for a in addresses]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Accepted:
    id: str
    bad: dict[str, Any]
    owner: str  # the comment the drop-in must carry for 2001:db8::a:9
    summary: str  # the `add` line of the CLI's summary
    raw: list[str] = field(default_factory=list)  # strings that must appear in no file


NASTY = "evil\n[Network]\nIPForward=no"
ACCEPTED = [
    Accepted(
        "name-with-newline-section-equals",
        container(NASTY, "2001:db8::a:9"),
        "evil??Network??IPForward=no",
        "evil??Network??IPForward=no",
        [NASTY],
    ),
    Accepted(
        "10KB-name",
        container("n" * TEN_KB, "2001:db8::a:9"),
        "n" * 61 + "...",
        "n" * 61 + "...",
        ["n" * 65],
    ),
    Accepted(
        "network-name-with-section",
        container("bad", "2001:db8::a:9", network=NASTY),
        "bad",
        "bad",
        [NASTY],
    ),
    Accepted(
        "compose-labels-with-section",
        container(
            "bad",
            "2001:db8::a:9",
            labels={"com.docker.compose.project": NASTY, "com.docker.compose.service": "s\n=1"},
        ),
        "bad (compose evil??Network??IPForward=no/s?=1)",
        "bad (compose evil??Network??IPForward=no/s?=1)",
        [NASTY, "s\n=1"],
    ),
    Accepted(
        "10KB-compose-service",
        container(
            "bad",
            "2001:db8::a:9",
            labels={"com.docker.compose.project": "p", "com.docker.compose.service": "s" * TEN_KB},
        ),
        f"bad (compose p/{'s' * 61}...)",
        f"bad (compose p/{'s' * 61}...)",
        ["s" * 65],
    ),
    Accepted(
        "uplink-label-with-valid-name",
        container("bad", "2001:db8::a:9", labels={"v6gen.uplink": "uplink0"}),
        "bad",
        "bad",
    ),
    Accepted(
        "non-canonical-address",
        container("bad", "2001:0DB8:0000::A:0009"),
        "bad",
        "bad",
        ["2001:0DB8"],
    ),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_odd_names_are_proxied_as_one_line_comments(
    host: CliHost, replay: DockerReplay, case: Accepted
) -> None:
    assert _sync(host, replay, [GOOD])[0] == 0
    before, kernel = host.snapshot(), host.kernel_view()

    code, out, err = _sync(host, replay, [GOOD, case.bad])

    assert (code, err) == (0, "")
    assert out == (
        f"add    2001:db8::a:9 on uplink0  {case.summary}\n"
        f"write  /{DROPIN}\nwrite  /{RESTORE}\nreloaded systemd-networkd\n"
    )
    want = dropin(("2001:db8::a:1", "good (compose app/good)"), ("2001:db8::a:9", case.owner))
    assert host.read(DROPIN) == want
    assert host.read(RESTORE) == restore("2001:db8::a:1", "2001:db8::a:9")
    assert set(changed(before, host.snapshot())) == {DROPIN, RESTORE, "var/lib/v6gen/state.json"}
    for text in (host.read(DROPIN), host.read(RESTORE)):
        assert all(raw not in text for raw in case.raw)
        assert all(len(line) <= 120 for line in text.splitlines())
    after = host.kernel_view()
    assert after.proxy == kernel.proxy | {("uplink0", IPv6Address("2001:db8::a:9"))}
    assert (after.sysctls, after.reloads) == (kernel.sysctls, kernel.reloads + 1)


def test_same_address_on_two_containers_is_proxied_once(
    host: CliHost, replay: DockerReplay
) -> None:
    assert _sync(host, replay, [GOOD])[0] == 0
    before, kernel = host.snapshot(), host.kernel_view()
    twin = container("twin", "2001:db8::a:1", network="other_net")

    code, out, err = _sync(host, replay, [GOOD, twin])

    assert (code, out) == (0, f"write  /{DROPIN}\nreloaded systemd-networkd\n")
    assert err == "warning: 2001:db8::a:1 is used by both good and twin: proxied once\n"
    # Only the comment naming the owners changes; the entry is neither re-added nor doubled.
    assert host.read(DROPIN) == dropin(("2001:db8::a:1", "good (compose app/good), twin"))
    assert set(changed(before, host.snapshot())) == {DROPIN}
    after = host.kernel_view()
    assert (after.proxy, after.sysctls) == (kernel.proxy, kernel.sysctls)


def test_address_someone_else_proxies_is_never_claimed(host: CliHost, replay: DockerReplay) -> None:
    """2001:db8::f00 is in the kernel already (an admin's entry). A container that gets the same
    address is proxied in the drop-in, but the kernel entry stays the admin's: when the container
    goes, the entry stays."""
    assert _sync(host, replay, [GOOD])[0] == 0
    squatter = container("squatter", "2001:db8::f00")
    code, out, err = _sync(host, replay, [GOOD, squatter])
    assert (code, err) == (0, "")
    assert "add " not in out  # not added: it is there already
    assert '"2001:db8::f00"' not in host.read("var/lib/v6gen/state.json")
    code, out, err = _sync(host, replay, [GOOD])
    assert (code, err) == (0, "")
    assert "remove" not in out
    assert host.kernel_view().proxy == FOREIGN | {GOOD_ENTRY}
