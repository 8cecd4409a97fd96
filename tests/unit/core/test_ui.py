"""The browser UI: login with CSRF, roles, and a manual retry approved from the inbox."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "form without a CSRF token"
    return match.group(1)


def login(client: FlaskClient, app: Flask, password: str = "admin-secret") -> FlaskClient:
    with app.app_context():
        from app.services import setup

        setup.ensure_admin()
    token = csrf(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "admin", "password": password,
                                           "csrf_token": token})
    return response  # type: ignore[return-value]


def test_dashboard_needs_login(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_login_without_csrf_token_is_refused(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        from app.services import setup

        setup.ensure_admin()
    response = client.post("/login", data={"username": "admin", "password": "admin-secret"})
    assert response.status_code == 400


def test_wrong_password_and_right_password(client: FlaskClient, app: Flask) -> None:
    assert login(client, app, "wrong").status_code == 401
    assert login(client, app).status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "Subnets" in page and "admin (admin)" in page


def test_session_api_change_needs_csrf_header(client: FlaskClient, app: Flask) -> None:
    login(client, app)
    body = {"cidr": "10.5.0.0/24", "pools": ["10.5.0.10-10.5.0.20"]}
    assert client.post("/api/v1/subnets", json=body).status_code == 403
    token = csrf(client.get("/").get_data(as_text=True))
    assert client.post("/api/v1/subnets", json=body,
                       headers={"X-CSRFToken": token}).status_code == 201
