# pragma version 0.4.3
"""
@title LeaseRegistry
@notice The chain-side arbiter of Leaseflow's "never two holders for one address" rule.
        A lease is keyed by (subnet, ip): `subnet` is a bytes32 id chosen by the
        writer (Leaseflow uses keccak256 of the subnet's CIDR), `ip` the IPv4 address
        as a uint32. The holder is a bytes32 id too (keccak256 of the client id), so one
        writer account can act for any number of holders.
        Batches never revert for one bad item: every item gets a reason code (0 = accepted)
        that is both returned and emitted as an event, one event per item, in item order,
        so a caller can read the outcomes from the transaction receipt.
"""

# Reason codes; keep in step with app/chain/types.py:Reason.
ACCEPTED: constant(uint8) = 0
TAKEN: constant(uint8) = 1          # held by another holder whose lease has not expired
NOT_HOLDER: constant(uint8) = 2     # release asked by someone who does not hold the lease
NOT_ALLOCATED: constant(uint8) = 3  # release of a free address
BAD_EXPIRY: constant(uint8) = 4     # allocation whose expiry is already in the past
BAD_HOLDER: constant(uint8) = 5     # the zero holder id is reserved for "free"
NOT_ADMIN: constant(uint8) = 6      # forced release by a writer without the admin role

# Batch bound: the array is copied to memory, whose cost grows with the square of the bound
# (512 keeps a full batch within a common 30 M gas block at ~52 k gas per item). The real
# limit of a batch is the block gas limit.
MAX_BATCH: constant(uint256) = 512
MAX_ANCHORS_READ: constant(uint256) = 256

VERSION: public(constant(uint256)) = 1

struct Lease:
    holder: bytes32
    expires: uint64  # unix seconds of the block clock; 0 means "until released"

struct AllocateItem:
    subnet: bytes32
    ip: uint32
    holder: bytes32
    expires: uint64

struct ReleaseItem:
    subnet: bytes32
    ip: uint32
    holder: bytes32
    force: bool  # an admin may release whatever the holder; honoured for admins only

struct Anchor:
    seq: uint256
    root: bytes32
    timestamp: uint256

event Allocated:
    subnet: indexed(bytes32)
    ip: indexed(uint32)
    holder: indexed(bytes32)
    expires: uint64
    previous: bytes32  # the expired holder replaced, the same holder on renewal, or zero

event Released:
    subnet: indexed(bytes32)
    ip: indexed(uint32)
    holder: indexed(bytes32)
    forced: bool

event Refused:
    subnet: indexed(bytes32)
    ip: indexed(uint32)
    holder: indexed(bytes32)
    reason: uint8
    release: bool  # which operation was refused

event Anchored:
    seq: indexed(uint256)
    root: bytes32

event RoleChanged:
    account: indexed(address)
    role: uint8  # 1 = writer, 2 = admin
    granted: bool

WRITER_ROLE: constant(uint8) = 1
ADMIN_ROLE: constant(uint8) = 2

leases: HashMap[bytes32, HashMap[uint32, Lease]]
is_writer: public(HashMap[address, bool])
is_admin: public(HashMap[address, bool])
anchor_count: public(uint256)
anchor_at: public(HashMap[uint256, Anchor])


@deploy
def __init__():
    self.is_admin[msg.sender] = True
    self.is_writer[msg.sender] = True
    log RoleChanged(account=msg.sender, role=ADMIN_ROLE, granted=True)
    log RoleChanged(account=msg.sender, role=WRITER_ROLE, granted=True)


# --- access control ---------------------------------------------------------------------

@external
def grant_writer(account: address):
    assert self.is_admin[msg.sender], "not admin"
    self.is_writer[account] = True
    log RoleChanged(account=account, role=WRITER_ROLE, granted=True)


@external
def revoke_writer(account: address):
    assert self.is_admin[msg.sender], "not admin"
    self.is_writer[account] = False
    log RoleChanged(account=account, role=WRITER_ROLE, granted=False)


@external
def grant_admin(account: address):
    assert self.is_admin[msg.sender], "not admin"
    self.is_admin[account] = True
    log RoleChanged(account=account, role=ADMIN_ROLE, granted=True)


@external
def revoke_admin(account: address):
    assert self.is_admin[msg.sender], "not admin"
    self.is_admin[account] = False
    log RoleChanged(account=account, role=ADMIN_ROLE, granted=False)


# --- leases -----------------------------------------------------------------------------

@internal
@view
def _check_allocate(item: AllocateItem) -> uint8:
    if item.holder == empty(bytes32):
        return BAD_HOLDER
    if item.expires != 0 and convert(item.expires, uint256) <= block.timestamp:
        return BAD_EXPIRY
    current: Lease = self.leases[item.subnet][item.ip]
    if current.holder == empty(bytes32) or current.holder == item.holder:
        return ACCEPTED
    if current.expires != 0 and convert(current.expires, uint256) <= block.timestamp:
        return ACCEPTED
    return TAKEN


@internal
def _allocate(item: AllocateItem) -> uint8:
    reason: uint8 = self._check_allocate(item)
    if reason != ACCEPTED:
        log Refused(
            subnet=item.subnet, ip=item.ip, holder=item.holder, reason=reason,
            release=False,
        )
        return reason
    previous: bytes32 = self.leases[item.subnet][item.ip].holder
    self.leases[item.subnet][item.ip] = Lease(holder=item.holder, expires=item.expires)
    log Allocated(
        subnet=item.subnet, ip=item.ip, holder=item.holder, expires=item.expires,
        previous=previous,
    )
    return ACCEPTED


@internal
def _release(item: ReleaseItem) -> uint8:
    current: Lease = self.leases[item.subnet][item.ip]
    reason: uint8 = ACCEPTED
    if item.force and not self.is_admin[msg.sender]:
        reason = NOT_ADMIN
    elif current.holder == empty(bytes32):
        reason = NOT_ALLOCATED
    elif current.holder != item.holder and not item.force:
        reason = NOT_HOLDER
    if reason != ACCEPTED:
        log Refused(
            subnet=item.subnet, ip=item.ip, holder=item.holder, reason=reason,
            release=True,
        )
        return reason
    self.leases[item.subnet][item.ip] = empty(Lease)
    log Released(
        subnet=item.subnet, ip=item.ip, holder=current.holder, forced=item.force
    )
    return ACCEPTED


@external
def allocate_batch(items: DynArray[AllocateItem, MAX_BATCH]) -> DynArray[uint8, MAX_BATCH]:
    """
    @notice Allocate each (subnet, ip) to its holder, in order; an item is refused
            (not reverted) when another live holder has it. A later item of the same batch
            sees the effect of an earlier one, so a conflicting pair gives one acceptance.
    """
    assert self.is_writer[msg.sender], "not writer"
    reasons: DynArray[uint8, MAX_BATCH] = []
    for item: AllocateItem in items:
        reasons.append(self._allocate(item))
    return reasons


@external
def release_batch(items: DynArray[ReleaseItem, MAX_BATCH]) -> DynArray[uint8, MAX_BATCH]:
    assert self.is_writer[msg.sender], "not writer"
    reasons: DynArray[uint8, MAX_BATCH] = []
    for item: ReleaseItem in items:
        reasons.append(self._release(item))
    return reasons


@external
def apply_batch(
    releases: DynArray[ReleaseItem, MAX_BATCH], allocations: DynArray[AllocateItem, MAX_BATCH]
) -> (DynArray[uint8, MAX_BATCH], DynArray[uint8, MAX_BATCH]):
    """
    @notice Releases then allocations in one transaction (what the micro-batcher sends);
            events come out in that order too.
    """
    assert self.is_writer[msg.sender], "not writer"
    assert len(releases) + len(allocations) <= MAX_BATCH, "batch too large"
    released: DynArray[uint8, MAX_BATCH] = []
    allocated: DynArray[uint8, MAX_BATCH] = []
    for item: ReleaseItem in releases:
        released.append(self._release(item))
    for item: AllocateItem in allocations:
        allocated.append(self._allocate(item))
    return released, allocated


@external
@view
def check_allocate(subnet: bytes32, ip: uint32, holder: bytes32, expires: uint64) -> uint8:
    """@notice Would this allocation be accepted now? (0 = yes, else the reason code.)"""
    return self._check_allocate(
        AllocateItem(subnet=subnet, ip=ip, holder=holder, expires=expires)
    )


@external
@view
def lease_of(subnet: bytes32, ip: uint32) -> Lease:
    """@notice The stored lease, expired or not; the zero holder means free."""
    return self.leases[subnet][ip]


# --- ledger anchors ---------------------------------------------------------------------

@external
def anchor(seq: uint256, root: bytes32):
    """
    @notice Record the Merkle root of the audit-log rows after the previous anchor's
            sequence number up to and including `seq`. Sequence numbers only grow.
    """
    assert self.is_writer[msg.sender], "not writer"
    count: uint256 = self.anchor_count
    if count > 0:
        assert seq > self.anchor_at[count - 1].seq, "anchor seq must grow"
    else:
        assert seq > 0, "anchor seq must grow"
    self.anchor_at[count] = Anchor(seq=seq, root=root, timestamp=block.timestamp)
    self.anchor_count = count + 1
    log Anchored(seq=seq, root=root)


@external
@view
def anchors_from(start: uint256) -> DynArray[Anchor, MAX_ANCHORS_READ]:
    """@notice Up to MAX_ANCHORS_READ anchors from index `start`, for paging reads."""
    result: DynArray[Anchor, MAX_ANCHORS_READ] = []
    count: uint256 = self.anchor_count
    for i: uint256 in range(start, start + MAX_ANCHORS_READ, bound=MAX_ANCHORS_READ):
        if i >= count:
            break
        result.append(self.anchor_at[i])
    return result
