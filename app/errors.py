"""The base of every error Leaseflow reports to a user, with the HTTP status it maps to.

Areas raise their own subclasses (IPAM, engine, operations); the web layer and the CLI map
`LeaseflowError` to a JSON error or one line on stderr in one place each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class LeaseflowError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = list(details)


class NotFound(LeaseflowError):
    status = 404
    code = "not_found"


class Conflict(LeaseflowError):
    status = 409
    code = "conflict"


class Invalid(LeaseflowError):
    status = 422
    code = "invalid"
