"""The web edge: the REST API (`/api/v1`), operations endpoints, and (later) the UI."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import api, errors, ops

    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
