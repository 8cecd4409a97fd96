"""`leaseflow`: the command line (SPEC §3). Errors are one line on stderr and exit 1."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import LeaseflowError


def _app(start_background: bool = False) -> Any:
    from . import create_app

    return create_app(start_background=start_background)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from flask_migrate import upgrade

    app = _app()
    with app.app_context():
        upgrade()
        from .services import setup

        setup.bootstrap()
    print("database is up to date")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    app = _app()
    with app.app_context():
        from .services import setup

        created = setup.seed_demo()
    print(f"demo subnet {created}")
    return 0


def cmd_subnet_add(args: argparse.Namespace) -> int:
    from .services import subnets
    from .services.uow import unit_of_work

    fields: dict[str, Any] = {"cidr": args.cidr, "pools": args.pool.split(",")}
    if args.gateway:
        fields["gateway"] = args.gateway
    if args.dns:
        fields["dns"] = args.dns.split(",")
    if args.lease_time is not None:
        fields["lease_time"] = args.lease_time
    app = _app()
    with app.app_context(), unit_of_work():
        subnet = subnets.create(fields, actor="cli")
        out = subnets.describe(subnet)
    _print(out)
    return 0


def cmd_process_deploy(args: argparse.Namespace) -> int:
    from .services import definitions
    from .services.uow import unit_of_work

    data = _read(args.file)
    app = _app()
    with app.app_context(), unit_of_work():
        out = definitions.describe(definitions.upload(data, author="cli", activate=True))
    _print(out)
    return 0


def cmd_process_validate(args: argparse.Namespace) -> int:
    from .services import definitions

    app = _app()
    with app.app_context():
        report = definitions.validate(_read(args.file))
    for problem in report.problems:
        print(f"{args.file}: {problem.element_id or '-'}: {problem.code}: {problem.message}",
              file=sys.stderr)
    if report.ok:
        print(f"{args.file}: valid")
    return 0 if report.ok else 1


def cmd_process_list(args: argparse.Namespace) -> int:
    from .services import definitions

    app = _app()
    with app.app_context():
        _print(definitions.listing())
    return 0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(64 * 1024 * 1024)
    except OSError as exc:
        raise LeaseflowError(f"cannot read {path}: {exc.strerror}") from None


def cmd_lease_request(args: argparse.Namespace) -> int:
    from .services import instances, leases
    from .services.dispatch import WAITERS
    from .services.uow import unit_of_work

    app = _app(start_background=args.wait)
    with app.app_context():
        with unit_of_work():
            instance_id = instances.start_lease(
                {"subnet": args.subnet, "client_id": args.client_id,
                 "hostname": args.hostname}, actor="cli")
        if not args.wait:
            _print({"instance_id": instance_id, "state": "pending"})
            return 0
        from .extensions import db

        def settled() -> bool:
            try:
                current = instances.get(instance_id)
                if current.state in instances.FINAL:
                    return True
                return current.lease_id is not None and \
                    leases.get_lease(current.lease_id).state == "bound"
            finally:
                db.session.rollback()  # never hold a transaction while waiting

        WAITERS.wait(instance_id, settled, args.timeout)
        db.session.expire_all()
        current = instances.get(instance_id)
        if current.lease_id is not None and leases.get_lease(current.lease_id).state == "bound":
            _print(leases.describe(leases.get_lease(current.lease_id)))
            return 0
        if current.state in instances.FINAL:
            outcome = current.outcome or {}
            raise LeaseflowError(f"refused: {outcome.get('message') or outcome.get('reason')}")
        raise LeaseflowError(f"instance {instance_id} is still {current.state} "
                             f"after {args.timeout:g}s")


def cmd_lease_list(args: argparse.Namespace) -> int:
    from .services import leases

    app = _app()
    with app.app_context():
        for lease in leases.search(state=args.state, subnet=args.subnet):
            info = leases.describe(lease)
            print(f"{info['ip']:<16} {info['state']:<9} {info['client_id']:<24} "
                  f"{info['subnet']:<18} {info['expires_at'] or ''}")
    return 0


def cmd_lease_release(args: argparse.Namespace) -> int:
    from .services import instances, leases
    from .services.uow import unit_of_work

    app = _app()
    with app.app_context(), unit_of_work():
        lease = leases.find_holding(args.ip)
        if lease.instance_id is not None and \
                instances.get(lease.instance_id).state == "waiting":
            instances.send_message(lease.instance_id, "lease_release", {"by": "cli"},
                                   actor="cli")
            print(f"{args.ip}: releasing (instance {lease.instance_id})")
        else:
            leases.release(lease.id, actor="cli")
            print(f"{args.ip}: released")
    return 0


def _serve_web(app: Any, http: str) -> None:
    from werkzeug.serving import make_server

    host, _, port = http.rpartition(":")
    server = make_server(host or "127.0.0.1", int(port), app, threaded=True)
    # shutdown() waits for serve_forever() to return, so it must not run on the serving
    # thread (where the signal handler runs): hand it to a thread of its own.
    signal.signal(signal.SIGTERM,
                  lambda *a: threading.Thread(target=server.shutdown, daemon=True).start())
    server.serve_forever()


def _start_ticker(app: Any, stop: threading.Event) -> threading.Thread:
    from workers.jobs import tick

    interval = app.config["LEASEFLOW"].tick_interval

    def loop() -> None:
        while not stop.wait(interval):
            try:
                with app.app_context():
                    tick()
            except Exception:  # keep ticking; the next round retries
                logging.getLogger("leaseflow.ticker").exception("tick failed")

    thread = threading.Thread(target=loop, name="leaseflow-ticker", daemon=True)
    thread.start()
    return thread


def cmd_up(args: argparse.Namespace) -> int:
    from flask_migrate import upgrade

    from .services import setup

    app = _app(start_background=True)
    settings = app.config["LEASEFLOW"]
    with app.app_context():
        upgrade()
        setup.bootstrap()
        admin = setup.ensure_admin()
    stop = threading.Event()
    _start_ticker(app, stop)
    print(f"Leaseflow dashboard: http://{settings.http}/")
    print(f"API: http://{settings.http}/api/v1  (OpenAPI at /api/v1/openapi.json)")
    if "admin_password" in settings.generated:
        print(f"admin login: {admin} / {settings.admin_password}")
    else:
        print(f"admin login: {admin} / (LEASEFLOW_ADMIN_PASSWORD)")
    if "api_token" in settings.generated:
        print(f"API token: {settings.api_token}")
    server = None
    if settings.dhcp_interface:
        server = _start_dhcp(app, settings.dhcp_interface, settings.dhcp_port)
    sys.stdout.flush()
    try:
        _serve_web(app, settings.http)
    finally:
        stop.set()
        if server is not None:
            from .dhcp.process_backend import stop_server

            stop_server(server)
    return 0


def _start_dhcp(app: Any, interface: str, port: int, *, workers: int | None = None,
                dora: str | None = None, sock: Any = None, shard: Any = None) -> Any:
    """The DHCP server driven by the lease process; config errors are one clear line."""
    from .dhcp.process_backend import start_server

    with _dhcp_errors(interface, port):
        server = start_server(app, interface=interface, port=port, workers=workers, dora=dora,
                              sock=sock, shard=shard)
    if shard is None:
        print(f"DHCP: listening on {interface}:{port} as {server.config.server_id}",
              flush=True)
    return server


@contextlib.contextmanager
def _dhcp_errors(interface: str, port: int) -> Iterator[None]:
    from .dhcp.errors import DhcpError

    try:
        yield
    except DhcpError as exc:
        raise LeaseflowError(f"DHCP server on {interface}: {exc}") from None
    except OSError as exc:
        raise LeaseflowError(f"DHCP server on {interface}:{port}: "
                             f"{exc.strerror or exc}") from None


def cmd_dhcp(args: argparse.Namespace) -> int:
    from flask_migrate import upgrade

    from .services import setup

    # Several processes: the parent starts no thread, each child its own (see processes).
    app = _app(start_background=args.processes == 1)
    settings = app.config["LEASEFLOW"]
    with app.app_context():
        upgrade()
        setup.bootstrap()  # loads the dhcp_lease process on first start
    stop = threading.Event()
    port = args.port if args.port is not None else settings.dhcp_port
    if args.processes > 1:
        return _dhcp_processes(app, args, port, stop)
    counters = _serve_dhcp(app, args, port, stop, ready=lambda: _stop_on_signals(stop))
    print(json.dumps(counters, sort_keys=True), flush=True)
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def _serve_dhcp(app: Any, args: argparse.Namespace, port: int, stop: threading.Event, *,
                ready: Callable[[], None], sock: Any = None, shard: Any = None
                ) -> dict[str, int]:
    """One DHCP server until `stop` is set (after `ready()` once it listens); its
    counters. An embedded broker's timers tick here, in the first process of a group."""
    from .dhcp.process_backend import stop_server
    from .dhcp.server import tune_collector

    if app.config["LEASEFLOW"].embedded_broker and (shard is None or shard.index == 0):
        _start_ticker(app, stop)  # offer and lease timers (Celery workers tick otherwise)
    server = _start_dhcp(app, args.interface, port, workers=args.workers, dora=args.dora,
                         sock=sock, shard=shard)
    tune_collector()  # what start-up loaded is frozen; young objects collected less often
    ready()
    try:
        # Sleep, not stop.wait(): a handler calling set() while this thread is inside the
        # Event's own lock would deadlock; a sleeping thread holds no lock.
        while not stop.is_set():
            time.sleep(0.2)
    finally:
        stop_server(server)
    return server.counters.snapshot()


def _dhcp_processes(app: Any, args: argparse.Namespace, port: int,
                    stop: threading.Event) -> int:
    """`leaseflow dhcp --processes N`: N forked servers on one port (`app.dhcp.processes`),
    each with its own application (`_serve_dhcp` in each child)."""
    from .dhcp import processes
    from .dhcp.process_backend import server_config
    from .extensions import db

    if str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        raise LeaseflowError("--processes needs a database server that processes share: "
                             "set LEASEFLOW_DATABASE_URL to PostgreSQL")
    with _dhcp_errors(args.interface, port):
        server_id = server_config(app, interface=args.interface).server_id
    with app.app_context():
        db.engine.dispose()  # no connection of this process may be used by a child
    gc.freeze()  # what start-up loaded is shared with the children, copy-on-write

    def serve(sock: Any, shard: Any, ready: Callable[[], None],
              done: threading.Event) -> dict[str, int]:
        child = _app(start_background=True)  # its own connections and job transport
        return _serve_dhcp(child, args, port, done, ready=ready, sock=sock, shard=shard)

    def on_ready() -> None:
        print(f"DHCP: listening on {args.interface}:{port} as {server_id} "
              f"({args.processes} processes)", flush=True)

    _stop_on_signals(stop)
    with _dhcp_errors(args.interface, port):
        counters = processes.run(args.interface, port, args.processes, serve,
                                 on_ready=on_ready, stop=stop)
    print(json.dumps(counters, sort_keys=True), flush=True)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    app = _app(start_background=True)
    _serve_web(app, app.config["LEASEFLOW"].http)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.celery_app import make_celery

    app = _app()
    settings = app.config["LEASEFLOW"]
    if settings.embedded_broker:
        raise LeaseflowError("leaseflow worker needs LEASEFLOW_BROKER_URL (e.g. "
                             "redis://127.0.0.1:6379/0); the embedded default runs its worker "
                             "inside `leaseflow up`")
    from . import start_transport

    celery = make_celery(app)
    start_transport(app)  # jobs created by this worker go out through the same broker
    stop = threading.Event()
    if not args.no_ticker:
        _start_ticker(app, stop)
    argv = ["worker", "--loglevel", args.loglevel, "--pool", args.pool,
            "--concurrency", str(args.concurrency), "--without-gossip", "--without-mingle",
            "-n", args.hostname]
    celery.worker_main(argv)
    stop.set()
    return 0


def cmd_contract_build(args: argparse.Namespace) -> int:
    from .chain.build import build_artifact

    path = build_artifact()
    print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"bench.{args.name}")
    return int(module.main(args.rest) or 0)


def cmd_not_yet(args: argparse.Namespace) -> int:
    raise LeaseflowError(f"leaseflow {args.command} is not available in this version yet")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leaseflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="all-in-one: web, API, engine, worker").set_defaults(func=cmd_up)
    sub.add_parser("web", help="web UI and REST API only").set_defaults(func=cmd_web)
    w = sub.add_parser("worker", help="a Celery worker")
    w.add_argument("--pool", default="solo")
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--loglevel", default="WARNING")
    w.add_argument("--hostname", default=f"leaseflow-{os.getpid()}@%h")
    w.add_argument("--no-ticker", action="store_true")
    w.set_defaults(func=cmd_worker)
    dh = sub.add_parser("dhcp", help="the DHCPv4 server, driven by the lease process")
    dh.add_argument("--interface", required=True)
    dh.add_argument("--port", type=int, default=None, help="default LEASEFLOW_DHCP_PORT (67)")
    dh.add_argument("--workers", type=int, default=None,
                    help="threads that wait for the lease process (default 16)")
    dh.add_argument("--processes", type=_positive, default=1,
                    help="server processes sharing the port, the kernel steering each "
                         "client to one (default 1; needs PostgreSQL when more)")
    dh.add_argument("--dora", choices=["process", "fast"], default=None,
                    help="how new clients are answered (default LEASEFLOW_DHCP_DORA, "
                         "'process'): each exchange waits for its dhcp_lease instance, or "
                         "'fast': group-committed OFFER/ACK, the instance follows")
    dh.set_defaults(func=cmd_dhcp)
    for name in ("operator", "swaybar"):
        s = sub.add_parser(name, help=f"{name} (see SPEC)")
        s.add_argument("rest", nargs=argparse.REMAINDER)
        s.set_defaults(func=cmd_not_yet)
    dbp = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)
    sub.add_parser("seed", help="demo subnet and the default process").set_defaults(
        func=cmd_seed)
    sn = sub.add_parser("subnet").add_subparsers(dest="subnet_command", required=True)
    add = sn.add_parser("add", help="create a subnet")
    add.add_argument("cidr")
    add.add_argument("--pool", required=True, help="FIRST-LAST[,FIRST-LAST...]")
    add.add_argument("--gateway")
    add.add_argument("--dns")
    add.add_argument("--lease-time", type=int)
    add.set_defaults(func=cmd_subnet_add)
    pr = sub.add_parser("process").add_subparsers(dest="process_command", required=True)
    d = pr.add_parser("deploy")
    d.add_argument("file")
    d.set_defaults(func=cmd_process_deploy)
    v = pr.add_parser("validate")
    v.add_argument("file")
    v.set_defaults(func=cmd_process_validate)
    pr.add_parser("list").set_defaults(func=cmd_process_list)
    le = sub.add_parser("lease").add_subparsers(dest="lease_command", required=True)
    r = le.add_parser("request")
    r.add_argument("--subnet", required=True)
    r.add_argument("--client-id", required=True)
    r.add_argument("--hostname")
    r.add_argument("--wait", action="store_true")
    r.add_argument("--timeout", type=float, default=30.0)
    r.set_defaults(func=cmd_lease_request)
    ls = le.add_parser("list")
    ls.add_argument("--state")
    ls.add_argument("--subnet")
    ls.set_defaults(func=cmd_lease_list)
    rel = le.add_parser("release")
    rel.add_argument("ip")
    rel.set_defaults(func=cmd_lease_release)
    lg = sub.add_parser("ledger").add_subparsers(dest="ledger_command", required=True)
    lg.add_parser("verify").set_defaults(func=cmd_ledger_verify)
    lg.add_parser("anchor", help="anchor the ledger's new rows on chain now").set_defaults(
        func=cmd_ledger_anchor)
    lp = lg.add_parser("proof", help="a lease's audit rows with Merkle paths to anchors")
    lp.add_argument("ip")
    lp.set_defaults(func=cmd_ledger_proof)
    ct = sub.add_parser("contract").add_subparsers(dest="contract_command", required=True)
    ct.add_parser("build").set_defaults(func=cmd_contract_build)
    b = sub.add_parser("bench", help="benchmarks (bench/)")
    b.add_argument("name", choices=["pipeline", "engine", "chain", "dhcp", "dhcp_codec",
                                      "dhcp_process", "dhcp_groups", "lease_index"])
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return p


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from .services import ledger

    app = _app()
    with app.app_context():
        report = ledger.verify()
    _print(report)
    return 0 if report["ok"] else 1


def cmd_ledger_anchor(args: argparse.Namespace) -> int:
    from .chain import ChainError
    from .services import anchoring
    from .services.uow import unit_of_work

    app = _app()
    with app.app_context():
        try:
            with unit_of_work():
                result = anchoring.anchor_now()
        except ChainError as exc:
            print(f"leaseflow: anchoring failed: {exc}", file=sys.stderr)
            return 1
    _print(result)
    return 0


def cmd_ledger_proof(args: argparse.Namespace) -> int:
    from .services import ledger

    app = _app()
    with app.app_context():
        _print(ledger.proof(args.ip))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LeaseflowError as exc:
        print(f"leaseflow: {exc.message}", file=sys.stderr)
        for detail in exc.details:  # e.g. every problem of a BPMN upload, one per line
            if isinstance(detail, dict) and detail.get("message") not in (None, exc.message):
                print(f"  {detail.get('element') or detail.get('field') or '-'}: "
                      f"{detail['message']}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
