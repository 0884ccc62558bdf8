"""v6gen: NDP proxying for Docker containers on public IPv6 addresses, via systemd-networkd."""

__version__ = "0.1.0"
