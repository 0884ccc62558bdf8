"""The container image: a root filesystem holding only busybox-static, for `docker import`.

There is no image registry here, so the image is built from the Debian package.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

IMAGE = "v6gen-busybox:lab"
BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh", "sleep", "ip", "ping", "ping6", "cat", "echo", "ls", "true", "false", "ps", "kill",
    "nc", "hostname", "ifconfig", "wget", "env",
)  # fmt: skip


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def build_rootfs_tar(dest: Path) -> Path:
    """Write the image tarball once; later labs reuse it (the busybox binary rarely changes)."""
    if dest.exists() and dest.stat().st_mtime >= BUSYBOX.stat().st_mtime:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "run"):
            _dir(tar, d)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.rename(dest)
    return dest
