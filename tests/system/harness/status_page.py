"""The status page's HTTPS client for tests (raw requests, trusting the test CA) and its password file."""

from __future__ import annotations

import http.client
import subprocess
from pathlib import Path

from .airlock import airlock_binary
from .tls import Pki

COOKIE = "__Host-airlock_session"


def password_file(path: Path, password: str) -> Path:
    """`airlock status-password`: the password's Argon2id hash in `path`."""
    out = subprocess.run([str(airlock_binary()), "status-password", str(path)], input=password + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return path


class Https:
    def __init__(self, port: int, pki: Pki, timeout: float = 30.0) -> None:
        self.port = port
        self.context = pki.client_context()
        self.timeout = timeout

    def request(self, method: str, path: str, body: str | None = None, cookie: str | None = None,
                headers: dict[str, str] | None = None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=self.timeout)
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if cookie:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read().decode()
        conn.close()
        return response, data

    def login(self, password: str) -> str:
        """Logs in; returns the session cookie's value."""
        response, _ = self.request("POST", "/login", f"password={password}")
        assert response.status == 303, response.status
        cookie = response.getheader("Set-Cookie")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        return cookie.split(";", 1)[0].split("=", 1)[1]

    def form_token(self, cookie: str) -> str:
        """The session's form token, read off the page."""
        response, body = self.request("GET", "/", cookie=cookie)
        assert response.status == 200, response.status
        return body.split('name="form_token" value="', 1)[1].split('"', 1)[0]
