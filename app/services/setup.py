"""First-start set-up: the ledger head, the default process, the admin user, a demo subnet."""

from __future__ import annotations

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from ..extensions import db
from ..ledger import GENESIS_HASH
from ..models import LedgerHead, Subnet, User
from . import definitions, subnets
from .uow import unit_of_work

DEMO_SUBNET = {"cidr": "10.42.0.0/24", "pools": ["10.42.0.10-10.42.0.250"],
               "gateway": "10.42.0.1", "dns": ["10.42.0.1"], "lease_time": 3600,
               "name": "demo"}


def bootstrap() -> None:
    if db.session.get(LedgerHead, 1) is None:
        db.session.add(LedgerHead(id=1, seq=0, hash=GENESIS_HASH))
        db.session.commit()
    with unit_of_work():
        definitions.ensure_default()


def ensure_admin(username: str = "admin") -> str:
    from flask import current_app

    password = current_app.config["LEASEFLOW"].admin_password
    user = db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        db.session.add(User(username=username, password_hash=generate_password_hash(password),
                            role="admin"))
    else:
        user.password_hash = generate_password_hash(password)
    db.session.commit()
    return username


def seed_demo() -> str:
    bootstrap()
    exists = db.session.execute(select(Subnet).where(
        Subnet.cidr == DEMO_SUBNET["cidr"])).scalar_one_or_none()
    if exists is None:
        with unit_of_work():
            subnets.create(DEMO_SUBNET, actor="seed")
    return str(DEMO_SUBNET["cidr"])
