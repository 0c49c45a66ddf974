"""Who may use `mailgem ui`: the token (query once, then the cookie), CSRF on every change, the
Host and Origin checks, loopback by default; tested on the Guard in front of a real app and on
the real command."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("starlette")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mailgem.ui.security import CSRF_HEADER, Guard, cookie_name, derive

TOKEN = "t0ken-for-tests-only-1234"
COOKIE = cookie_name(8765)


def _client(hosts: set[str] | None | str = "test", cookie: str = COOKIE) -> TestClient:
    async def page(request):
        return PlainTextResponse(f"ok {request.method}")

    async def broken(request):
        raise RuntimeError("a bug with a detail")

    app = Starlette(routes=[Route("/page", page, methods=["GET", "POST"]), Route("/broken", broken)])
    app.add_middleware(Guard, token=TOKEN, hosts={"testserver"} if hosts == "test" else hosts, cookie=cookie)
    return TestClient(app, base_url="http://testserver", follow_redirects=False)


def test_without_the_token_every_request_is_refused():
    client = _client()
    for method in ("get", "post"):
        response = getattr(client, method)("/page")
        assert response.status_code == 403 and "token" in response.text
    assert client.get("/page?token=wrong").status_code == 403
    client.cookies.set(COOKIE, "forged")
    assert client.get("/page").status_code == 403


def test_the_token_is_traded_for_a_cookie_and_leaves_the_address():
    client = _client()
    response = client.get(f"/page?token={TOKEN}&x=1")
    assert response.status_code == 303 and response.headers["location"] == "/page?x=1"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie  # the cookie holds a value derived from it, not the token
    page = client.get("/page")
    assert page.status_code == 200 and page.text == "ok GET"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_changes_need_the_csrf_token_and_the_same_origin():
    client = _client()
    client.get(f"/page?token={TOKEN}")
    assert client.post("/page").status_code == 403
    assert client.post("/page", headers={CSRF_HEADER: "nope"}).status_code == 403
    good = {CSRF_HEADER: derive(TOKEN, "csrf")}
    assert client.post("/page", headers=good).text == "ok POST"
    evil = client.post("/page", headers={**good, "Origin": "http://evil.example"})
    assert evil.status_code == 403 and "another site" in evil.text
    assert client.post("/page", headers={**good, "Origin": "http://testserver"}).status_code == 200


def test_a_token_or_cookie_in_any_text_is_refused_not_a_crash():
    client = _client()
    assert client.get("/page?token=%C3%A9t%C3%A9").status_code == 403
    assert client.get("/page", headers={"Cookie": f"{COOKIE}=\u00e9t\u00e9".encode()}).status_code == 403


def test_each_instance_has_its_own_cookie():
    # Browsers share cookies between ports: two `mailgem ui` on one machine must not log each other out.
    first, second = _client(cookie=cookie_name(8765)), _client(cookie=cookie_name(8766))
    first.get(f"/page?token={TOKEN}")
    second.cookies.update(first.cookies)
    second.get(f"/page?token={TOKEN}")
    assert set(second.cookies.keys()) == {cookie_name(8765), cookie_name(8766)}
    first.cookies.update(second.cookies)
    assert first.get("/page").status_code == 200 and second.get("/page").status_code == 200


def test_an_unforeseen_error_is_one_line_not_a_trace(caplog):
    client = _client()
    client.get(f"/page?token={TOKEN}")
    answer = client.get("/broken")
    assert answer.status_code == 500 and answer.text.startswith("500: unexpected RuntimeError")
    assert "Traceback" not in answer.text and "a bug with a detail" not in answer.text
    assert any("unexpected RuntimeError in GET /broken" in r.getMessage() for r in caplog.records)


def test_listening_on_every_address_takes_any_host_but_only_its_own_origin():
    client = _client(hosts=None)
    client.get(f"/page?token={TOKEN}")
    good = {CSRF_HEADER: derive(TOKEN, "csrf")}
    assert client.get("/page", headers={"Host": "build-box.internal:8765"}).status_code == 200
    assert client.post("/page", headers={**good, "Host": "build-box:8765", "Origin": "http://build-box:8765"}).text == \
        "ok POST"
    assert client.post("/page", headers={**good, "Host": "build-box:8765", "Origin": "http://evil.example"}
                       ).status_code == 403


def test_an_unknown_host_header_is_refused():
    # DNS rebinding: a page elsewhere resolving its own name to 127.0.0.1 sends its Host.
    client = _client()
    client.get(f"/page?token={TOKEN}")
    assert client.get("/page", headers={"Host": "attacker.example:8765"}).status_code == 403


def _mailgem(*args: str, **kwargs) -> subprocess.Popen[str]:
    env = {**os.environ, "MAILGEM_USER": "ann@example.com"}
    return subprocess.Popen([sys.executable, "-m", "mailgem", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


def test_another_address_than_loopback_needs_a_token(tmp_path):
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text("name: f\nteams: [{name: t, members: [ann@example.com]}]\n")
    proc = _mailgem("ui", "--fabric", str(fabric), "--host", "0.0.0.0", "--no-browser")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "--token" in err and "Traceback" not in err


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_the_command_serves_on_loopback_prints_the_url_and_stops_on_sigterm(tmp_path, verbose):
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text("name: f\nteams: [{name: t, members: [ann@example.com]}]\n")
    proc = _mailgem(*(["-v"] if verbose else []), "ui", "--fabric", str(fabric), "--port", "0", "--token", TOKEN,
                    "--no-browser")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the URL is printed (the test's timeout bounds it)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
        assert match and match.group(2) == TOKEN, line
        base = f"http://127.0.0.1:{match.group(1)}"
        deadline = time.monotonic() + 30
        while True:  # bounded: the server accepts as soon as uvicorn runs
            try:
                urllib.request.urlopen(f"{base}/fabric", timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 403
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "mailgem ui did not start"
                time.sleep(0.2)
        # As a browser: the token traded for the cookie, which the redirect then carries.
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(f"{base}/fabric?token={TOKEN}", timeout=10) as page:
            body = page.read().decode()
        assert page.status == 200 and "Fabric" in body and TOKEN not in body
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and TOKEN not in err


def test_the_browser_is_opened_through_a_private_page_not_a_command_line_with_the_token(monkeypatch):
    # A browser's command line is visible to every local user (ps); the token stays in a 0600 file.
    import contextlib
    import stat
    from pathlib import Path

    from mailgem.ui import server

    opened: list[str] = []
    monkeypatch.setattr(server.webbrowser, "open", lambda url: opened.append(url) or True)
    url = f"http://127.0.0.1:8765/?token={TOKEN}"
    with contextlib.ExitStack() as stack:
        server._open_browser(url, stack)
        [target] = opened
        assert TOKEN not in target and target.startswith("file://")
        page = Path(target.removeprefix("file://"))
        assert stat.S_IMODE(page.stat().st_mode) == 0o600 and url in page.read_text()
    assert not page.exists()  # removed when the server stops
