"""Which of a server's processes answers a datagram: by the client's hardware address.

`leaseflow dhcp --processes N` runs N server processes on one port, each with its own
`SO_REUSEPORT` socket. A client's DISCOVER and REQUEST must reach the same process, as its
offer is held in that process's memory (`app.ipam.offers.OfferBook`), so the kernel steers
by chaddr: a classic BPF program attached to the socket group (`SO_ATTACH_REUSEPORT_CBPF`)
reads the 32-bit word at chaddr[2:6] of the UDP payload and returns it modulo N, the index
of the socket in the group. The kernel delivers a broadcast to every socket of the group,
so each process keeps only what `owner` says is its own. Both compute the same function.

No I/O here: the program is returned as instructions; the socket adapter attaches it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from app.ipam.allocator import Stripe

CHADDR_WORD = 30  # BOOTP offset of chaddr (28) + 2: the bytes of a MAC that vary most
_WORD_END = CHADDR_WORD + 4
# Classic BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_ALU_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K
_RET_A = 0x16  # BPF_RET | BPF_A


@dataclass(frozen=True, slots=True)
class Shard(Stripe):
    """This process is `index` of `count` on its port; on the fast path it offers from the
    same stripe of every pool first."""

    def owns(self, datagram: bytes) -> bool:
        return owner(datagram, self.count) == self.index


def owner(datagram: bytes, count: int) -> int:
    """The index of the process that answers `datagram`, as the kernel's program picks it.

    A datagram too short to hold the word makes the program's load fail, which returns 0.
    """
    if len(datagram) < _WORD_END:
        return 0
    return int.from_bytes(datagram[CHADDR_WORD:_WORD_END], "big") % count


def program(count: int) -> list[tuple[int, int, int, int]]:
    """The steering program: (code, jt, jf, k) instructions of `struct sock_filter`."""
    if count < 1:
        raise ValueError(f"{count} sockets")
    return [(_LD_W_ABS, 0, 0, CHADDR_WORD), (_ALU_MOD_K, 0, 0, count), (_RET_A, 0, 0, 0)]


def encode_program(instructions: list[tuple[int, int, int, int]]) -> bytes:
    """The instructions as the kernel's `struct sock_filter` array."""
    return b"".join(struct.pack("=HBBI", *ins) for ins in instructions)
