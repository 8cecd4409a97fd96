"""Talk to the LeaseRegistry contract on an EVM chain: embedded (py-evm) or any JSON-RPC node.

`ChainClient.from_url(url)` hides the two kinds of chain behind one object:

- `embedded://` (or `embedded://NAME`) runs py-evm in this process through eth-tester. Every
  client of one process with the same name shares one chain, so the web app and an
  in-process worker agree. The chain dies with the process.
- `http://...` / `https://...` talks JSON-RPC to a node (anvil, geth, Besu).

What the client takes care of, so callers do not: a local nonce per sender (lock-protected,
so many threads can send at once), fixed gas limits sized from the batch (estimation costs a
full extra execution), receipts with `status == 0` turned into exceptions, both revert
exception types (web3's ContractLogicError, eth-tester's TransactionFailed), a node that is
down (ChainUnavailable, transient), wrong chain id or contract address, and an optional
confirmation depth. Outcomes are read from the transaction's own receipt, never by scanning
logs from block 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests
from eth_account import Account
from eth_utils import ValidationError as EthValidationError
from eth_utils import keccak, to_checksum_address
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)

from app.chain import abi
from app.chain.artifact import Artifact, load_artifact
from app.chain.errors import (
    ChainError,
    ChainTimeout,
    ChainUnavailable,
    ContractNotFound,
    OutOfGas,
    TransactionReverted,
    Unauthorized,
    WrongChain,
)
from app.chain.types import (
    AllocateItem,
    AnchorRecord,
    Holding,
    Outcome,
    Reason,
    ReleaseItem,
    TxResult,
)

try:  # eth-tester is only there with web3[tester]; a node-only install works without it
    from eth_tester.exceptions import TransactionFailed as _TesterTransactionFailed
except ImportError:  # pragma: no cover
    class _TesterTransactionFailed(Exception):  # type: ignore[no-redef]
        pass


# Gas of one batch item, measured on the contract (fresh allocation ~ 50 k) with headroom;
# a fixed limit avoids eth_estimateGas, which costs one more full execution per transaction.
GAS_PER_ITEM = 60_000
GAS_BASE = 150_000
MAX_BATCH = 512  # the contract's DynArray bound
EMBEDDED_GAS_LIMIT = 1_000_000_000  # lets a full batch fit in one block of the embedded chain

_REVERT_TYPES: tuple[type[BaseException], ...] = (ContractLogicError, _TesterTransactionFailed)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)

_EVENT_SIGNATURES = {
    "Allocated": "Allocated(bytes32,uint32,bytes32,uint64,bytes32)",
    "Released": "Released(bytes32,uint32,bytes32,bool)",
    "Refused": "Refused(bytes32,uint32,bytes32,uint8,bool)",
}
_TOPIC = {name: keccak(text=sig) for name, sig in _EVENT_SIGNATURES.items()}


def calldata_gas(data: str | bytes) -> int:
    """The calldata part of a transaction's gas, at its dearest (EIP-7623 floor).

    Counted in because a node may accept a transaction whose limit is below its intrinsic
    gas into its pool and never mine it (anvil does), which would block the nonce.
    """
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(
        data, str) else data
    zeros = raw.count(0)
    return 10 * zeros + 40 * (len(raw) - zeros)


def _revert_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message)


def _reverted(exc: BaseException, tx_hash: str | None = None) -> TransactionReverted:
    message = _revert_message(exc)
    kind = Unauthorized if ("not writer" in message or "not admin" in message) else (
        TransactionReverted
    )
    return kind(f"contract reverted: {message}", tx_hash=tx_hash)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map web3, requests and eth-tester exceptions onto the ChainError family."""
    try:
        yield
    except ChainError:
        raise
    except _REVERT_TYPES as exc:
        raise _reverted(exc) from exc
    except _TRANSPORT_ERRORS as exc:
        raise ChainUnavailable(f"chain node unreachable during {what}: {exc}") from exc
    except TimeExhausted as exc:
        raise ChainTimeout(f"{what} timed out: {exc}") from exc
    except (Web3RPCError, EthValidationError) as exc:  # the node refused to take it
        message = str(exc).lower()
        if "insufficient funds" in message:
            raise ChainError(f"{what}: the sender cannot pay for gas: {exc}") from exc
        if "intrinsic gas" in message or "insufficient gas" in message or (
            "gas limit" in message
        ):
            raise OutOfGas(f"{what}: the node refused the gas limit: {exc}") from exc
        raise ChainError(f"{what} refused by the node: {exc}") from exc
    except Web3Exception as exc:
        raise ChainError(f"{what} failed: {exc}") from exc


class _LockedTesterProvider(EthereumTesterProvider):
    """eth-tester's provider behind a lock: py-evm state is not safe across threads."""

    def __init__(self, tester: Any) -> None:
        super().__init__(tester)
        self.lock = threading.RLock()

    def make_request(self, method: Any, params: Any) -> Any:
        with self.lock:
            return super().make_request(method, params)


_embedded_chains: dict[str, Web3] = {}
_embedded_lock = threading.Lock()


def _embedded_web3(name: str, *, fresh: bool = False) -> Web3:
    from eth_tester import EthereumTester, PyEVMBackend

    with _embedded_lock:
        if fresh or name not in _embedded_chains:
            genesis = PyEVMBackend.generate_genesis_params(
                overrides={"gas_limit": EMBEDDED_GAS_LIMIT}
            )
            tester = EthereumTester(PyEVMBackend(genesis_parameters=genesis))
            w3 = Web3(_LockedTesterProvider(tester))
            if fresh:
                return w3
            _embedded_chains[name] = w3
        return _embedded_chains[name]


@dataclass
class _Connection:
    """What sibling clients (one per sender account) share: the node and the nonces."""

    w3: Web3
    url: str
    embedded: bool
    expected_chain_id: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    nonces: dict[str, int] = field(default_factory=dict)
    nonce_locks: dict[str, threading.Lock] = field(default_factory=dict)
    chain_id: int | None = None
    block_gas_limit: int = 0
    fees: dict[str, int] = field(default_factory=dict)
    fees_at: float = 0.0

    def ready(self) -> None:
        """Check the node once (lazily, so a node that is down does not stop start-up)."""
        if self.chain_id is not None:
            return
        with self.lock:
            if self.chain_id is not None:
                return
            with _translated("connecting to the chain"):
                chain_id = self.w3.eth.chain_id
                block = self.w3.eth.get_block("latest")
            if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
                raise WrongChain(
                    f"{self.url} serves chain id {chain_id}, "
                    f"expected {self.expected_chain_id}"
                )
            self.block_gas_limit = int(block["gasLimit"])
            self.chain_id = chain_id

    def nonce_lock(self, sender: str) -> threading.Lock:
        with self.lock:
            return self.nonce_locks.setdefault(sender, threading.Lock())

    def send(self, tx: dict[str, Any], account: Any = None) -> bytes:
        """Send a filled-in transaction; its hash.

        Over HTTP this is a bare JSON-RPC request: web3's request and result formatting
        cost more than the node's own work for a large batch.
        """
        if account is not None:
            raw = account.sign_transaction(tx).raw_transaction
            if self.embedded:
                return bytes(self.w3.eth.send_raw_transaction(raw))
            return bytes.fromhex(self._rpc("eth_sendRawTransaction", ["0x" + raw.hex()])[2:])
        if self.embedded:
            return bytes(self.w3.eth.send_transaction(tx))  # type: ignore[arg-type]
        wire = {k: hex(v) if isinstance(v, int) else v for k, v in tx.items()}
        return bytes.fromhex(self._rpc("eth_sendTransaction", [wire])[2:])

    def receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        """The receipt as a plain dict (bytes and ints), or None while it is pending."""
        if self.embedded:
            try:
                got = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
            return {
                "transactionHash": bytes(got["transactionHash"]),
                "status": int(got["status"]),
                "blockNumber": int(got["blockNumber"]),
                "gasUsed": int(got["gasUsed"]),
                "contractAddress": got.get("contractAddress"),
                "logs": [
                    {"address": str(log["address"]), "topics": [bytes(t) for t in log["topics"]],
                     "data": bytes(log["data"])}
                    for log in got["logs"]
                ],
            }
        raw = self._rpc("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        if raw is None:
            return None
        return {
            "transactionHash": bytes.fromhex(raw["transactionHash"][2:]),
            "status": int(raw["status"], 16),
            "blockNumber": int(raw["blockNumber"], 16),
            "gasUsed": int(raw["gasUsed"], 16),
            "contractAddress": raw.get("contractAddress"),
            "logs": [
                {"address": log["address"], "topics": [bytes.fromhex(t[2:]) for t in log["topics"]],
                 "data": bytes.fromhex(log["data"][2:])}
                for log in raw["logs"]
            ],
        }

    def _rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        error = response.get("error")
        if error:
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            if "revert" in message.lower():
                raise ContractLogicError(message)
            raise Web3RPCError(f"{method}: {message}")
        return response.get("result")

    def fee_fields(self) -> dict[str, int]:
        """Fee fields for a transaction, refreshed at most once a second.

        EIP-1559 chains: a max fee of twice the base fee plus the node's suggested tip
        rides out rising base fees while paying only base fee + tip. (Paying twice
        `eth_gasPrice` instead feeds back: anvil quotes from recent prices and the price
        doubles with every transaction.) Chains without a base fee get a legacy price.
        """
        now = time.monotonic()
        if now - self.fees_at > 1.0:
            with _translated("reading fees"):
                base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
                if base_fee is None:
                    self.fees = {"gasPrice": int(self.w3.eth.gas_price)}
                else:
                    try:
                        tip = int(self.w3.eth.max_priority_fee)
                    except (Web3RPCError, ValueError):  # node without the method
                        tip = 0
                    self.fees = {
                        "maxFeePerGas": 2 * int(base_fee) + tip,
                        "maxPriorityFeePerGas": tip,
                    }
            self.fees_at = now
        return self.fees


class ChainClient:
    """One sender account on one chain. Thread-safe."""

    def __init__(
        self,
        connection: _Connection,
        *,
        sender: str | None = None,
        private_key: str | None = None,
        confirmations: int = 0,
        timeout: float = 30.0,
        poll_interval: float = 0.05,
    ) -> None:
        self._conn = connection
        self._account = Account.from_key(private_key) if private_key else None
        self._sender = (
            self._account.address if self._account else
            (to_checksum_address(sender) if sender else None)
        )
        self.confirmations = confirmations
        self.timeout = timeout
        self.poll_interval = poll_interval

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        private_key: str | None = None,
        chain_id: int | None = None,
        confirmations: int = 0,
        timeout: float = 30.0,
    ) -> ChainClient:
        """A client for `embedded://[NAME]` or `http(s)://host:port`.

        Without `private_key` the node's first unlocked account sends (eth-tester and
        anvil have funded unlocked accounts); with one, transactions are signed here.
        `chain_id`, when given, must match the node's (else WrongChain on first use).
        `confirmations` is the depth a receipt must reach before it counts.
        """
        parsed = urlparse(url)
        if parsed.scheme == "embedded":
            name = parsed.netloc or parsed.path.strip("/") or "default"
            w3 = _embedded_web3(name)
            conn = _Connection(w3=w3, url=url, embedded=True, expected_chain_id=chain_id)
        elif parsed.scheme in ("http", "https"):
            provider = Web3.HTTPProvider(
                url,
                request_kwargs={"timeout": timeout},
                # fail fast: the caller's retry policy decides about retrying
                exception_retry_configuration=None,
            )
            conn = _Connection(
                w3=Web3(provider), url=url, embedded=False, expected_chain_id=chain_id
            )
        else:
            raise ChainError(f"unsupported chain URL {url!r}: use embedded:// or http(s)://")
        return cls(
            conn, private_key=private_key, confirmations=confirmations, timeout=timeout
        )

    @classmethod
    def embedded_fresh(cls) -> ChainClient:
        """A client on a brand-new private embedded chain (tests, benchmarks)."""
        conn = _Connection(
            w3=_embedded_web3("", fresh=True), url="embedded://", embedded=True,
            expected_chain_id=None,
        )
        return cls(conn)

    def for_account(self, account: str | None = None, *, private_key: str | None = None
                    ) -> ChainClient:
        """A sibling client on the same node (shared nonces) sending from another account."""
        return ChainClient(
            self._conn, sender=account, private_key=private_key,
            confirmations=self.confirmations, timeout=self.timeout,
            poll_interval=self.poll_interval,
        )

    # --- facts --------------------------------------------------------------------------

    @property
    def w3(self) -> Web3:
        return self._conn.w3

    @property
    def url(self) -> str:
        return self._conn.url

    @property
    def embedded(self) -> bool:
        return self._conn.embedded

    @property
    def chain_id(self) -> int:
        self._conn.ready()
        assert self._conn.chain_id is not None
        return self._conn.chain_id

    @property
    def block_gas_limit(self) -> int:
        self._conn.ready()
        return self._conn.block_gas_limit

    @property
    def sender(self) -> str:
        if self._sender is None:
            self._conn.ready()
            with _translated("listing accounts"):
                accounts = self.w3.eth.accounts
            if not accounts:
                raise ChainError(
                    f"{self.url} has no unlocked account: configure a private key"
                )
            self._sender = to_checksum_address(accounts[0])
        return self._sender

    def accounts(self) -> list[str]:
        """The node's unlocked accounts (dev chains), e.g. to test access control."""
        with _translated("listing accounts"):
            return [to_checksum_address(a) for a in self.w3.eth.accounts]

    def block_number(self) -> int:
        with _translated("reading the block number"):
            return int(self.w3.eth.block_number)

    def block_timestamp(self) -> int:
        with _translated("reading the latest block"):
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance_time(self, seconds: int) -> int:
        """Move a development chain's clock forward and mine a block; the new timestamp.

        For tests of expiry: eth-tester's `time_travel`, or anvil's `evm_increaseTime`.
        """
        with _translated("advancing the chain clock"):
            if self.embedded:
                tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
                target = self.block_timestamp() + seconds
                with self.w3.provider.lock:  # type: ignore[attr-defined]
                    tester.time_travel(target)
                    tester.mine_blocks(1)
            else:
                self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
                self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        return self.block_timestamp()

    # --- the registry -------------------------------------------------------------------

    def deploy(self, artifact: Artifact | None = None) -> str:
        """Deploy a new LeaseRegistry (the sender becomes admin and writer); its address."""
        artifact = artifact or load_artifact()
        data = artifact.bytecode
        gas = min(self.block_gas_limit, 5_000_000)
        receipt = self._transact(None, data, gas=gas, what="deploying LeaseRegistry")
        address = receipt["contractAddress"]
        if not address:
            raise ChainError("deployment receipt names no contract address")
        return to_checksum_address(address)

    def registry(
        self,
        address: str | None = None,
        *,
        on_deploy: Callable[[str], None] | None = None,
    ) -> Registry:
        """The registry at `address`, deploying one first when there is none.

        With no address, a new contract is deployed and `on_deploy(address)` is called so
        the caller can persist it. On the embedded chain, which starts empty with every
        process, an address without code is deployed again (the same sender's first
        deployment gets the same address each time). On a node, an address without a
        LeaseRegistry raises ContractNotFound.
        """
        artifact = load_artifact()
        self._conn.ready()
        if address is not None:
            address = to_checksum_address(address)
            with _translated("reading contract code"):
                code = self.w3.eth.get_code(address)  # type: ignore[arg-type]
            if len(code) == 0 and not self.embedded:
                raise ContractNotFound(f"no contract at {address} on {self.url}")
            if len(code) > 0:
                registry = Registry(self, address, artifact)
                registry.check()
                return registry
        deployed = self.deploy(artifact)
        if on_deploy is not None:
            on_deploy(deployed)
        return Registry(self, deployed, artifact)

    # --- transactions -------------------------------------------------------------------

    def _next_nonce(self, sender: str, *, resync: bool = False) -> int:
        nonces = self._conn.nonces
        if resync or sender not in nonces:
            with _translated("reading the nonce"):
                nonces[sender] = int(self.w3.eth.get_transaction_count(sender, "pending"))  # type: ignore[arg-type]
        nonce = nonces[sender]
        nonces[sender] = nonce + 1
        return nonce

    def _send(self, tx: dict[str, Any]) -> bytes:
        """Assign a nonce and send; retried once with a fresh nonce if the node disagrees."""
        sender = self.sender
        lock = self._conn.nonce_lock(sender)
        for attempt in range(2):
            with lock:
                tx["nonce"] = self._next_nonce(sender, resync=attempt > 0)
                try:
                    return self._conn.send(tx, self._account)
                except Web3RPCError as exc:
                    message = str(exc).lower()
                    if attempt == 0 and "nonce" in message:
                        continue
                    # the nonce was not consumed: give it back for the next sender
                    self._conn.nonces.pop(sender, None)
                    raise
                except _REVERT_TYPES:
                    # eth-tester executes on send, so a revert consumed no nonce
                    self._conn.nonces.pop(sender, None)
                    raise
                except BaseException:
                    self._conn.nonces.pop(sender, None)
                    raise
        raise ChainError("could not find a usable nonce")  # pragma: no cover

    def _transact(
        self, to: str | None, data: str | bytes, *, gas: int, what: str
    ) -> dict[str, Any]:
        """Send one transaction and return its receipt (status 1, confirmed as configured)."""
        self._conn.ready()
        tx: dict[str, Any] = {
            "from": self.sender,
            "data": data if isinstance(data, str) else "0x" + data.hex(),
            "gas": gas,
            "chainId": self._conn.chain_id,
            **self._conn.fee_fields(),
        }
        if to is not None:
            tx["to"] = to
        with _translated(what):
            tx_hash = self._send(tx)
            receipt = self._wait_for_receipt(tx_hash)
        if receipt["status"] != 1:
            self._raise_failed(tx, receipt, what)
        return receipt

    def _wait_for_receipt(self, tx_hash: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        receipt = self._conn.receipt(tx_hash)
        pause = 0.001  # an automining node answers within a millisecond or two
        while receipt is None:
            if time.monotonic() > deadline:
                raise ChainTimeout(f"no receipt for 0x{tx_hash.hex()} within {self.timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 2, self.poll_interval)
            receipt = self._conn.receipt(tx_hash)
        if self.confirmations <= 0:
            return receipt
        # Reorg-free depth: wait for N blocks on top, then read the receipt again in case
        # the transaction moved to another block.
        while self.w3.eth.block_number < receipt["blockNumber"] + self.confirmations:
            if time.monotonic() > deadline:
                raise ChainTimeout(
                    f"0x{tx_hash.hex()} did not reach {self.confirmations} confirmations "
                    f"within {self.timeout:g} s"
                )
            time.sleep(self.poll_interval)
        return self._wait_for_receipt_again(tx_hash, receipt)

    def _wait_for_receipt_again(self, tx_hash: bytes, first: Any) -> dict[str, Any]:
        receipt = self._conn.receipt(tx_hash)
        if receipt is None:
            raise ChainTimeout(f"0x{tx_hash.hex()} was dropped by a reorganisation")
        return receipt

    def _raise_failed(self, tx: dict[str, Any], receipt: dict[str, Any], what: str) -> None:
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        if receipt["gasUsed"] >= tx["gas"]:
            raise OutOfGas(
                f"{what}: out of gas ({receipt['gasUsed']} of {tx['gas']}); "
                "send a smaller batch", tx_hash=tx_hash,
            )
        # Replay as a call to learn the revert reason: the receipt does not carry it.
        call = {k: tx[k] for k in ("from", "to", "data", "gas") if k in tx}
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)  # type: ignore[arg-type]
        except _REVERT_TYPES as exc:
            raise _reverted(exc, tx_hash) from exc
        except Exception:  # noqa: S110 - the replay is only for a better message
            pass
        raise TransactionReverted(f"{what}: transaction {tx_hash} reverted", tx_hash=tx_hash)

    def call(self, to: str, data: str, *, what: str) -> bytes:
        self._conn.ready()
        with _translated(what):
            return bytes(self.w3.eth.call({"from": self.sender, "to": to, "data": data}))  # type: ignore[typeddict-item]


class Registry:
    """The LeaseRegistry contract at one address, as seen by one client (one sender)."""

    def __init__(self, client: ChainClient, address: str, artifact: Artifact | None = None
                 ) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.artifact = artifact or load_artifact()
        self._contract = client.w3.eth.contract(address=self.address, abi=self.artifact.abi)

    def as_sender(self, client: ChainClient) -> Registry:
        """The same contract used from another client (another sender)."""
        return Registry(client, self.address, self.artifact)

    @property
    def max_batch(self) -> int:
        """Items per transaction that fit the block gas limit and the contract's bound."""
        fit = (self.client.block_gas_limit - GAS_BASE) // GAS_PER_ITEM
        return max(1, min(MAX_BATCH, fit))

    def check(self) -> None:
        """Fail with ContractNotFound unless a LeaseRegistry answers at the address."""
        try:
            version = self._call("VERSION")
        except (ChainUnavailable, WrongChain):
            raise
        except (ChainError, ValueError, TypeError) as exc:  # garbage answer: another contract
            raise ContractNotFound(
                f"{self.address} on {self.client.url} is not a LeaseRegistry: {exc}"
            ) from exc
        if version != 1:
            raise ContractNotFound(f"{self.address} is LeaseRegistry version {version}, not 1")

    # --- plumbing -----------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        fn = getattr(self._contract.functions, name)(*args)
        with _translated(f"calling {name}"):
            return fn.call({"from": self.client.sender})

    def _transact(self, name: str, *args: Any, items: int = 0) -> dict[str, Any]:
        data = getattr(self._contract.functions, name)(*args)._encode_transaction_data()
        return self._transact_data(name, data, items=items)

    def _transact_data(self, name: str, data: str | bytes, *, items: int) -> dict[str, Any]:
        gas = min(
            GAS_BASE + GAS_PER_ITEM * items + calldata_gas(data), self.client.block_gas_limit
        )
        return self.client._transact(self.address, data, gas=gas, what=name)

    def _outcomes(
        self, receipt: dict[str, Any], items: Sequence[AllocateItem | ReleaseItem]
    ) -> list[Outcome]:
        """One outcome per item, from the receipt's logs (one log per item, in order)."""
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        block = int(receipt["blockNumber"])
        address = self.address.lower()
        logs = [
            log for log in receipt["logs"]
            if str(log["address"]).lower() == address
            and bytes(log["topics"][0]) in (_TOPIC["Allocated"], _TOPIC["Released"],
                                           _TOPIC["Refused"])
        ]
        if len(logs) != len(items):
            raise ChainError(
                f"receipt {tx_hash} has {len(logs)} lease events for {len(items)} items"
            )
        outcomes = []
        for item, log in zip(items, logs, strict=True):
            topics = [bytes(t) for t in log["topics"]]
            if topics[1] != item.subnet or int.from_bytes(topics[2], "big") != item.ip:
                raise ChainError(f"receipt {tx_hash}: events out of step with the items")
            if topics[0] == _TOPIC["Refused"]:
                reason = Reason(int.from_bytes(bytes(log["data"])[:32], "big"))
            else:
                reason = Reason.ACCEPTED
            outcomes.append(
                Outcome(item=item, reason=reason, tx_hash=tx_hash, block_number=block)
            )
        return outcomes

    def _chunks(self, items: Sequence[Any]) -> Iterator[Sequence[Any]]:
        size = self.max_batch
        for start in range(0, len(items), size):
            yield items[start:start + size]

    # --- leases -------------------------------------------------------------------------

    def allocate_batch(self, items: Sequence[AllocateItem]) -> list[Outcome]:
        """Allocate in one transaction per `max_batch` items; one outcome per item, in order.

        A refused item does not fail the batch; a failure of the whole transaction (node
        down, not a writer, out of gas) raises a ChainError.
        """
        outcomes: list[Outcome] = []
        for chunk in self._chunks(items):
            receipt = self._transact_data(
                "allocate_batch", abi.encode_allocate_batch(chunk), items=len(chunk)
            )
            outcomes.extend(self._outcomes(receipt, chunk))
        return outcomes

    def release_batch(self, items: Sequence[ReleaseItem]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for chunk in self._chunks(items):
            receipt = self._transact_data(
                "release_batch", abi.encode_release_batch(chunk), items=len(chunk)
            )
            outcomes.extend(self._outcomes(receipt, chunk))
        return outcomes

    def apply_batch(
        self, releases: Sequence[ReleaseItem], allocations: Sequence[AllocateItem]
    ) -> tuple[list[Outcome], list[Outcome]]:
        """Releases then allocations in ONE transaction (what the micro-batcher sends)."""
        if not releases:
            return [], self.allocate_batch(allocations)
        if not allocations:
            return self.release_batch(releases), []
        if len(releases) + len(allocations) > self.max_batch:
            return self.release_batch(releases), self.allocate_batch(allocations)
        receipt = self._transact_data(
            "apply_batch", abi.encode_apply_batch(releases, allocations),
            items=len(releases) + len(allocations),
        )
        outcomes = self._outcomes(receipt, [*releases, *allocations])
        return outcomes[:len(releases)], outcomes[len(releases):]

    def allocate(self, item: AllocateItem) -> Outcome:
        return self.allocate_batch([item])[0]

    def release(self, item: ReleaseItem) -> Outcome:
        return self.release_batch([item])[0]

    def validate(self, item: AllocateItem) -> Outcome:
        """Would this allocation be accepted now? A read (eth_call), no transaction."""
        code = self._call("check_allocate", item.subnet, item.ip, item.holder, item.expires)
        return Outcome(item=item, reason=Reason(code))

    def validate_batch(self, items: Sequence[AllocateItem]) -> list[Outcome]:
        """Dry run of `allocate_batch` (eth_call): conflicts inside the batch count too."""
        outcomes: list[Outcome] = []
        for chunk in self._chunks(items):
            codes = self._call("allocate_batch", [i.as_abi() for i in chunk])
            outcomes.extend(
                Outcome(item=i, reason=Reason(c)) for i, c in zip(chunk, codes, strict=True)
            )
        return outcomes

    def holder_of(self, subnet: bytes, ip: int) -> Holding | None:
        """The stored lease of (subnet, ip), expired or not; None when free."""
        holder, expires = self._call("lease_of", subnet, ip)
        if bytes(holder) == bytes(32):
            return None
        return Holding(holder=bytes(holder), expires=int(expires))

    # --- anchors ------------------------------------------------------------------------

    def anchor(self, seq: int, root: bytes | str) -> TxResult:
        """Record a ledger anchor: the Merkle root of the rows after the last anchor to seq."""
        root_bytes = bytes.fromhex(root.removeprefix("0x")) if isinstance(root, str) else root
        if len(root_bytes) != 32:
            raise ValueError("an anchor root is 32 bytes")
        receipt = self._transact("anchor", seq, root_bytes, items=1)
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )

    def anchor_count(self) -> int:
        return int(self._call("anchor_count"))

    def anchors(self, start: int = 0) -> list[AnchorRecord]:
        """Every anchor from index `start`, oldest first (paged reads, no log scans)."""
        result: list[AnchorRecord] = []
        while True:
            page = self._call("anchors_from", start + len(result))
            result.extend(
                AnchorRecord(seq=int(s), root=bytes(r), timestamp=int(t)) for s, r, t in page
            )
            if len(page) < 256:
                return result

    def last_anchor(self) -> AnchorRecord | None:
        count = self.anchor_count()
        if count == 0:
            return None
        seq, root, timestamp = self._call("anchor_at", count - 1)
        return AnchorRecord(seq=int(seq), root=bytes(root), timestamp=int(timestamp))

    # --- roles --------------------------------------------------------------------------

    def grant_writer(self, account: str) -> None:
        self._transact("grant_writer", to_checksum_address(account), items=1)

    def revoke_writer(self, account: str) -> None:
        self._transact("revoke_writer", to_checksum_address(account), items=1)

    def grant_admin(self, account: str) -> None:
        self._transact("grant_admin", to_checksum_address(account), items=1)

    def revoke_admin(self, account: str) -> None:
        self._transact("revoke_admin", to_checksum_address(account), items=1)

    def is_writer(self, account: str) -> bool:
        return bool(self._call("is_writer", to_checksum_address(account)))

    def is_admin(self, account: str) -> bool:
        return bool(self._call("is_admin", to_checksum_address(account)))
