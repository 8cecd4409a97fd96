"""The DHCP area's exceptions: one base, so callers can catch the whole area in one place."""

from __future__ import annotations


class DhcpError(Exception):
    """Base of every DHCP error."""


class MalformedPacket(DhcpError):
    """Bytes that are not a well-formed BOOTP/DHCPv4 message; the server drops and counts them."""


class ConfigError(DhcpError):
    """A server configuration that cannot work (bad CIDR, pool outside its subnet, ...)."""
