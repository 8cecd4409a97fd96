"""The browser UI: login, the live address dashboard and the manual-retry inbox.

Server-rendered (Jinja2) so it works without a front-end build; every form carries a CSRF
token (Flask-WTF) and every action checks the user's role like the API does.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, session, url_for
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select
from werkzeug.security import check_password_hash

from ..errors import LeaseflowError
from ..extensions import db
from ..models import User
from ..services import instances, leases, subnets
from ..services.uow import unit_of_work
from .auth import ROLES, actor, require

bp = Blueprint("ui", __name__)


@bp.app_context_processor
def _inject() -> dict[str, Any]:
    return {"csrf_token": generate_csrf, "user": session.get("user")}


@bp.get("/login")
def login_form() -> str:
    return render_template("login.html", error=None)


@bp.post("/login")
def login() -> Any:
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    user = db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None or not check_password_hash(user.password_hash, password) or \
            user.role not in ROLES:
        return render_template("login.html", error="unknown user or wrong password"), 401
    session.clear()
    session["user"] = {"name": user.username, "role": user.role}
    return redirect(url_for("ui.dashboard"))


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("ui.login_form"))  # type: ignore[return-value]


@bp.get("/")
def dashboard() -> Any:
    if not session.get("user"):
        return redirect(url_for("ui.login_form"))
    rows = [subnets.describe(s, with_usage=True) for s in subnets.all_subnets()]
    recent = [leases.describe(lease) for lease in leases.search(limit=500)]
    return render_template("dashboard.html", subnets=rows, leases=recent,
                           open_tasks=len(instances.open_tasks()))


@bp.get("/inbox")
@require("viewer")
def inbox() -> str:
    return render_template("inbox.html",
                           tasks=[instances.describe_task(t) for t in instances.open_tasks()],
                           message=request.args.get("message"))


@bp.post("/inbox/<int:task_id>")
@require("operator")
def complete(task_id: int) -> Response:
    try:
        with unit_of_work():
            instances.complete_task(task_id, action=request.form.get("action"),
                                    comment=request.form.get("comment") or None, user=actor())
        message = f"task {task_id}: {request.form.get('action')} done"
    except LeaseflowError as exc:
        message = f"task {task_id}: {exc.message}"
    return redirect(url_for("ui.inbox", message=message))  # type: ignore[return-value]
