"""/etc/v6gen/config.yaml: optional, every key optional. Errors name the file and line."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v6gen import validate
from v6gen.errors import ConfigError

EXAMPLE_HINT = "see the Configuration section of the README, or `man v6gen`"


@dataclass(frozen=True)
class Config:
    # Interfaces v6gen may proxy on, first one the default. Empty: the IPv6 default route's.
    uplinks: tuple[str, ...] = ()
    # Docker network name -> uplink, for networks that must not use the default uplink.
    network_uplinks: Mapping[str, str] = field(default_factory=dict)
    # Uplink -> .network file, for hosts where networkd can't be asked which one it uses.
    network_files: Mapping[str, str] = field(default_factory=dict)
    include_networks: tuple[str, ...] = ()
    include_projects: tuple[str, ...] = ()
    require_opt_in: bool = False
    systemd_version: int | None = None
    proxy_delay: int | None = 0  # None keeps the kernel default (up to 0.8 s per answer)
    docker_host: str | None = None
    docker_timeout: float = 10.0
    install_hooks: bool = True

    def allowed_uplinks(self, default: str | None) -> frozenset[str]:
        """Interfaces a container label may name: only ones the admin already chose."""
        names = set(self.uplinks) | set(self.network_uplinks.values())
        if default:
            names.add(default)
        return frozenset(names)


_LIST_OF_STR = "a list of strings"
_MAP_OF_STR = "a mapping of strings to strings"


def _check(key: str, value: Any) -> Any:
    """Type-check one top-level key; return the value converted for Config."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"'{key}' must be {expected}", EXAMPLE_HINT)

    if key in ("uplinks", "include_networks", "include_projects"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(_LIST_OF_STR)
        if key == "uplinks":
            for name in value:
                _check_ifname(name)
        return tuple(value)
    if key in ("network_uplinks", "network_files"):
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise fail(_MAP_OF_STR)
        for k, v in value.items():
            _check_ifname(v if key == "network_uplinks" else k)
            if key == "network_files" and not (v.startswith("/") and v.endswith(".network")):
                raise ConfigError(
                    f"network_files: '{v}' is not an absolute path to a .network file",
                    "e.g. network_files: {eth0: /etc/systemd/network/10-eth0.network}",
                )
        return dict(value)
    if key in ("require_opt_in", "install_hooks"):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if key == "systemd_version":
        if value is not None and (type(value) is not int or value < 200):
            raise fail("a systemd major version such as 252, or null")
        return value
    if key == "proxy_delay":
        if value is not None and (type(value) is not int or not 0 <= value <= 1000):
            raise fail("a number of jiffies from 0 to 1000, or null for the kernel default")
        return value
    if key == "docker_host":
        if value is not None and not isinstance(value, str):
            raise fail("a string such as unix:///run/docker.sock, or null")
        return value
    if key == "docker_timeout":
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise fail("a positive number of seconds")
        return float(value)
    raise AssertionError(key)  # unreachable: keys are checked against the field list first


def _check_ifname(name: str) -> None:
    reason = validate.interface_name(name)
    if reason:
        raise ConfigError(f"interface name {name!r} is invalid: {reason}", EXAMPLE_HINT)


KEYS = tuple(Config.__dataclass_fields__)


def _yaml_problem(exc: Any) -> str:
    """PyYAML splits its sentence into context ("expected a single document in the stream")
    and problem ("but found another document"); either alone reads as half a sentence."""
    problem = exc.problem or str(exc)
    return f"{exc.context}, {problem}" if exc.context and problem.startswith("but ") else problem


def parse(text: str, source: str) -> Config:
    import yaml  # deferred: --help must stay fast

    loader = yaml.SafeLoader(text)
    try:
        return _parse_nodes(loader, source)
    finally:
        loader.dispose()


def _parse_nodes(loader: Any, source: str) -> Config:
    import yaml

    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(
            f"{where}: malformed YAML: {_yaml_problem(exc)}", "check indentation and quoting"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {exc}", "check the file's syntax") from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        return Config()  # an empty file (or only comments) means all defaults
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"{source}:{root.start_mark.line + 1}: the top level must be a mapping of keys",
            EXAMPLE_HINT,
        )
    loader_values: dict[str, Any] = {}
    for key_node, value_node in root.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        if not isinstance(key, str) or key not in KEYS:
            near = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(KEYS)}"
            raise ConfigError(f"{source}:{line}: unknown key {str(key)!r}", hint)
        if key in loader_values:
            raise ConfigError(f"{source}:{line}: '{key}' is given twice", "keep one of them")
        try:
            value = loader.construct_object(value_node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise ConfigError(
                f"{source}:{line}: {exc.problem}", "plain YAML only: no tags"
            ) from None
        try:
            loader_values[key] = _check(key, value)
        except ConfigError as exc:
            raise ConfigError(f"{source}:{line}: {exc.message}", exc.hint) from None
    return Config(**loader_values)


def load(path: Path, *, explicit: bool) -> Config:
    """The default path may be absent (no config is a valid setup); an explicit --config not."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"config file {path} does not exist", "check the --config path"
            ) from None
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", "check its permissions") from None
    return parse(text, str(path))
