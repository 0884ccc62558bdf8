"""One sync at a time: sync, clean and watch serialize on an flock, which the kernel releases
when its holder dies, so a killed run can never leave a stale lock behind."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from v6gen.errors import ApplyError, LockedError


@contextmanager
def held(path: Path, timeout: float = 60.0) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ApplyError(
            f"cannot open the lock file {path}: {exc.strerror}",
            "sync, clean and watch change the host's network configuration: run them as root",
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"another v6gen has held {path} for {timeout:.0f} s",
                        "is a `v6gen sync` hanging? check `fuser -v` on the lock file",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing drops the flock
