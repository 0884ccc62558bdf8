"""What v6gen sees of the host when it runs in the container image: image/Dockerfile sets
V6GEN_HOST=/host, and README's compose snippet binds the host's /proc/sys and /etc/os-release
under it. Elsewhere V6GEN_HOST is unset and v6gen's own /proc/sys is the host's.

/proc/sys: Docker mounts a container's read-only, and runc binds nothing inside /proc; lifting
that with `security_opt: systempaths=unconfined` works for `docker run`, but Debian 12's
docker-compose 1.29 passes it on to the daemon, which refuses it. A net sysctl answers for the
network namespace of the process that opens it, whatever mount it is opened through, so the
bound tree is the host's (host network) or the replay's own namespace (v6gen.pathprobe).

os-release: the image reads the host's firewall rules with its own nft and ip6tables-save.
Measured with the bookworm image on a sid host: `nft list ruleset` by nft 1.0.6 printed an
iptables-nft table's masquerade rule without its masquerade ("XT target MASQUERADE not found"),
where sid's 1.1.7 prints it whole; ip6tables-save read the same. So a release other than the
host's is named, with the BASE that matches.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "V6GEN_HOST"
OS_RELEASE = Path("/etc/os-release")  # the image's own


def _bound(inside: str) -> Path | None:
    host = os.environ.get(ENV)
    return Path(host, inside.lstrip("/")) if host else None


def proc_sys() -> Path:
    bound = _bound("/proc/sys")
    if bound is not None and (bound / "net").is_dir():
        return bound
    return Path("/proc/sys")


def release(path: Path) -> tuple[str, str] | None:
    """(ID, VERSION_CODENAME) of an os-release file; sid's names the next release
    ("forky/sid" in PRETTY_NAME) and is called sid here, as its image is."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = dict(
        (k, v.strip().strip('"')) for k, _, v in (ln.partition("=") for ln in text.splitlines())
    )
    name = fields.get("VERSION_CODENAME") or fields.get("VERSION_ID") or "?"
    if fields.get("PRETTY_NAME", "").endswith("/sid"):
        name = "sid"
    return (fields.get("ID", "?"), name)


def release_check() -> tuple[str, str, str] | None:
    """In the image: ("ok" or "warn", message, hint) comparing its release with the host's;
    None elsewhere."""
    bound = _bound("/etc/os-release")
    if bound is None:
        return None
    image, host = release(OS_RELEASE), release(bound)
    if host is None:
        return (
            "warn",
            f"the host's os-release is not bound at {bound}",
            "bind /etc/os-release:/host/etc/os-release:ro (README, Run as a container)",
        )
    if image == host:
        return (
            "ok",
            f"{' '.join(image or ())}, as the host: its nft and ip6tables read the host's rules",
            "",
        )
    return (
        "warn",
        f"the image is {' '.join(image or ('?',))}, the host {' '.join(host)}: the image's nft and "
        "ip6tables read the host's firewall rules, and an older nft can misread newer rules",
        f"rebuild it with `--build-arg BASE={host[0]}:{host[1]}-slim` (README, Run as a container)",
    )
