"""Settings from the environment (`LEASEFLOW_*`, SPEC §4), with the embedded defaults.

One frozen object so every edge (web, worker, DHCP server, CLI) reads configuration the same
way; a `.env` file in the working directory is read too.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import Invalid

PREFIX = "LEASEFLOW_"


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _typed(name: str, default: object, raw: str) -> object:
    """`raw` as the type of the setting's default (a number where the default is one)."""
    if isinstance(default, int | float) and not isinstance(default, bool):
        try:
            return type(default)(raw)
        except ValueError:
            raise Invalid(f"{PREFIX}{name.upper()} must be {type(default).__name__}, "
                          f"not {raw!r}", code="invalid_setting") from None
    return raw


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = "sqlite:///instance/leaseflow.db"
    broker_url: str = "memory://"
    chain_url: str = "embedded://"
    dhcp_backend: str = "builtin"
    kea_url: str = ""
    kubeconfig: str = ""
    secret_key: str = ""
    admin_password: str = ""
    api_token: str = ""
    http: str = "127.0.0.1:8080"
    dhcp_interface: str = ""
    dhcp_port: int = 67
    # How the DHCP server answers a new client (extension of SPEC §4): "process" (each DORA
    # waits for its dhcp_lease instance) or "fast" (group-committed OFFER/ACK, the instance
    # follows; see app/services/dora.py).
    dhcp_dora: str = "process"
    # On the fast path, a renewal of a lease written less than this fraction of its lease
    # time ago is ACKed with the time left, without writing it again (app/dhcp/reuse.py;
    # Kea's cache-threshold). 0 turns it off.
    dhcp_reuse: float = 0.25
    # Engine and worker tuning (extensions of SPEC §4).
    job_timeout: float = 30.0  # a job not done by then is handed to another worker
    tick_interval: float = 1.0  # how often the ticker re-queues stale jobs and wakes timers
    local_workers: int = 1  # threads of the in-process worker (memory:// broker)
    batch_size: int = 64  # jobs per Celery message / per worker transaction
    default_lease_time: int = 3600
    # Chain and ledger (extensions of SPEC §4): the sender's key (empty: the node's first
    # unlocked account), the confirmation depth, the expected chain id (0: any), and how
    # often the ticker anchors the ledger's new rows on chain.
    chain_private_key: str = ""
    chain_confirmations: int = 0
    chain_id: int = 0
    anchor_interval: float = 60.0
    generated: tuple[str, ...] = field(default=())  # names of secrets generated this run

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = _read_dotenv(Path(".env"))
        env.update(environ if environ is not None else os.environ)
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "generated":
                continue
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _typed(f.name, f.default, raw)
        values.update(overrides)
        generated = []
        stored = _read_dotenv(SECRETS_FILE) if environ is None else {}
        for name in ("secret_key", "admin_password", "api_token"):
            if not values.get(name):
                values[name] = stored.get(PREFIX + name.upper()) or secrets.token_urlsafe(24)
                generated.append(name)
        if environ is None and any(PREFIX + n.upper() not in stored for n in generated):
            _write_secrets({n: str(values[n]) for n in generated})
        values["generated"] = tuple(generated)
        return cls(**values)  # type: ignore[arg-type]


# Secrets generated on first run are kept here (mode 0600) so that every later run, and
# every process started from the same directory, uses the same login, token and key.
SECRETS_FILE = Path("instance") / "secrets.env"


def _write_secrets(values: dict[str, str]) -> None:
    try:
        SECRETS_FILE.parent.mkdir(parents=True, exist_ok=True)
        current = _read_dotenv(SECRETS_FILE)
        current.update({PREFIX + k.upper(): v for k, v in values.items()})
        fd = os.open(SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in sorted(current.items())))
    except OSError:  # a read-only directory: the secrets live for this run only
        pass
