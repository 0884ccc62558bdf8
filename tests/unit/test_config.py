from __future__ import annotations

from pathlib import Path

import pytest

from v6gen.config import Config, load, parse
from v6gen.errors import ConfigError


def test_every_key_parses() -> None:
    text = """
uplinks: [eth0, eth1]
network_uplinks: {web: eth1}
network_files: {eth0: /etc/systemd/network/10-eth0.network}
include_networks: [web, probe-network]
include_projects: [seed]
require_opt_in: true
systemd_version: 252
proxy_delay: null
docker_host: unix:///run/docker.sock
docker_timeout: 3
install_hooks: false
"""
    c = parse(text, "c.yaml")
    assert c == Config(
        uplinks=("eth0", "eth1"),
        network_uplinks={"web": "eth1"},
        network_files={"eth0": "/etc/systemd/network/10-eth0.network"},
        include_networks=("web", "probe-network"),
        include_projects=("seed",),
        require_opt_in=True,
        systemd_version=252,
        proxy_delay=None,
        docker_host="unix:///run/docker.sock",
        docker_timeout=3.0,
        install_hooks=False,
    )


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        (
            "uplinks: [eth0]\nuplink: eth0\n",
            "c.yaml:2: unknown key 'uplink'",
            "did you mean 'uplinks'?",
        ),
        ("proxy_dealy: 0\n", "c.yaml:1: unknown key 'proxy_dealy'", "did you mean 'proxy_delay'?"),
        ("uplinks:\n  - eth0\n bad", "c.yaml:3: malformed YAML", "indentation"),
        ("uplinks: eth0\n", "c.yaml:1: 'uplinks' must be a list of strings", "README"),
        ("require_opt_in: 'yes'\n", "'require_opt_in' must be true or false", ""),
        ("proxy_delay: -1\n", "'proxy_delay' must be a number of jiffies", ""),
        ("systemd_version: '252'\n", "'systemd_version' must be a systemd major version", ""),
        ("docker_timeout: 0\n", "'docker_timeout' must be a positive number", ""),
        ('uplinks: ["eth0\\n[Network]"]\n', "interface name 'eth0\\n[Network]'", ""),
        ("uplinks: [averyveryverylongname]\n", "longer than 15 characters", ""),
        ("network_files: {eth0: 10-eth0.network}\n", "not an absolute path", "network_files"),
        ("- eth0\n", "the top level must be a mapping", ""),
        ("uplinks: [a]\nuplinks: [b]\n", "c.yaml:2: 'uplinks' is given twice", ""),
        ("network_uplinks: [a]\n", "'network_uplinks' must be a mapping", ""),
    ],
)
def test_errors_name_file_line_and_hint(text: str, message: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "c.yaml")
    assert message in info.value.message
    assert hint in info.value.hint


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_config_is_all_defaults(text: str) -> None:
    assert parse(text, "c.yaml") == Config()


def test_missing_default_file_is_fine_but_explicit_one_is_not(tmp_path: Path) -> None:
    assert load(tmp_path / "nope.yaml", explicit=False) == Config()
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml", explicit=True)


def test_yaml_tags_cannot_construct_objects() -> None:
    with pytest.raises(ConfigError):
        parse("uplinks: !!python/object/apply:os.system ['true']\n", "c.yaml")


def test_allowed_uplinks_are_the_admins_choices_only() -> None:
    c = Config(uplinks=("eth0",), network_uplinks={"web": "eth1"})
    assert c.allowed_uplinks("eth2") == {"eth0", "eth1", "eth2"}
    assert Config().allowed_uplinks(None) == frozenset()
