"""The lab's addresses and the configuration files it writes for them.

Each uplink is a veth whose other end sits in its own LAN neighbour namespace. 2001:db8::/32 is
the documentation prefix, so nothing here can collide with a real network.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Uplink:
    name: str  # interface in the host namespace
    prefix: str  # the LAN's /64, e.g. "2001:db8::"
    gateway: bool  # whether the host's IPv6 default route points at this LAN's neighbour

    lan_if = "eth0"  # the neighbour's end of the veth

    @property
    def host_addr(self) -> str:
        return f"{self.prefix}1"

    @property
    def lan_addr(self) -> str:
        return f"{self.prefix}100"

    @property
    def network_file(self) -> str:
        return f"10-{self.name}.network"

    @property
    def netplan_file(self) -> str:
        return f"10-netplan-{self.name}.network"


UPLINKS = (
    Uplink("uplink0", "2001:db8::", gateway=True),
    Uplink("uplink1", "2001:db8:1::", gateway=False),
)


def network_file(uplink: Uplink, ra_only: bool, extra: tuple[str, ...] = ()) -> str:
    """A typical uplink .network.

    The RA-only form leaves IPv6AcceptRA= unset on purpose: that is the SLAAC host whose
    router advertisements networkd switches off once forwarding is on, unless v6gen says
    otherwise. The static form says IPv6AcceptRA=no, as static servers do; left unset, networkd
    would hold the link in "configuring" until its router solicitations time out (~12 s).
    """
    lines = ["[Match]", f"Name={uplink.name}", "", "[Network]", *extra]
    if not ra_only:
        lines += [f"Address={uplink.host_addr}/64", "IPv6AcceptRA=no"]
        if uplink.gateway:
            lines += [f"Gateway={uplink.lan_addr}"]
    # DAD would add ~1 s to every bring-up and flap; the lab has no duplicates to detect.
    lines += ["IPv6DuplicateAddressDetection=0", ""]
    return "\n".join(lines)


def radvd_conf(uplink: Uplink) -> str:
    """Advertises the uplink's /64 for SLAAC; a default route only through the gateway LAN."""
    # Short intervals so a host that missed the answer to its solicitation is not kept waiting.
    return (
        f"interface {uplink.lan_if} {{\n"
        "  AdvSendAdvert on;\n"
        "  MinRtrAdvInterval 3;\n"
        "  MaxRtrAdvInterval 4;\n"
        f"  AdvDefaultLifetime {600 if uplink.gateway else 0};\n"
        f"  prefix {uplink.prefix}/64 {{ AdvOnLink on; AdvAutonomous on; }};\n"
        "};\n"
    )
