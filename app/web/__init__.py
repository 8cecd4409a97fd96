"""The web edge: the REST API (`/api/v1`), operations endpoints and the browser UI."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from flask_wtf.csrf import CSRFProtect

    from . import admin_api, api, errors, ledger_api, ops, ui

    errors.init_app(app)
    csrf = CSRFProtect(app)
    app.register_blueprint(ui.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(ledger_api.bp)
    app.register_blueprint(admin_api.bp)
    # API calls authenticate with a bearer token (no cookie, no CSRF risk); API calls riding
    # on a browser session are checked for the X-CSRFToken header in auth.require instead.
    for blueprint in (api.bp, ops.bp, ledger_api.bp, admin_api.bp):
        csrf.exempt(blueprint)
