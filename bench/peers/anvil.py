"""Start and stop a real EVM node (anvil) on a free loopback port, for tests and benchmarks.

anvil ships as a binary inside the npm package `@foundry-rs/anvil-linux-amd64`, which
`make node` (part of `make test`) installs into the repository's `node_modules/`. It runs
offline and only listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_BINARY = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"

# A block must hold a full batch of the registry (1,024 items at up to ~55 k gas each).
DEFAULT_GAS_LIMIT = 1_000_000_000
DEFAULT_CHAIN_ID = 31337


class AnvilUnavailable(RuntimeError):
    """anvil is not installed or did not come up."""


@dataclass(frozen=True, kw_only=True)
class AnvilNode:
    url: str
    port: int
    chain_id: int
    process: subprocess.Popen[bytes]


def anvil_binary() -> Path:
    if not ANVIL_BINARY.is_file():
        raise AnvilUnavailable(
            f"anvil not found at {ANVIL_BINARY.relative_to(REPO_ROOT)}: "
            "run `make node` (or `make test`, which installs it)"
        )
    return ANVIL_BINARY


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 1.0
         ) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built ourselves
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())["result"]


def start_anvil(
    *,
    gas_limit: int = DEFAULT_GAS_LIMIT,
    chain_id: int = DEFAULT_CHAIN_ID,
    deadline: float = 15.0,
    extra_args: tuple[str, ...] = (),
) -> AnvilNode:
    """Start anvil on a free 127.0.0.1 port and return once it answers JSON-RPC."""
    binary = anvil_binary()
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        process = subprocess.Popen(
            [
                str(binary), "--host", "127.0.0.1", "--port", str(port),
                "--chain-id", str(chain_id), "--gas-limit", str(gas_limit),
                "--silent", *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            if process.poll() is not None:
                break
            try:
                _rpc(url, "eth_chainId")
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                time.sleep(0.05)
                continue
            return AnvilNode(url=url, port=port, chain_id=chain_id, process=process)
        stderr = b""
        if process.poll() is None:
            stop_anvil_process(process)
            raise AnvilUnavailable(f"anvil did not answer on {url} within {deadline:g} s")
        with contextlib.suppress(Exception):
            stderr = process.stderr.read() if process.stderr else b""
        if b"in use" not in stderr.lower():
            raise AnvilUnavailable(f"anvil exited ({process.returncode}): {stderr.decode()[-500:]}")
    raise AnvilUnavailable("anvil could not bind a free port")


def stop_anvil_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stderr:
        process.stderr.close()


def stop_anvil(node: AnvilNode) -> None:
    stop_anvil_process(node.process)


@contextlib.contextmanager
def anvil(**kwargs: object) -> Iterator[AnvilNode]:
    """`with anvil() as node: ChainClient.from_url(node.url)`; always stopped afterwards."""
    node = start_anvil(**kwargs)  # type: ignore[arg-type]
    try:
        yield node
    finally:
        stop_anvil(node)
