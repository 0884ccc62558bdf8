"""Real implementations of the ports in v6gen.ports."""
