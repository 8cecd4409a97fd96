"""Lease reuse: a renewal that the lease's last stored write already covers is answered
from that write, without writing again.

A client renews at T1 (half its lease time) and then rarely asks again for a long while;
but a boot storm, a flapping link or a client that restarts its DHCP client asks again
within seconds, and every such REQUEST would otherwise cost a durable write of the same
lease. Where the lease was written less than `threshold` × its lease time ago, the server
ACKs it with the time left until the stored expiry instead (RFC 2131 §4.3.1 leaves the
lease time to the server, and T1/T2 follow from it), so the reply promises nothing the
database does not already hold. Kea calls this lease caching (`cache-threshold`).

Pure: the DHCP server's fast path asks it about the lease its index holds for the client.
"""

from __future__ import annotations


def check_threshold(threshold: float) -> float:
    """`threshold` as a fraction of the lease time, 0 (off) up to but not including 1."""
    if not 0 <= threshold < 1:
        raise ValueError(f"lease reuse threshold must be at least 0 and below 1, "
                         f"not {threshold}")
    return threshold


def granted(expires_at: float | None, lease_time: int, threshold: float,
            now: float) -> int | None:
    """The whole seconds to grant from the stored expiry `expires_at` (POSIX seconds), or
    None if the renewal must be written: reuse off, no expiry known, a lease older than
    `threshold` × `lease_time`, one stored for longer than the subnet grants now, or less
    than a second left."""
    if threshold <= 0 or expires_at is None:
        return None
    left = expires_at - now
    if left > lease_time or lease_time - left >= threshold * lease_time:
        return None
    seconds = int(left)  # rounded down: never past the stored expiry
    return seconds if seconds >= 1 else None
