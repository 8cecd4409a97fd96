"""Launchers for the real peers that tests and benchmarks run against (network namespaces,
Kea, perfdhcp, DHCP clients, anvil). Shared by `tests/` and `bench/` so both measure and
check against the same set-ups."""
