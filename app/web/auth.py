"""Who is calling: the API bearer token (admin role) or a logged-in user's session.

Roles are ordered viewer < operator < admin; `require(role)` guards a view.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request, session

from ..errors import LeaseflowError

ROLES = ("viewer", "operator", "admin")
F = TypeVar("F", bound=Callable[..., Any])


class Unauthorized(LeaseflowError):
    status = 401
    code = "unauthorized"


class Forbidden(LeaseflowError):
    status = 403
    code = "forbidden"


def current_user() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = header[len("Bearer "):].strip()
        expected = current_app.config["LEASEFLOW"].api_token
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return ("api-token", "admin")
        raise Unauthorized("the bearer token is not valid")
    user = session.get("user")
    if isinstance(user, dict) and user.get("role") in ROLES:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            _check_csrf()
        return (str(user["name"]), str(user["role"]))
    return None


def _check_csrf() -> None:
    """A session-authenticated change must carry the page's CSRF token."""
    from flask_wtf.csrf import CSRFError, validate_csrf

    token = request.headers.get("X-CSRFToken") or request.form.get("csrf_token")
    try:
        validate_csrf(token)
    except (CSRFError, Exception):
        raise Forbidden("missing or invalid CSRF token") from None


def require(role: str) -> Callable[[F], F]:
    def wrap(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            who = current_user()
            if who is None:
                raise Unauthorized("log in or send 'Authorization: Bearer <LEASEFLOW_API_TOKEN>'")
            if ROLES.index(who[1]) < ROLES.index(role):
                raise Forbidden(f"this needs the {role} role")
            g.user, g.role = who
            return view(*args, **kwargs)
        return guarded  # type: ignore[return-value]
    return wrap


def actor() -> str:
    return str(getattr(g, "user", "anonymous"))
