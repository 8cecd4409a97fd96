"""Every error the API returns, mapped in one place: `{"error", "message", "details"}`.

Domain errors carry their status; malformed JSON and unknown routes get the same shape;
anything unexpected is a 500 without internals (the traceback goes to the log only).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import LeaseflowError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, details: list | None = None) -> Response:
    response = jsonify({"error": code, "message": message, "details": details or []})
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(LeaseflowError)
    def _domain(exc: LeaseflowError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed; see its log")
