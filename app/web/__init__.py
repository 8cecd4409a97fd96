"""The web edge: the REST API (`/api/v1`), operations endpoints, and (later) the UI."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import api, errors, ledger_api, ops

    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    from . import admin_api

    app.register_blueprint(admin_api.bp)
    app.register_blueprint(ledger_api.bp)
