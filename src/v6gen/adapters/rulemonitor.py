"""Changes to the host's nftables ruleset as they happen, for `v6gen watch` to judge the path
again (`ufw reload`, `firewall-cmd --reload`, `nft -f`: no Docker event follows any of them).

`nft monitor` gets every change the kernel's nf_tables makes, and iptables-nft (ufw's, Docker's,
the admin's ip6tables rules on Debian 11 and later) is nf_tables underneath, so one process
covers all of them. Changes of set elements are left out: a dynamic set that traffic fills
would otherwise ask for a sync per packet, and the replay can't see what traffic fills anyway
(README, "What it can't judge"). ip6tables-legacy has no such notification: LegacyPoller reads
its rules every few seconds instead, and only while its kernel module holds a table.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence

LEGACY_INTERVAL = 5.0  # s: how long a change of ip6tables-legacy's rules can go unseen

# What a ruleset change looks like in `nft monitor`'s output ("add rule inet filter forward ...",
# "delete chain ...", "add table ..."); "# new generation ..." ends each transaction.
_VERBS = frozenset({"add", "delete", "replace", "insert", "flush", "reset"})
_OBJECTS = frozenset({"table", "chain", "rule", "ruleset"})
NFT_MONITOR = ("nft", "monitor")


def is_ruleset_change(line: str) -> bool:
    words = line.split(None, 2)
    return len(words) >= 2 and words[0] in _VERBS and words[1] in _OBJECTS


class RuleMonitor:
    """Calls `changed()` from its own thread after each change of tables, chains or rules;
    `why_not` says why it could not follow (no nft, not allowed), once, through `log`."""

    def __init__(
        self,
        changed: Callable[[], None],
        log: Callable[[str], None],
        argv: Sequence[str] = NFT_MONITOR,
    ) -> None:
        self._changed = changed
        self._log = log
        self._argv = list(argv)
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> bool:
        try:
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            self._log(f"{self._why()}: {exc.strerror or exc}")
            return False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return True

    def _why(self) -> str:
        return (
            f"not following firewall changes (`{' '.join(self._argv)}` did not run); a change "
            "of rules alone is judged at the next sync"
        )

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if is_ruleset_change(line):
                self._changed()
        code = proc.wait()
        if not self._closing.is_set():
            said = proc.stderr.read().strip().splitlines()
            self._log(f"{self._why()}: exit {code}" + (f": {said[-1]}" if said else ""))

    def close(self) -> None:
        self._closing.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)


class LegacyPoller:
    """Calls `changed()` when `read()` (ip6tables-legacy's rules, HostFirewalls.legacy) says
    something else than it did `interval` seconds before. One ip6tables-legacy-save process per
    interval where the legacy module holds tables (~5 ms), none where it doesn't."""

    def __init__(
        self,
        changed: Callable[[], None],
        read: Callable[[], str],
        interval: float = LEGACY_INTERVAL,
    ) -> None:
        self._changed = changed
        self._read = read
        self._interval = interval
        self._last: str | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Read once; True (and `changed()`) when the rules differ from the last read."""
        now = self._read()
        moved = self._last is not None and now != self._last
        self._last = now
        if moved:
            self._changed()
        return moved

    def start(self) -> None:
        self.poll()  # what the first sync sees: no change to report
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing.wait(self._interval):
            self.poll()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
