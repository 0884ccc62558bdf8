"""Where the running kernel's sysctls are written: /proc/sys, or the host's /proc/sys bound
elsewhere when V6GEN_PROC_SYS names it (image/Dockerfile). Docker mounts a container's
/proc/sys read-only, and runc binds nothing inside /proc; lifting that with `security_opt:
systempaths=unconfined` works for `docker run` but Debian 12's docker-compose 1.29 passes it to
the daemon, which refuses it. Net sysctls answer for the network namespace of the process that
opens them, whichever mount it opens them through, so the bound tree is the host's (host
network) or the replay's own namespace (v6gen.pathprobe)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "V6GEN_PROC_SYS"


def path() -> Path:
    bound = os.environ.get(ENV)
    if bound and Path(bound, "net").is_dir():
        return Path(bound)
    return Path("/proc/sys")
