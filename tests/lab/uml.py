"""A User-mode Linux kernel, for the network drivers this machine's kernel lacks.

The machines this project runs on have a kernel built without CONFIG_IPVLAN and without
modules: Docker's ipvlan driver fails there ("failed to create the ipvlan port: operation not
supported"), so no lab with dockerd can hold an ipvlan container. Debian bookworm's
user-mode-linux (a 6.1 kernel that runs as a process) has ipvlan, veth and IPv6 as modules.
Booted with the machine's / as its read-only root (hostfs), it runs a shell script as init
and powers off: namespaces, veth and ipvlan links, the machine's own ip, sysctl and busybox,
and nothing written outside its own tmpfs. About a second per boot.

The package is fetched once from the machine's mirror (URI read at run time, as packages.py
does) and extracted into the lab's cache, not installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from . import packages
from .nsproc import LabError

PACKAGE = "user-mode-linux"
ROOT = packages.CACHE_DIR / "user-mode-linux"
KERNEL = "usr/bin/linux.uml"
# In load order: ipv6 needs crc-ccitt, ipvlan needs ipv6.
MODULES = (
    "kernel/lib/crc-ccitt.ko",
    "kernel/net/ipv6/ipv6.ko",
    "kernel/drivers/net/veth.ko",
    "kernel/drivers/net/ipvlan/ipvlan.ko",
)
# Before the script's own lines: /proc, /sys, a tmpfs /run (ip netns keeps its handles there;
# / stays read-only), and the modules.
PRELUDE = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 uml-run /run
for m in {modules}; do
    busybox insmod "$m" || echo "UML-ERROR insmod $m"
done
"""
EPILOGUE = "\necho UML-DONE\npoweroff -f\n"


def uml_root() -> Path:
    """The extracted package (usr/bin/linux.uml, usr/lib/uml/modules/<version>/)."""
    if (ROOT / KERNEL).exists():
        return ROOT
    apt_dir = packages._suite_apt("bookworm")
    debs = packages.CACHE_DIR / "debs-uml"
    subprocess.run(["rm", "-rf", str(debs)], check=True)
    debs.mkdir(parents=True)
    packages._apt(apt_dir, "download", PACKAGE, cwd=debs)
    packages._extract(sorted(debs.glob("*.deb")), ROOT)
    return ROOT


def modules_dir(root: Path) -> Path:
    found = sorted((root / "usr/lib/uml/modules").iterdir())
    if len(found) != 1:
        raise LabError(f"want one module tree in {root}/usr/lib/uml/modules, found {found}")
    return found[0]


def run_script(body: str, workdir: Path, timeout: float = 300) -> str:
    """Boot the kernel with `body` (sh) as init; its output, from the first line it printed.
    The timeout is only for a kernel that never powers off (subprocess.TimeoutExpired):
    nothing is timed against it."""
    root = uml_root()
    mods = " ".join(str(modules_dir(root) / m) for m in MODULES)
    script = workdir / "uml-init.sh"
    script.write_text(PRELUDE.format(modules=mods) + body + EPILOGUE)
    script.chmod(0o755)
    argv = [
        str(root / KERNEL), "mem=256M", "root=/dev/root", "rootfstype=hostfs", "rootflags=/",
        "ro", f"init={script}", "con=null", "con0=fd:0,fd:1", f"uml_dir={workdir}",
    ]  # fmt: skip
    # Its own session: the kernel runs as several processes, all ended with it.
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        # Its memory file and its run-time directory (uml_dir) go to workdir, not /tmp or ~.
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": str(workdir), "HOME": str(workdir)},
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        # The kernel's process leads the group, and is not reaped yet: the group is ours.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    (workdir / "uml.log").write_text(out)
    marker = f"Run {script} as init process"
    if marker not in out or "UML-DONE" not in out:
        raise LabError(f"User-mode Linux did not run {script} to its end:\n{out[-3000:]}")
    return out.split(marker, 1)[1]
