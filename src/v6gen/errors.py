"""One exception family; every error carries a hint and the exit code the CLI returns."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented in the README; scripts depend on these numbers, so never renumber."""

    OK = 0
    CHANGES_PENDING = 1  # `v6gen diff`: the system is not what sync would make it
    USAGE = 2  # bad command line (click's own code)
    CONFIG = 3  # config file unreadable, malformed or with unknown keys
    DOCKER = 4  # Docker unreachable: nothing was changed
    RELOAD_PENDING = 5  # files and kernel done, networkd could not be told to reload
    UPLINK = 6  # an uplink could not be managed (missing, not managed by networkd)
    APPLY = 7  # writing files or kernel entries failed
    LOCKED = 8  # another v6gen holds the lock for too long
    FIREWALL = 9  # done, but a firewall lets the LAN reach nothing but ICMPv6 of some addresses
    HELD = 10  # done, but someone else on the LAN answers for some container addresses
    INTERNAL = 70  # a bug: rerun with --debug and report it


class V6genError(Exception):
    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(V6genError):
    exit_code = ExitCode.CONFIG


class DockerError(V6genError):
    exit_code = ExitCode.DOCKER


class NetworkdError(V6genError):
    """networkd or D-Bus could not be asked or told something."""

    exit_code = ExitCode.RELOAD_PENDING


class UplinkError(V6genError):
    exit_code = ExitCode.UPLINK


class ApplyError(V6genError):
    exit_code = ExitCode.APPLY


class KernelError(ApplyError):
    """An `ip` command failed or printed something v6gen cannot read."""


class LockedError(V6genError):
    exit_code = ExitCode.LOCKED
