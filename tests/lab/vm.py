"""A Debian kernel under QEMU's emulation, for the network drivers this machine's kernel lacks.

The machines this project runs on have a kernel built without CONFIG_IPVLAN and without
modules: Docker's ipvlan driver fails there ("failed to create the ipvlan port: operation not
supported"), so no lab with dockerd can hold an ipvlan container. Debian bookworm's kernel
package (6.1) has ipvlan and veth as modules (IPv6 built in).

Why QEMU with TCG and not User-mode Linux (which the lab used first): UML runs its processes
under ptrace and copies their floating-point state with a buffer sized when it was built, so
bookworm's UML panics on CPUs whose extended register state is larger (AMX: "ptrace set fp regs
failed, errno = 14"). Under TCG the guest's CPU is QEMU's `qemu64` model, emulated, whatever
the host has: no AVX-512, no AMX, nothing from the host's CPU reaches the guest kernel, and
QEMU itself is an ordinary process. KVM is deliberately not used (it would hand the guest the
host's CPU features, and /dev/kvm is not on every machine).

The guest boots a small initramfs (the static busybox and the modules, written here as a newc
archive: no cpio tool needed) that mounts the machine's / read-only over virtio-9p and
switch_roots into a shell script on it: namespaces, veth and ipvlan links, the machine's own ip,
sysctl and busybox, and nothing written outside the guest's own tmpfs. About 8 s per boot.

The packages are fetched once from the machine's mirror (URI read at run time, as packages.py
does) and extracted into the lab's cache, not installed; QEMU itself is installed from Debian.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
from pathlib import Path

from . import packages
from .nsproc import LabError

ROOT = packages.CACHE_DIR / "vm-kernel"
QEMU_PACKAGES = ("qemu-system-x86",)
QEMU = "qemu-system-x86_64"
# Loaded in the initramfs with everything they depend on, in dependency order.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "veth", "ipvlan")
# The guest's CPU: QEMU's generic x86-64 model (SSE2, no AVX), the same on every host;
# run_script checks that the guest really sees it.
CPU = "qemu64"
CPU_MODEL = "QEMU Virtual CPU"
# cache=loose: the guest keeps what it read of the machine's files, which nothing changes while
# it runs (the script is written before the boot); every `ip` started reads its libraries once,
# not per start (measured: the ipvlan test 100 s -> 68 s).
INIT = """#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
for m in /modules/*.ko; do /bin/busybox insmod "$m" || echo "VM-ERROR insmod $m"; done
opts=trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144
/bin/busybox mount -t 9p -o $opts host /newroot || echo VM-ERROR 9p
echo "VM-INIT $1"
exec /bin/busybox switch_root /newroot "$1"
"""
# Before the script's own lines: /proc, /sys, a tmpfs /run (ip netns keeps its handles there;
# / stays read-only).
PRELUDE = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 vm-run /run
echo "VM-CPU $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
grep -qwE 'avx512f|amx_tile' /proc/cpuinfo && echo "VM-ERROR host CPU features in the guest"
"""
EPILOGUE = "\necho VM-DONE\nbusybox poweroff -f\n"


def kernel_root() -> Path:
    """The extracted kernel package (boot/vmlinuz-*, lib/modules/<version>/) and busybox."""
    if (ROOT / "boot").is_dir() and (ROOT / "bin/busybox").exists():
        return ROOT
    apt_dir = packages._suite_apt("bookworm")
    debs = packages.CACHE_DIR / "debs-vm"
    subprocess.run(["rm", "-rf", str(debs)], check=True)
    debs.mkdir(parents=True)
    # linux-image-amd64 only names the current ABI's package: read it off its Depends.
    packages._apt(apt_dir, "download", "linux-image-amd64", cwd=debs)
    meta = next(debs.glob("linux-image-amd64_*.deb"))
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(meta), "Depends"], capture_output=True, text=True, check=True
    ).stdout
    image = re.match(r"\s*(linux-image-[^\s,(]+)", depends)
    if not image:
        raise LabError(f"no kernel package in linux-image-amd64's Depends: {depends!r}")
    meta.unlink()
    packages._apt(apt_dir, "download", image.group(1), "busybox-static", cwd=debs)
    packages._extract(sorted(debs.glob("*.deb")), ROOT)
    return ROOT


def _module_files(modules_dir: Path) -> dict[str, Path]:
    return {p.name.removesuffix(".ko").replace("-", "_"): p for p in modules_dir.rglob("*.ko")}


def _depends(ko: Path) -> list[str]:
    """What a module needs loaded first: the depends= line of its .modinfo section (read from
    the file itself: this machine has no depmod or modinfo)."""
    found = re.search(rb"\x00depends=([^\x00]*)\x00", ko.read_bytes())
    names = found.group(1).decode().split(",") if found else []
    return [n.replace("-", "_") for n in names if n]


def load_order(modules_dir: Path, wanted: tuple[str, ...] = MODULES) -> list[Path]:
    files = _module_files(modules_dir)
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in files:
            raise LabError(f"module {name} not in {modules_dir}")
        for dep in _depends(files[name]):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return [files[n] for n in order]


def newc_archive(entries: list[tuple[str, int, bytes | None]]) -> bytes:
    """A cpio archive in the kernel's initramfs format (newc): (path, mode, data or None for a
    directory), parents first."""
    out = bytearray()

    def pad(n: int) -> bytes:
        return b"\0" * (-n % 4)

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, None)], start=1):
        body = data or b""
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(raw), 0)
        header = b"070701" + "".join(f"{v:08x}" for v in fields).encode()
        out += header + raw + pad(len(header) + len(raw)) + body + pad(len(body))
    return bytes(out)


def initramfs(root: Path) -> bytes:
    (modules_dir,) = sorted((root / "lib/modules").iterdir())
    entries: list[tuple[str, int, bytes | None]] = [
        (d, 0o40755, None) for d in ("bin", "dev", "proc", "sys", "newroot", "modules")
    ]
    entries.append(("bin/busybox", 0o100755, (root / "bin/busybox").read_bytes()))
    entries.append(("init", 0o100755, INIT.encode()))
    for i, ko in enumerate(load_order(modules_dir)):
        entries.append((f"modules/{i:02d}-{ko.name}", 0o100644, ko.read_bytes()))
    return gzip.compress(newc_archive(entries), compresslevel=1)


def run_script(body: str, workdir: Path, timeout: float = 600) -> str:
    """Boot the kernel with `body` (sh) as init; its output, from the line the initramfs printed
    before handing over. The timeout is only for a guest that never powers off
    (subprocess.TimeoutExpired): nothing is timed against it."""
    packages.ensure_packages(QEMU_PACKAGES)
    root = kernel_root()
    (vmlinuz,) = sorted((root / "boot").glob("vmlinuz-*"))
    initrd = workdir / "initrd.gz"
    initrd.write_bytes(initramfs(root))
    script = workdir / "vm-init.sh"
    script.write_text(PRELUDE + body + EPILOGUE)
    script.chmod(0o755)
    argv = [
        QEMU, "-machine", "q35,accel=tcg", "-cpu", CPU, "-m", "512", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", str(vmlinuz), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 quiet rdinit=/init -- {script}",
        # The machine's / for the guest's root, read-only; remap keeps inode numbers of
        # different host file systems apart.
        "-fsdev", "local,id=host,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=host,mount_tag=host",
    ]  # fmt: skip
    # Its own session, so that a timeout ends QEMU and anything it started.
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(workdir)},
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    (workdir / "vm.log").write_text(out)
    marker = f"VM-INIT {script}"
    if marker not in out or "VM-DONE" not in out or "VM-ERROR" in out:
        raise LabError(f"the VM did not run {script} to its end:\n{out[-3000:]}")
    if f"VM-CPU {CPU_MODEL}" not in out:
        raise LabError(f"the guest's CPU is not QEMU's {CPU} model:\n{out[-3000:]}")
    return out.split(marker, 1)[1]
