"""Not a test module: a signed-in client of `mailgem ui`'s app (Starlette's TestClient, the app in
process) and a reader of the forms a page holds, for tests/test_ui_pages.py."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from mailgem.ui.app import UiConfig, create_app
from mailgem.ui.security import CSRF_HEADER, derive

TOKEN = "pages-test-token-0123456789"


def client_for(*, fabric: Path | None = None, job: Path | None = None, user: str = "ann@example.com",
               local: bool = False, outbox: Path | None = None) -> TestClient:
    """A client signed in with the token (the cookie set), sending the CSRF header on changes."""
    config = UiConfig(fabric=fabric, job=job, local=local, outbox=outbox or Path("outbox"), user=user, token=TOKEN,
                      hosts=frozenset({"testserver"}))
    client = TestClient(create_app(config), base_url="http://testserver", follow_redirects=False)
    client.__enter__()  # runs the app's lifespan (its shutdown stops what the job page started)
    assert client.get(f"/?token={TOKEN}").status_code == 303
    client.headers[CSRF_HEADER] = derive(TOKEN, "csrf")
    return client


class _Form(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.values = form_id, False, []
        self._textarea: str | None = None
        self._select: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or "name" not in a and tag != "option":
            return
        if tag == "input" and a.get("type") not in ("checkbox", "submit", "button"):
            self.values.append((a["name"], a.get("value", "")))
        elif tag == "textarea":
            self._textarea, self._text = a["name"], []
        elif tag == "select":
            self._select = a["name"]
            self.values.append((a["name"], ""))
        elif tag == "option" and self._select is not None and "selected" in a:
            self.values[-1] = (self._select, a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._textarea is not None:
            self.values.append((self._textarea, "".join(self._text)))
            self._textarea = None
        elif tag == "select":
            self._select = None
        elif tag == "form":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)


def form_values(html: str, form_id: str) -> dict[str, Any]:
    """The name → value pairs a browser would submit from the form ``form_id`` (as rendered)."""
    parser = _Form(form_id)
    parser.feed(html)
    out: dict[str, Any] = {}
    for name, value in parser.values:
        # A browser drops the first newline after <textarea>, as the HTML parser keeps it.
        out[name] = value.removeprefix("\n")
    return out
