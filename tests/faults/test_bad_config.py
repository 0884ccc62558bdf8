"""Bad /etc/v6gen/config.yaml, end to end through the CLI: exit 3, `error: FILE:LINE: ...` plus a
hint, and not one byte or kernel entry changed. Empty configs are valid and mean the defaults."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from .inproc import CliHost
from .replay import DockerReplay, body, container
from .tree import changed

GOOD = container("good", "2001:db8::a:1")
CONFIG = "etc/v6gen/config.yaml"
TYPES = "see the Configuration section of the README, or `man v6gen`"
YAML = "check indentation and quoting"


@dataclass(frozen=True)
class Bad:
    id: str
    text: bytes
    message: str  # after "error: FILE"
    hint: str


BAD = [
    Bad(
        "unclosed-list", b"uplinks: [uplink0\nproxy_delay: 0\n",
        ":2: malformed YAML: expected ',' or ']', but got ':'", YAML,
    ),
    Bad(
        "bad-indentation", b"uplinks:\n  - uplink0\n network_files: {}\n",
        ":3: malformed YAML: expected <block end>, but found '<block mapping start>'", YAML,
    ),
    Bad(
        "tab", b"proxy_delay: 0\n\tuplinks: []\n",
        ":2: malformed YAML: found character '\\t' that cannot start any token", YAML,
    ),
    Bad(
        "undefined-alias", b"uplinks: [uplink0]\nnetwork_uplinks: *nets\n",
        ":2: malformed YAML: found undefined alias 'nets'", YAML,
    ),
    Bad(
        "two-documents", b"uplinks: [uplink0]\n---\nproxy_delay: 0\n",
        ":2: malformed YAML: expected a single document in the stream, but found another document",
        YAML,
    ),
    Bad(
        "unknown-key", b"uplinks: [uplink0]\nproxy_delay: 0\nproxy_dealy: 0\n",
        ":3: unknown key 'proxy_dealy'", "did you mean 'proxy_delay'?",
    ),
    Bad(
        "duplicate-key", b"proxy_delay: 0\nuplinks: [uplink0]\nproxy_delay: 1\n",
        ":3: 'proxy_delay' is given twice", "keep one of them",
    ),
    Bad(
        "python-tag", b"uplinks: !!python/object/apply:os.system [touch /tmp/pwned]\n",
        ":1: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
        "plain YAML only: no tags",
    ),
    Bad("top-level-list", b"- uplink0\n", ":1: the top level must be a mapping of keys", TYPES),
    Bad(
        "uplinks-a-string", b"uplinks: uplink0\n",
        ":1: 'uplinks' must be a list of strings", TYPES,
    ),
    Bad("uplinks-numbers", b"uplinks: [1]\n", ":1: 'uplinks' must be a list of strings", TYPES),
    Bad(
        "uplink-name-injection", b'uplinks: ["up0\\n[Network]"]\n',
        ":1: interface name 'up0\\n[Network]' is invalid: must be 1-15 of A-Z a-z 0-9 _ . + - "
        "and start with a letter or digit",
        TYPES,
    ),
    Bad(
        "uplink-name-too-long", b"uplinks: [uplink0123456789]\n",
        ":1: interface name 'uplink0123456789' is invalid: longer than 15 characters", TYPES,
    ),
    Bad(
        "network-uplink-space", b"proxy_delay: 0\nnetwork_uplinks: {app_net: 'eth0 '}\n",
        ":2: interface name 'eth0 ' is invalid: must be 1-15 of A-Z a-z 0-9 _ . + - and start "
        "with a letter or digit",
        TYPES,
    ),
    Bad(
        "network-uplinks-a-list", b"network_uplinks: [uplink0]\n",
        ":1: 'network_uplinks' must be a mapping of strings to strings", TYPES,
    ),
    Bad(
        "network-file-relative", b"network_files: {uplink0: 10-uplink0.network}\n",
        ":1: network_files: '10-uplink0.network' is not an absolute path to a .network file",
        "e.g. network_files: {eth0: /etc/systemd/network/10-eth0.network}",
    ),
    Bad(
        "proxy-delay-a-word", b"proxy_delay: fast\n",
        ":1: 'proxy_delay' must be a number of jiffies from 0 to 1000, or null for the kernel "
        "default",
        TYPES,
    ),
    Bad(
        "proxy-delay-too-big", b"proxy_delay: 1001\n",
        ":1: 'proxy_delay' must be a number of jiffies from 0 to 1000, or null for the kernel "
        "default",
        TYPES,
    ),
    Bad(
        "opt-in-quoted", b"require_opt_in: 'yes'\n",
        ":1: 'require_opt_in' must be true or false", TYPES,
    ),
    Bad(
        "timeout-zero", b"docker_timeout: 0\n",
        ":1: 'docker_timeout' must be a positive number of seconds", TYPES,
    ),
    Bad(
        "timeout-bool", b"docker_timeout: true\n",
        ":1: 'docker_timeout' must be a positive number of seconds", TYPES,
    ),
    Bad(
        "systemd-version-old", b"systemd_version: 199\n",
        ":1: 'systemd_version' must be a systemd major version such as 252, or null", TYPES,
    ),
]  # fmt: skip


def _baseline(host: CliHost, replay: DockerReplay) -> None:
    replay.containers = body([GOOD])
    assert host.run("sync").code == 0


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_config_is_refused_and_changes_nothing(
    host: CliHost, replay: DockerReplay, case: Bad
) -> None:
    _baseline(host, replay)
    path = host.write(CONFIG, case.text)
    before, kernel = host.snapshot(), host.kernel_view()
    r = host.run("sync")
    assert (r.code, r.out, r.err) == (3, "", f"error: {path}{case.message}\nhint: {case.hint}\n")
    assert changed(before, host.snapshot()) == {}
    assert host.kernel_view() == kernel


@pytest.mark.parametrize("command", ["clean", "diff", "status", "doctor"])
def test_every_command_refuses_a_bad_config(
    host: CliHost, replay: DockerReplay, command: str
) -> None:
    _baseline(host, replay)
    path = host.write(CONFIG, b"uplinks: [uplink0\n")
    before, kernel = host.snapshot(), host.kernel_view()
    r = host.run(command)
    assert r.code == 3 and r.out == ""
    assert r.err.startswith(f"error: {path}:2: malformed YAML: ")
    assert changed(before, host.snapshot()) == {}
    assert host.kernel_view() == kernel


def test_unreadable_config_bytes(host: CliHost, replay: DockerReplay) -> None:
    _baseline(host, replay)
    path = host.write(CONFIG, b"uplinks: [\xff]\n")
    before = host.snapshot()
    r = host.run("sync")
    assert (r.code, r.out) == (3, "")
    assert r.err == (
        f"error: cannot read {path}: 'utf-8' codec can't decode byte 0xff in position 10: "
        "invalid start byte\nhint: check its permissions\n"
    )
    assert changed(before, host.snapshot()) == {}


def test_config_path_that_is_a_directory(host: CliHost, replay: DockerReplay) -> None:
    _baseline(host, replay)
    path = host.root / CONFIG
    path.mkdir(parents=True)
    r = host.run("sync")
    assert (r.code, r.out) == (3, "")
    assert r.err == (
        f"error: cannot read {path}: [Errno 21] Is a directory: '{path}'\n"
        "hint: check its permissions\n"
    )


def test_explicit_config_that_does_not_exist(host: CliHost, replay: DockerReplay) -> None:
    _baseline(host, replay)
    before = host.snapshot()
    missing = host.root / "nowhere.yaml"
    r = host.run("sync", "--config", str(missing))
    assert (r.code, r.out) == (3, "")
    assert r.err == f"error: config file {missing} does not exist\nhint: check the --config path\n"
    assert changed(before, host.snapshot()) == {}


@pytest.mark.parametrize(
    "text",
    [b"", b"# nothing configured yet\n\n", b"---\n", b"null\n", b"~\n"],
    ids=["empty", "comments", "document-marker", "null", "tilde"],
)
def test_empty_config_means_the_defaults(host: CliHost, replay: DockerReplay, text: bytes) -> None:
    """No config at all and an empty one must give byte-identical results."""
    _baseline(host, replay)  # without a config file
    host.write(CONFIG, text)
    before, kernel = host.snapshot(), host.kernel_view()
    r = host.run("sync")
    assert (r.code, r.err) == (0, "")
    assert r.out == "up to date: 1 address on 1 uplink, nothing changed\n"
    assert changed(before, host.snapshot()) == {}
    assert host.kernel_view() == kernel
