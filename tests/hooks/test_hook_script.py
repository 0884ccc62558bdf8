"""The real dispatcher-hooks/50-v6gen, run as root in a private network namespace."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import PEER, UPLINK, Lab, MakeLab, restore_files

ADDRS = ["2001:db8::a:71a5", "2001:db8::a:71a6", "fd00:1::7"]
DELAY = f"net/ipv6/neigh/{UPLINK}/proxy_delay"
PROXY_NDP = f"net/ipv6/conf/{UPLINK}/proxy_ndp"


def managed(lab: Lab, addrs: list[str] = ADDRS, *, sysctl: bool = True) -> None:
    files = restore_files(addrs)
    lab.write_data(files["proxy"])
    if sysctl:
        lab.write_sysctl(files["sysctl"])


def test_restores_entries_after_a_flap_with_one_ip_call(lab: Lab) -> None:
    managed(lab)
    lab.shim("ip")
    lab.ip("-6", "neigh", "replace", "proxy", ADDRS[0], "dev", UPLINK)
    lab.flap()
    assert lab.proxies() == set()  # the kernel flushed them: what the hook is for

    run = lab.run_hook(state="carrier")

    assert run.rc == 0
    line = run.line
    assert (line["iface"], line["state"], line["n"], line["notes"]) == (UPLINK, "carrier", "3", "")
    assert lab.proxies() == set(ADDRS)
    assert lab.calls_to("ip") == ["ip -6 -force -batch -"]


def test_rerun_is_idempotent_and_leaves_foreign_entries(lab: Lab) -> None:
    managed(lab)
    lab.ip("-6", "neigh", "add", "proxy", "2001:db8::99", "dev", UPLINK)  # someone else's
    for state in ("carrier", "degraded", "routable", "configured"):
        run = lab.run_hook(state=state)
        assert run.rc == 0
        # Where ndptool is installed, `routable` also announces them (test_hook_announce.py).
        announced = state == "routable" and shutil.which("ndptool") is not None
        notes = "; announcing them with ndptool" if announced else ""
        assert (run.line["state"], run.line["n"], run.line["notes"]) == (state, "3", notes)
    assert lab.proxies() == {*ADDRS, "2001:db8::99"}


@pytest.mark.parametrize(
    "iface",
    [PEER, "lo", "", "-up0", "../up0", "up0/..", "up0 x", "up0;reboot", "$(reboot)", "a" * 16],
)
def test_other_interfaces_exit_at_once_without_starting_anything(lab: Lab, iface: str) -> None:
    managed(lab)
    for name in ("date", "env", "timeout", "ip", "stat", "awk", "flock"):
        lab.shim(name)

    run = lab.run_hook(iface=iface)

    assert (run.rc, run.stderr) == (0, "")
    assert not lab.calls.exists(), lab.calls.read_text()  # no process at all was started


def test_environment_beyond_iface_and_state_is_ignored(lab: Lab) -> None:
    """networkd-dispatcher passes its whole environment; a PATH full of traps changes nothing."""
    managed(lab)
    trap = lab.tmp / "trap"
    trap.mkdir()
    for name in ("date", "env", "timeout", "ip", "stat", "awk", "flock", "sh"):
        (trap / name).write_text(f"#!/bin/sh\ntouch {lab.tmp}/trapped\n")
        (trap / name).chmod(0o755)
    lab.flap()

    run = lab.run_hook(path=str(trap))

    assert run.line["n"] == "3"
    assert not (lab.tmp / "trapped").exists()


Spoil = Callable[[Lab, Path], None]


def _group_writable(lab: Lab, data: Path) -> None:
    data.chmod(0o664)


def _other_writable(lab: Lab, data: Path) -> None:
    data.chmod(0o646)


def _not_root(lab: Lab, data: Path) -> None:
    os.chown(data, 65534, 0)


def _symlink(lab: Lab, data: Path) -> None:
    real = lab.tmp / "elsewhere.proxy"
    data.rename(real)
    data.symlink_to(real)


def _dangling_symlink(lab: Lab, data: Path) -> None:
    data.unlink()
    data.symlink_to(lab.tmp / "missing")


def _fifo(lab: Lab, data: Path) -> None:
    data.unlink()
    os.mkfifo(data, 0o644)


def _directory(lab: Lab, data: Path) -> None:
    data.unlink()
    data.mkdir(0o755)


def _uplinks_dir_group_writable(lab: Lab, data: Path) -> None:
    lab.uplinks.chmod(0o775)


def _uplinks_dir_symlink(lab: Lab, data: Path) -> None:
    real = lab.tmp / "real-uplinks"
    lab.uplinks.rename(real)
    lab.uplinks.symlink_to(real)


def _state_dir_not_root(lab: Lab, data: Path) -> None:
    os.chown(lab.uplinks.parent, 65534, 65534)


def _var_lib_other_writable(lab: Lab, data: Path) -> None:
    lab.varlib.chmod(0o757)


def _too_big(lab: Lab, data: Path) -> None:
    with data.open("ab") as f:
        f.truncate(16 * 1024 * 1024 + 1)  # sparse


def _drain(fd: int) -> bytes:
    try:
        return os.read(fd, 100)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (_group_writable, "up0.proxy: writable by group or others"),
        (_other_writable, "up0.proxy: writable by group or others"),
        (_not_root, "up0.proxy: owned by uid 65534, not root"),
        (_symlink, "up0.proxy: a symlink, not a regular file"),
        (_dangling_symlink, "up0.proxy: a symlink, not a regular file"),
        (_fifo, "up0.proxy: a FIFO, not a regular file"),
        (_directory, "up0.proxy: a directory, not a regular file"),
        (_uplinks_dir_group_writable, "/v6gen/uplinks: writable by group or others"),
        (_uplinks_dir_symlink, "/v6gen/uplinks: a symlink, not a directory"),
        (_state_dir_not_root, "/var/lib/v6gen: owned by uid 65534, not root"),
        (_var_lib_other_writable, "/var/lib/: writable by group or others"),
        (_too_big, "up0.proxy: larger than 16777216 bytes"),
    ],
)
def test_refuses_untrusted_data(lab: Lab, spoil: Spoil, why: str) -> None:
    managed(lab)
    data = lab.data_file()
    spoil(lab, data)
    # A FIFO must not block the hook: it must never be opened for reading at all. Held open
    # here with a line in it, so a hook that did read it would neither block nor go unnoticed.
    fifo = os.open(data, os.O_RDWR | os.O_NONBLOCK) if stat.S_ISFIFO(data.lstat().st_mode) else -1
    if fifo >= 0:
        os.write(fifo, b"unread\n")
    lab.shim("ip")
    lab.flap()

    try:
        run = lab.run_hook()
        unread = _drain(fifo) if fifo >= 0 else b"unread\n"
    finally:
        if fifo >= 0:
            os.close(fifo)

    assert run.rc == 0
    assert run.line["n"] == "0"
    assert run.line["notes"].startswith("; refused /var/lib/")
    assert run.line["notes"].endswith(why)
    assert unread == b"unread\n", "the hook read the FIFO"
    assert lab.proxies() == set()
    assert lab.calls_to("ip") == []


def test_keeps_only_well_formed_lines_for_its_own_interface(lab: Lab) -> None:
    marker = lab.tmp / "pwned"
    good = [
        "neigh replace proxy 2001:db8::1 dev up0",
        "# a comment; reboot",
        "neigh replace proxy 2001:DB8::2 dev up0",
        "neigh replace proxy fd00::3 dev up0",
    ]
    bad = [
        "neigh replace proxy 2001:db8::10 dev up0 ; reboot",
        "neigh replace proxy 2001:db8::11 dev up0 ; flush",
        "neigh replace proxy 2001:db8::12 dev up0 extra",
        f"neigh replace proxy $(touch {marker}) dev up0",
        f"neigh replace proxy `touch {marker}` dev up0",
        "neigh replace proxy 2001:db8::13;reboot dev up0",
        "neigh replace proxy 2001:db8::14/64 dev up0",
        "neigh replace proxy 2001:db8::15 dev peer0",
        "neigh replace proxy 2001:db8::16 dev up0 dev peer0",
        "neigh replace proxy 2001:db8::17 dev up0\r",
        " neigh replace proxy 2001:db8::18 dev up0",
        "neigh  replace proxy 2001:db8::19 dev up0",
        "neigh\treplace proxy 2001:db8::1a dev up0",
        "neigh add proxy 2001:db8::1b dev up0",
        "neigh del proxy 2001:db8::1 dev up0",
        "neigh flush dev up0",
        "route add 2001:db8:9::/64 dev up0",
        "link set up0 down",
        "link set peer0 name evil0",
        "-force neigh replace proxy 2001:db8::1c dev up0",
        "addr add 2001:db8::1d/64 dev up0",
        "neigh replace proxy 2001:db8::1e",
        "neigh replace proxy dev up0",
        "",
    ]
    lab.write_data("\n".join(["# generated by v6gen", *good[:2], *bad, *good[2:]]) + "\n")
    lab.shim("ip")

    run = lab.run_hook()

    assert run.line["n"] == "3"
    assert run.line["notes"] == f"; dropped {len(bad)} malformed or foreign lines"
    assert lab.proxies() == {"2001:db8::1", "2001:db8::2", "fd00::3"}
    assert lab.proxies(PEER) == set()
    assert not marker.exists()
    assert "2001:db8:9::" not in lab.ip("-6", "route", "show")
    assert "2001:db8::1d" not in lab.ip("-6", "addr", "show")
    assert "state UP" in lab.ip("link", "show", UPLINK)
    assert "evil0" not in lab.ip("link", "show")
    assert lab.calls_to("ip") == ["ip -6 -force -batch -"]


def test_sets_proxy_ndp_and_the_persisted_proxy_delay(lab: Lab) -> None:
    managed(lab)
    assert lab.sysctl(DELAY) == "80"  # the kernel default, 0.8 s
    lab.set_sysctl(PROXY_NDP, "0")

    lab.run_hook()

    assert lab.sysctl(DELAY) == "0"
    assert lab.sysctl(PROXY_NDP) == "1"


def test_without_a_persisted_delay_proxy_delay_keeps_the_kernel_default(lab: Lab) -> None:
    managed(lab, sysctl=False)  # config proxy_delay: null -> no sysctl.d file
    lab.write_sysctl("# generated by v6gen\nnet/ipv6/neigh/peer0/proxy_delay = 0\n")

    run = lab.run_hook()

    assert run.line["n"] == "3"
    assert lab.sysctl(DELAY) == "80"
    assert lab.sysctl(PROXY_NDP) == "1"


def test_an_untrusted_sysctl_file_is_ignored_but_entries_are_restored(lab: Lab) -> None:
    managed(lab)
    (lab.sysctld / "50-v6gen.conf").chmod(0o666)

    run = lab.run_hook()

    assert run.line["n"] == "3"
    why = "proxy_delay left alone: /etc/sysctl.d/50-v6gen.conf: writable by group or others"
    assert run.line["notes"].endswith(why)
    assert lab.sysctl(DELAY) == "80"


def test_comment_only_file_restores_nothing_and_still_sets_the_sysctls(lab: Lab) -> None:
    managed(lab, [])
    lab.ip("-6", "neigh", "add", "proxy", "2001:db8::99", "dev", UPLINK)  # someone else's

    run = lab.run_hook()

    assert (run.line["n"], run.line["notes"]) == ("0", "")
    assert lab.proxies() == {"2001:db8::99"}
    assert lab.sysctl(DELAY) == "0"


def test_restores_1000_entries_in_one_batch(lab: Lab) -> None:
    addrs = [f"2001:db8::{i:x}" for i in range(1, 1001)]
    managed(lab, addrs)
    lab.shim("ip")
    for run_no in range(1, 3):
        lab.flap()
        assert lab.proxies() == set()
        run = lab.run_hook()
        assert run.line["n"] == "1000"
        assert lab.proxies() == set(addrs)
        # One ip process per run, however many entries: a per-address loop would show here
        # whatever the machine's speed. How fast the batch is, is bench/'s business.
        assert lab.calls_to("ip") == ["ip -6 -force -batch -"] * run_no


def _hang(lab: Lab, name: str) -> None:
    lab.shim(name, "exec sleep infinity")


# The hook's bounds (dispatcher-hooks/50-v6gen): 3 s for the lock, 4 s for ip, 5 s for awk, each
# SIGKILLed 1 s after its SIGTERM. The stalls below never end by themselves, so a hook that ends
# at all was ended by its own bounds, and a timer never fires early, so the lower limits hold
# however loaded the machine is. The upper limits only say "about that bound, not some other
# one": a margin of 10 s, since a machine under load may take seconds to run the rest.
MARGIN = 10.0


def test_bounded_time_with_a_hung_ip_a_hung_awk_and_a_held_lock(make_lab: MakeLab) -> None:
    """Run side by side, so the test takes as long as the slowest case (~6 s)."""
    hung_ip, hung_awk, locked = make_lab(), make_lab(), make_lab()
    for lab in (hung_ip, hung_awk, locked):
        managed(lab)
    _hang(hung_ip, "ip")
    _hang(hung_awk, "awk")
    lock = _sync_lock(locked).open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # a `v6gen sync` that never finishes
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        started = time.monotonic()
        procs = {
            name: subprocess.Popen(
                lab.hook_argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            for name, lab in (("ip", hung_ip), ("awk", hung_awk), ("lock", locked))
        }
        ended: dict[str, float] = {}
        while len(ended) < len(procs) and time.monotonic() - started < 120:  # a hang guard
            for name, proc in procs.items():
                if name not in ended and proc.poll() is not None:
                    ended[name] = time.monotonic() - started
            time.sleep(0.02)
        results = {}
        for name, proc in procs.items():
            assert name in ended, f"the hook with a stalled {name} never ended"
            _, err = proc.communicate(timeout=5)
            results[name] = (proc.returncode, err.strip(), ended[name])
    finally:
        lock.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    rc, err, took = results["ip"]
    assert rc == 0
    assert err.startswith("v6gen-hook: up0 carrier: restored ? proxy entries in "), err
    assert err.endswith("; ip timed out after 4 s"), err
    assert 3.5 < took < 4 + 1 + MARGIN

    rc, err, took = results["awk"]
    assert rc == 0
    assert err.startswith("v6gen-hook: up0 carrier: restored ? proxy entries in "), err
    assert err.endswith("; awk timed out after 5 s"), err  # though ip, waiting, was ended first
    assert 4.5 < took < 5 + 1 + MARGIN

    rc, err, took = results["lock"]
    assert rc == 0
    assert "restored 3 proxy entries" in err
    assert "/run/v6gen/lock busy or unusable, went ahead without it" in err
    assert 2.5 < took < 3 + MARGIN
    assert locked.proxies() == set(ADDRS)


# awk cut short after it has read (and could have written) part of the file: the first 6,000
# bytes, about 130 lines, then nothing more. Once stdio's 4 KiB block was written as it filled,
# so a line split at the block's end reached ip, which ran the fragment at EOF: a wrong address,
# or `dev eth1` for `dev eth10`.
# "stalls": its input never ends, so the hook's timeout ends it.
_AWK_STALLS = '{ head -c 6000 "$4"; exec sleep infinity; } | exec @AWK@ "$1" "$2" "$3" -'
# "is-killed": SIGKILLed once ip has restored something awk passed on (so awk has written, and
# holds more it will never write), which the stub sees in the kernel's table: no guessing at how
# long awk takes. Its input is a FIFO the stub keeps open, so awk can't reach EOF meanwhile.
_AWK_IS_KILLED = """@AWK@ "$1" "$2" "$3" @FIFO@ &
exec 7>@FIFO@
head -c 6000 "$4" >&7
until ip -6 neigh show proxy dev up0 | grep -q .; do sleep 0.01; done
kill -9 "$!"
exec 7>&-
wait "$!"
exit 137"""


@pytest.mark.parametrize(
    ("body", "why"),
    [(_AWK_STALLS, "awk timed out after 5 s"), (_AWK_IS_KILLED, "awk killed by signal 9")],
    ids=["stalls", "is-killed"],
)
def test_awk_cut_short_hands_ip_only_whole_lines(lab: Lab, body: str, why: str) -> None:
    addrs = [f"2001:db8::1:{i:x}" for i in range(1, 1001)]
    managed(lab, addrs)
    fifo = lab.tmp / "awk-input"
    os.mkfifo(fifo, 0o600)
    awk = str(lab.bin / "awk-real")
    lab.shim("awk", body.replace("@AWK@", awk).replace("@FIFO@", str(fifo)))
    lab.flap()

    run = lab.run_hook()

    assert run.line["notes"] == f"; {why}", run.stderr  # no "ip exit ..., 1 of N failed"
    assert run.line["n"] == "?"
    restored = lab.proxies()
    assert restored, "the lines awk did pass on are restored"
    assert restored < set(addrs)
    assert lab.proxies(PEER) == set()


def test_ip_ending_early_is_blamed_not_the_awk_it_leaves_writing(lab: Lab) -> None:
    """ip gone (crashed, or missing): awk, still writing, dies of SIGPIPE. That is ip's fault,
    and its error is what the line reports."""
    # ~1 MB, far beyond a pipe's 64 KiB: awk can't have written it all before ip is gone, so it
    # meets the closed pipe whatever the two processes' speeds.
    managed(lab, [f"2001:db8::{i:x}" for i in range(1, 20001)])
    lab.shim("ip", 'echo "ip: out of luck" >&2; exit 3')

    run = lab.run_hook()

    assert run.line["n"] == "?"
    assert run.line["notes"] == "; ip exit 3 before it had read everything: ip: out of luck"


def test_awks_summary_after_half_an_ip_error_line_is_still_read(lab: Lab) -> None:
    """ip writes an error message in pieces; awk's summary can land in the middle of one."""
    # The stubs put the three writes in that order through two FIFOs, whatever the machine's
    # speed: ip writes the first half of its message, then lets awk start; once it has read
    # everything, ip waits until awk has written its summary and ended, then writes the rest.
    addrs = [f"2001:db8::{i:x}" for i in range(1, 201)]
    managed(lab, addrs)
    half, done = lab.tmp / "ip-wrote-half", lab.tmp / "awk-done"
    os.mkfifo(half, 0o600)
    os.mkfifo(done, 0o600)
    ip_stub = [
        f"exec 8<>{done}",  # open now, so that awk's write never waits for a reader
        "printf 'Error: half' >&2",
        f"echo >{half}",
        f'{lab.bin / "ip-real"} "$@"',
        "read -r _ <&8",
        r"printf ' a line.\n' >&2",
        "exit 1",
    ]
    lab.shim("ip", "\n".join(ip_stub))
    awk_stub = [f"read -r _ <{half}", f'{lab.bin / "awk-real"} "$@"', "rc=$?", f"echo >{done}"]
    lab.shim("awk", "\n".join([*awk_stub, 'exit "$rc"']))

    run = lab.run_hook()

    assert run.line["n"] == "0"  # exit 1 and no "Command failed": nothing counted as restored
    assert run.line["notes"] == "; ip exit 1, 0 of 200 failed: Error: half"
    assert lab.proxies() == set(addrs)


def _sync_lock(lab: Lab) -> Path:
    """Where `v6gen sync` takes its lock (Paths.lock_file), inside the lab's /run."""
    directory = lab.run_dir / "v6gen"
    directory.mkdir(exist_ok=True)
    return directory / "lock"


def _wait_until_blocked_on(path: Path, proc: subprocess.Popen[str]) -> None:
    """Until some process waits for the flock on `path` (flock(1) blocks in the kernel, which
    lists the waiter in /proc/locks as "->"): the hook has got as far as the lock."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    deadline = time.monotonic() + 60  # a hang guard, not a speed limit
    while not any(
        " -> FLOCK " in line and inode in line
        for line in Path("/proc/locks").read_text().splitlines()
    ):
        assert proc.poll() is None, f"the hook ended without waiting: {proc.communicate()}"
        assert time.monotonic() < deadline, "the hook never waited for the lock"
        time.sleep(0.01)


def test_waits_for_a_running_sync_and_replays_what_it_wrote(lab: Lab) -> None:
    """A sync holds the lock while it rewrites the file and deletes stale entries: replaying the
    old file behind its back would bring a deleted entry back for good."""
    managed(lab, ADDRS)
    lock = _sync_lock(lab).open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen(
            lab.hook_argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        _wait_until_blocked_on(_sync_lock(lab), proc)
        managed(lab, ADDRS[:1])  # the sync dropped two containers
    finally:
        lock.close()
    _, err = proc.communicate(timeout=30)

    assert err.startswith("v6gen-hook: up0 carrier: restored 1 proxy entries in ")
    assert lab.proxies() == {ADDRS[0]}


def test_an_interface_gone_meanwhile_is_reported_not_fatal(lab: Lab) -> None:
    files = restore_files(ADDRS, "ghost0")
    lab.write_data(files["proxy"], "ghost0")
    lab.write_sysctl(files["sysctl"])

    run = lab.run_hook(iface="ghost0")

    assert run.rc == 0
    assert run.line["n"] == "0"
    assert run.line["notes"].startswith(
        "; cannot set proxy_ndp; cannot set proxy_delay; ip exit 1, 3 of 3 failed: "
    )
