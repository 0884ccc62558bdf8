"""The rtnetlink messages of adapters/netlink.py, byte for byte as iproute2 builds them
(ipneigh.c: nlmsghdr, ndmsg with NTF_PROXY, NDA_DST); the kernel's side is in
tests/faults/test_netlink_kernel.py."""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv6Address, IPv6Network

import pytest

from v6gen.adapters import bridgedad, netlink
from v6gen.errors import KernelError

ADDR = IPv6Address("2001:db8::a:71a5")


def test_a_new_proxy_entry_is_iproute2s_message() -> None:
    flags = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | netlink.NLM_F_CREATE
    flags |= netlink.NLM_F_REPLACE
    data = netlink.neigh_request(netlink.RTM_NEWNEIGH, flags, 7, 3, ADDR)
    assert len(data) == 16 + 12 + 20
    assert struct.unpack_from("=IHHII", data) == (48, 28, 0x505, 7, 0)
    assert struct.unpack_from("=BxxxiHBB", data, 16) == (socket.AF_INET6, 3, 0x80, 0x08, 0)
    assert struct.unpack_from("=HH", data, 28) == (20, 1)
    assert data[32:] == ADDR.packed


def test_a_dump_reply_reads_back_as_interface_and_address() -> None:
    request = netlink.neigh_request(netlink.RTM_NEWNEIGH, 0, 1, 5, ADDR)
    [(kind, seq, payload)] = netlink.messages(request)
    assert (kind, seq) == (netlink.RTM_NEWNEIGH, 1)
    assert netlink.proxy_entry(payload) == (5, ADDR)


def test_messages_split_a_datagram_and_refuse_a_cut_one() -> None:
    one = netlink.neigh_request(netlink.RTM_NEWNEIGH, 0, 1, 5, ADDR)
    two = netlink.neigh_request(netlink.RTM_NEWNEIGH, 0, 2, 6, ADDR + 1)
    assert [seq for _, seq, _ in netlink.messages(one + two)] == [1, 2]
    with pytest.raises(KernelError):
        list(netlink.messages(one[:-4]))  # the header says 48 bytes, 44 came


def test_an_ordinary_neighbour_is_no_proxy_entry() -> None:
    data = netlink.neigh_request(netlink.RTM_NEWNEIGH, 0, 1, 5, ADDR)
    body = bytearray(data[16:])
    body[10] = 0  # ndm_flags without NTF_PROXY
    assert netlink.proxy_entry(bytes(body)) is None
    assert netlink.proxy_entry(b"\0" * 4) is None


def test_errors_carry_the_errno_and_a_hint() -> None:
    assert netlink.error_code(struct.pack("=i", -errno.EPERM)) == errno.EPERM
    assert netlink.error_code(struct.pack("=i", 0)) == 0
    denied = netlink.fail(errno.EPERM, "cannot add the proxy entry x dev y")
    assert denied.message == "cannot add the proxy entry x dev y: Operation not permitted"
    assert "CAP_NET_ADMIN" in denied.hint
    assert "interface is gone" in netlink.fail(errno.ENODEV, "x").hint


def test_an_address_is_added_again_as_iproute2_adds_it_nodad() -> None:
    gateway = bridgedad.Address(7, IPv6Address("2001:db8::20:1"), 112, 0, 0x40 | 0x80)
    data = bridgedad.address_request(bridgedad.RTM_NEWADDR, 0x405, 3, gateway, 0x80 | 0x02)
    assert struct.unpack_from("=IHHII", data) == (len(data), 20, 0x405, 3, 0)
    assert struct.unpack_from("=BBBBI", data, 16) == (socket.AF_INET6, 112, 0x82, 0, 7)
    [(kind, _, payload)] = netlink.messages(data)
    assert kind == bridgedad.RTM_NEWADDR
    # Read back as a dump answer: the 32-bit IFA_FLAGS wins over the 8-bit field.
    parsed = bridgedad.parse_address(payload)
    assert parsed == bridgedad.Address(7, IPv6Address("2001:db8::20:1"), 112, 0, 0x82)
    assert parsed.network == IPv6Network("2001:db8::20:0/112")
