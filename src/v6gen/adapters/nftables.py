"""The nftables table of v6gen's prefix translation (v6gen.translate), through `nft`."""

from __future__ import annotations

import shutil
import subprocess

from v6gen.errors import KernelError

_SBIN = "/usr/sbin:/sbin"  # where Debian puts nft, off a user's PATH
_TIMEOUT = 20.0  # a handful of rules; this only bounds a hang
TABLE = ("ip6", "v6gen")


class NftTranslator:
    def _nft(self) -> str:
        found = shutil.which("nft") or shutil.which("nft", path=_SBIN)
        if found is None:
            raise KernelError(
                "nft not found: a network labelled v6gen.translate=true needs it",
                "install nftables",
            )
        return found

    def present(self) -> bool:
        done = subprocess.run(
            [self._nft(), "list", "table", *TABLE],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
        return done.returncode == 0

    def load(self, ruleset: str) -> None:
        try:
            done = subprocess.run(
                [self._nft(), "-f", "-"],
                input=ruleset,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise KernelError(f"`nft -f` did not finish in {_TIMEOUT:.0f} s", "") from None
        if done.returncode != 0:
            raise KernelError(
                f"`nft -f` refused v6gen's translation table: {done.stderr.strip()}",
                "the kernel needs nf_tables with IPv6 NAT (prefix NAT: Linux 5.8 or later)",
            )
