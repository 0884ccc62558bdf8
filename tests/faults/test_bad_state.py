"""/var/lib/v6gen/state.json damaged, hand-edited or untrustworthy, end to end through the CLI.

What must happen, decided here:

- Damaged (not JSON, wrong format, invalid names or addresses, not UTF-8): ignored with a warning
  naming the file and the reason; ownership is recovered from the restore files (which list
  exactly what v6gen put into the kernel); the sync heals the state file at once; nothing else
  changes.
- Untrustworthy (owned by another user, group- or world-writable, a symlink): ignored in the same
  way, whatever it claims; a symlink is replaced, its target never written. Restore files that
  are untrustworthy in the same sense are not believed either.
- Hand-edited but well-formed, root's own and writable only by root: it is root's record of what
  v6gen added, and v6gen cannot tell a hand-made claim from a real one (a claim is written
  *before* the entry is added, so "claimed, in no restore file" is a legitimate state after a
  crash). So it is believed: a claimed entry that no container wants is deleted, even if someone
  else made it. Editing the file by hand is exactly as powerful as `ip -6 neigh del` as root;
  every entry it does not claim stays untouched.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from v6gen.render import HEADER

from .inproc import FOREIGN, CliHost
from .replay import DockerReplay, body, container
from .tree import changed, entry

GOOD = container("good", "2001:db8::a:1")
GOOD_ENTRY = ("uplink0", IPv6Address("2001:db8::a:1"))
F00 = ("uplink0", IPv6Address("2001:db8::f00"))  # an admin's entry, in FOREIGN
STATE = "var/lib/v6gen/state.json"
UP_TO_DATE = "up to date: 1 address on 1 uplink, nothing changed\n"
UNTRUSTED = "not a regular file owned by this user and writable only by it"
ME = (os.geteuid(), os.getegid())


def _chown_needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")


def state_doc(
    owned: dict[str, list[str]], saved: dict[str, str], all_proxy_ndp: str | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": 1,
        "generated_by": "v6gen",
        "owned_proxy_entries": owned,
        "saved_proxy_delay": saved,
    }
    if all_proxy_ndp is not None:
        doc["saved_sysctls"] = {"net/ipv6/conf/all/proxy_ndp": all_proxy_ndp}
    return doc


def state_text(
    owned: dict[str, list[str]], saved: dict[str, str], all_proxy_ndp: str | None = None
) -> str:
    return json.dumps(state_doc(owned, saved, all_proxy_ndp), indent=2) + "\n"


# After a first sync: v6gen added 2001:db8::a:1 and remembers the kernel's proxy_delay (80) and
# all/proxy_ndp (0).
SYNCED = state_text({"uplink0": ["2001:db8::a:1"]}, {"uplink0": "80"}, "0")
# The same after the state was lost: ownership came back from the restore file, but the
# values from before v6gen cannot, so the current ones (v6gen's own 0 and 1) are remembered.
HEALED = state_text({"uplink0": ["2001:db8::a:1"]}, {"uplink0": "0"}, "1")
CLAIMS_F00 = state_text({"uplink0": ["2001:db8::a:1", "2001:db8::f00"]}, {"uplink0": "80"}, "0")


def synced(host: CliHost, replay: DockerReplay) -> Path:
    replay.containers = body([GOOD])
    assert host.run("sync").code == 0
    assert host.read(STATE) == SYNCED
    return host.root / STATE


def sync(host: CliHost, replay: DockerReplay, *containers: dict[str, Any]) -> tuple[int, str, str]:
    replay.containers = body(containers)
    r = host.run("sync")
    return r.code, r.out, r.err


DAMAGED = [
    (
        "not-json", b"{not json",
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    ("empty", b"", "Expecting value: line 1 column 1 (char 0)"),
    (
        "truncated", SYNCED.encode()[:40],
        "Unterminated string starting at: line 3 column 19 (char 35)",
    ),
    ("format-2", json.dumps({**state_doc({}, {}), "format": 2}).encode(), "unknown format"),
    ("a-list", b"[]", "unknown format"),
    (
        "uplink-with-newline",
        json.dumps(state_doc({"up0\n[Network]": ["2001:db8::a:1"]}, {})).encode(),
        "bad uplink 'up0\\n[Network]'",
    ),
    (
        "link-local-claim",
        json.dumps(state_doc({"uplink0": ["fe80::1"]}, {})).encode(),
        "'fe80::1' is a link-local address; only global unicast addresses can be proxied",
    ),
    (
        "claims-not-a-list",
        json.dumps(state_doc({"uplink0": "2001:db8::f00"}, {})).encode(),  # type: ignore[dict-item]
        "bad uplink 'uplink0'",
    ),
    (
        "entries-not-a-mapping",
        json.dumps({**state_doc({}, {}), "owned_proxy_entries": [1]}).encode(),
        "cannot convert dictionary update sequence element #0 to a sequence",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("data", "reason"), [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_state_is_ignored_recovered_and_healed(
    host: CliHost, replay: DockerReplay, data: bytes, reason: str
) -> None:
    path = synced(host, replay)
    path.write_bytes(data)
    before, kernel = host.snapshot(), host.kernel_view()

    code, out, err = sync(host, replay, GOOD)

    assert (code, out, err) == (0, UP_TO_DATE, f"warning: ignoring damaged {path}: {reason}\n")
    assert set(changed(before, host.snapshot())) == {STATE}
    assert entry(path) == ("f", 0o644, *ME, HEALED.encode())
    assert host.kernel_view().proxy == kernel.proxy
    assert sync(host, replay, GOOD) == (0, UP_TO_DATE, "")  # healed: no warning any more
    # Ownership survived: the container's entry goes with it, nobody else's does.
    code, out, err = sync(host, replay)
    assert (code, err) == (0, "") and "remove 2001:db8::a:1 on uplink0\n" in out
    assert host.kernel_view().proxy == FOREIGN


def test_state_that_is_not_utf8(host: CliHost, replay: DockerReplay) -> None:
    path = synced(host, replay)
    path.write_bytes(b"\xff\xfe{}")
    code, out, err = sync(host, replay, GOOD)
    assert (code, out) == (0, UP_TO_DATE)
    assert err == (
        f"warning: cannot read {path}: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte\n"
    )
    assert host.read(STATE) == HEALED


def _other_owner(path: Path) -> None:
    _chown_needs_root()
    os.chown(path, 65534, 65534)


def _mode(mode: int) -> Any:
    def apply(path: Path) -> None:
        path.chmod(mode)

    return apply


@pytest.mark.parametrize(
    "spoil",
    [_other_owner, _mode(0o664), _mode(0o666), _mode(0o646)],
    ids=["other-owner", "group-writable", "world-writable", "other-writable-only"],
)
def test_untrusted_state_claims_nothing(host: CliHost, replay: DockerReplay, spoil: Any) -> None:
    path = synced(host, replay)
    path.write_text(CLAIMS_F00)
    spoil(path)
    before, kernel = host.snapshot(), host.kernel_view()

    assert sync(host, replay, GOOD) == (0, UP_TO_DATE, f"warning: ignoring {path}: {UNTRUSTED}\n")
    assert set(changed(before, host.snapshot())) == {STATE}
    assert entry(path) == ("f", 0o644, *ME, HEALED.encode())  # replaced: v6gen's, 0644
    assert host.kernel_view().proxy == kernel.proxy
    code, _, err = sync(host, replay)
    assert (code, err) == (0, "")
    assert host.kernel_view().proxy == FOREIGN  # 2001:db8::f00 survived; a:1 went


def test_symlinked_state_is_ignored_and_its_target_never_written(
    host: CliHost, replay: DockerReplay, tmp_path: Path
) -> None:
    path = synced(host, replay)
    target = tmp_path / "elsewhere" / "state.json"
    target.parent.mkdir()
    target.write_text(CLAIMS_F00)
    target_before = entry(target)
    path.unlink()
    path.symlink_to(target)

    assert sync(host, replay, GOOD) == (0, UP_TO_DATE, f"warning: ignoring {path}: {UNTRUSTED}\n")
    assert entry(path) == ("f", 0o644, *ME, HEALED.encode())
    assert entry(target) == target_before
    sync(host, replay)
    assert host.kernel_view().proxy == FOREIGN


def test_state_path_that_is_a_directory_is_a_clear_error(
    host: CliHost, replay: DockerReplay
) -> None:
    path = synced(host, replay)
    path.unlink()
    path.mkdir()
    before, kernel = host.snapshot(), host.kernel_view()
    code, out, err = sync(host, replay, GOOD, container("new", "2001:db8::a:2"))
    assert (code, out) == (7, "")
    assert err == (
        f"error: cannot write {path}: Is a directory\n"
        "hint: v6gen keeps its state there: check that it is a writable regular file on a file "
        "system that is not full\n"
    )
    assert changed(before, host.snapshot()) == {}
    assert host.kernel_view() == kernel


@pytest.mark.parametrize("how", ["other-owner", "world-writable", "symlink"])
def test_untrusted_restore_file_claims_nothing(
    host: CliHost, replay: DockerReplay, how: str, tmp_path: Path
) -> None:
    """With the state damaged, ownership comes from the restore files, but only from ones as
    trustworthy as the state itself would have to be (the dispatcher hook applies the same
    rule before it replays one)."""
    path = synced(host, replay)
    path.write_text("{damaged")
    planted = host.root / "var/lib/v6gen/uplinks/evil.proxy"
    text = f"{HEADER}: proxy entries of evil\nneigh replace proxy 2001:db8::f00 dev uplink0\n"
    if how == "symlink":
        target = tmp_path / "evil.proxy"
        target.write_text(text)
        planted.symlink_to(target)
    else:
        planted.write_text(text)
        if how == "other-owner":
            _chown_needs_root()
            os.chown(planted, 65534, 65534)
        else:
            planted.chmod(0o666)

    code, out, err = sync(host, replay, GOOD)

    assert (code, err) == (0, f"warning: ignoring damaged {path}: Expecting property name "
                              "enclosed in double quotes: line 1 column 2 (char 1)\n")  # fmt: skip
    assert out == "delete /var/lib/v6gen/uplinks/evil.proxy\n"  # in v6gen's dir, with its header
    assert not os.path.lexists(planted)
    assert host.read(STATE) == HEALED  # a:1 from the trusted uplink0.proxy, f00 not claimed
    sync(host, replay)
    assert host.kernel_view().proxy == FOREIGN


def test_hand_edited_claim_is_root_s_word(host: CliHost, replay: DockerReplay) -> None:
    """A well-formed, root-owned 0644 state is believed (see the module docstring): the
    claimed 2001:db8::f00 goes because no container wants it. Entries it does not claim stay."""
    path = synced(host, replay)
    path.write_text(CLAIMS_F00)
    before = host.snapshot()

    code, out, err = sync(host, replay, GOOD)

    assert (code, out, err) == (0, "remove 2001:db8::f00 on uplink0\n", "")
    assert host.kernel_view().proxy == (FOREIGN - {F00}) | {GOOD_ENTRY}
    assert set(changed(before, host.snapshot())) == {STATE}
    assert host.read(STATE) == SYNCED


def test_hand_edited_proxy_delay_never_reaches_the_kernel(
    host: CliHost, replay: DockerReplay
) -> None:
    path = synced(host, replay)
    saved = {"uplink0": "1; reboot", "../../x": "5", "uplink0\n": "7"}
    path.write_text(state_text({"uplink0": ["2001:db8::a:1"]}, saved))
    writes = len(host.kernel.sysctl_writes)

    code, _, err = sync(host, replay)  # the container went: v6gen would restore the delay
    assert (code, err) == (0, "")
    assert host.kernel.sysctl_writes[writes:] == []  # nothing valid saved, nothing put back
    assert host.kernel_view().proxy == FOREIGN
