"""The fabric page: its connections (each with Test connection), the connection form generated
from the connection's JSON Schema (which can be tested before it is saved), and the secret store
(names only; values write-only).

Saving writes the fabric YAML through :mod:`.yamlfile` (comments, order and ``${ENV}``
references kept; an edit on disk since the page loaded is refused with a diff). The fabric's
team access applies to every page and action.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from pydantic import SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mailgem.connections.errors import MailgemError
from mailgem.connections.model import SmtpConnection
from mailgem.connections.transport import SmtpTransport
from mailgem.connections.url import parse_url
from mailgem.fabric.errors import AccessDeniedError
from mailgem.fabric.model import Fabric
from mailgem.fabric.secrets import SecretStore

from .app import UiState, state_of, templates
from .documents import fabric_from, field_errors
from .form_errors import validation_errors
from .form_input import apply_form
from .forms import FormErrors, connection_schema, form_fields, show_scalar
from .yamlfile import ConflictError, YamlFile, get_path

__all__ = ["routes"]

SECRET_VALUE = "_secret_value"  # the write-only password input (never rendered with a value)


def routes() -> list[Any]:
    return [
        Route("/fabric", fabric_page),
        Route("/fabric/connections/new", connection_form),
        Route("/fabric/connections/{index:int}", connection_form),
        Route("/fabric/connections/{index:int}/save", save_connection, methods=["POST"]),
        Route("/fabric/connections/{index:int}/test", test_form, methods=["POST"]),
        Route("/fabric/connections/{index:int}/from-url", from_url, methods=["POST"]),
        Route("/fabric/test/{name}", test_connection, methods=["POST"]),
        Route("/fabric/secrets", set_secret, methods=["POST"]),
    ]


@functools.cache  # made once (14-24 ms), then shared: callers read it, never change it
def fabric_schema() -> dict[str, Any]:
    """The JSON Schema of a fabric file (``mailgem schema fabric``)."""
    return Fabric.model_json_schema()


def _denied(request: Request, exc: Exception) -> Response:
    return templates.TemplateResponse(request, "denied.html", {"message": str(exc)}, status_code=403)


def _load(state: UiState) -> tuple[YamlFile, Fabric]:
    """The fabric file as it is now, and the fabric it holds; the user's access checked.

    Raises:
        AccessDeniedError: the user is in none of the fabric's teams.
        MailgemError: the file is not a valid fabric. OSError: it cannot be read.
    """
    path = state.config.fabric
    if path is None:
        raise MailgemError("no fabric: start `mailgem ui` with --fabric FABRIC.yaml")
    version = state.remember(YamlFile.load(path))
    fabric = fabric_from(version.doc, version.path)
    fabric.check_access(state.config.user)
    return version, fabric


async def _loaded(request: Request) -> tuple[YamlFile, Fabric] | Response:
    """:func:`_load`, or the page saying why not (403 for someone outside the teams)."""
    try:
        return await asyncio.to_thread(_load, state_of(request))
    except AccessDeniedError as exc:
        return _denied(request, exc)
    except (MailgemError, OSError) as exc:
        return templates.TemplateResponse(request, "error.html", {"message": str(exc)}, status_code=400)


def _auth_kind(conn: SmtpConnection) -> str:
    if conn.auth is not None:
        return str(getattr(conn.auth, "type", "oauth2"))
    return "anonymous" if conn.anonymous else "password"


def _names(fabric: Fabric) -> tuple[SecretStore | None, list[str] | None, str | None]:
    """The fabric's store, its secret names and, when either cannot be had, why (a remote store's
    library missing, its service refusing to list). Blocking (a remote store calls its service):
    run it in a thread."""
    try:
        store = fabric.store()
    except MailgemError as exc:
        return None, None, str(exc)
    try:
        return store, store.names(), None
    except MailgemError as exc:
        return store, None, str(exc)


async def fabric_page(request: Request) -> Response:
    loaded = await _loaded(request)
    if isinstance(loaded, Response):
        return loaded
    version, fabric = loaded
    store, names, store_note = await asyncio.to_thread(_names, fabric)
    rows = [{"name": c.name, "host": c.host, "port": c.port, "security": c.security, "auth": _auth_kind(c),
             "sender": c.sender, "index": i} for i, c in enumerate(fabric.connections)]
    return templates.TemplateResponse(request, "fabric.html", {
        "fabric": fabric, "path": version.path, "rows": rows, "teams": fabric.teams, "store": store,
        "secret_names": names, "store_note": store_note, "saved": request.query_params.get("saved")})


async def connection_form(request: Request) -> Response:
    loaded = await _loaded(request)
    if isinstance(loaded, Response):
        return loaded
    version, fabric = loaded
    index = request.path_params.get("index", len(fabric.connections))
    if index > len(fabric.connections):
        return templates.TemplateResponse(request, "error.html", {"message": f"no connection #{index}"},
                                          status_code=404)
    store, names, _ = await asyncio.to_thread(_names, fabric)
    return templates.TemplateResponse(request, "connection.html", {
        "fields": form_fields(connection_schema(), version.doc, f"connections[{index}]"), "index": index,
        "digest": version.digest, "is_new": index == len(fabric.connections), "fabric": fabric,
        "name": get_path(version.doc, f"connections[{index}].name", ""), "secret_names": names or [],
        "secret_value": SECRET_VALUE, "store": store})


def _at_fields(errors: dict[str, str], fields: set[str]) -> tuple[dict[str, str], str | None]:
    """Errors at an input, and those about the connection as a whole (a rule across fields)."""
    at = {k: v for k, v in errors.items() if k in fields}
    rest = [f"{k}: {v}" for k, v in errors.items() if k not in fields]
    return at, "\n".join(rest) or None


async def _edited(request: Request) -> tuple[YamlFile, Any, Fabric, str, Any] | Response:
    """The page's connection form applied to the version it was rendered from: ``(version, doc,
    fabric, secret value, form)``, or the answer saying what is wrong (at the fields)."""
    state = state_of(request)
    index = request.path_params["index"]
    form = await request.form()
    loaded = await _loaded(request)  # the user's access, on the fabric as it is now
    if isinstance(loaded, Response):
        return loaded
    if index > len(loaded[1].connections):
        return JSONResponse({"message": f"no connection #{index}: reload the page"}, status_code=404)
    try:
        version = state.version(str(form.get("_digest", "")))
    except MailgemError as exc:
        return JSONResponse({"message": str(exc)})
    doc = copy.deepcopy(version.doc)
    prefix = f"connections[{index}]"
    try:
        apply_form(doc, connection_schema(), [(k, v) for k, v in form.multi_items()
                                              if isinstance(v, str) and k != SECRET_VALUE], prefix)
        field_errors(Fabric, doc, version.path)
        fabric = fabric_from(doc, version.path)
    except FormErrors as exc:
        return JSONResponse({"errors": exc.errors})
    except ValidationError as exc:
        paths = {f.path for f in form_fields(connection_schema(), doc, prefix)}
        errors, message = _at_fields(validation_errors(exc, schema=fabric_schema()), paths)
        return JSONResponse({"errors": errors, "message": message})
    except MailgemError as exc:
        return JSONResponse({"message": str(exc)})
    return version, doc, fabric, str(form.get(SECRET_VALUE, "")), form


def _writable(version: YamlFile) -> str | None:
    """Why the fabric file cannot be written, if it cannot (checked before a secret is stored)."""
    for where in (version.path, version.path.parent):
        if not os.access(where, os.W_OK):
            return f"not saved: {where} is not writable by this user"
    return None


async def save_connection(request: Request) -> Response:
    edited = await _edited(request)
    if isinstance(edited, Response):
        return edited
    version, doc, fabric, secret_value, _ = edited
    index = request.path_params["index"]
    try:  # before anything is stored: an edit on disk since the page loaded is refused, with the diff
        version.check_unchanged(version.digest)
    except ConflictError as exc:
        return JSONResponse({"conflict": exc.diff, "message": str(exc)})
    if (unwritable := _writable(version)) is not None:
        return JSONResponse({"message": unwritable})
    secret_path = f"connections[{index}].password.secret"
    if secret_value:
        name = get_path(doc, secret_path, None)
        if not name:
            return JSONResponse({"errors": {secret_path: "name the secret that holds this password"}})
        try:
            fabric.store().set(str(name), SecretStr(secret_value))
        except MailgemError as exc:
            return JSONResponse({"errors": {secret_path: str(exc)}})
    try:
        await asyncio.to_thread(version.copy().save, doc, version.digest)
    except ConflictError as exc:
        return JSONResponse({"conflict": exc.diff, "message": str(exc)})
    except OSError as exc:
        stored = " (the password was stored)" if secret_value else ""
        return JSONResponse({"message": f"not saved{stored}: cannot write {version.path}: {exc.strerror or exc}"})
    return JSONResponse({"redirect": f"/fabric?saved={get_path(doc, f'connections[{index}].name', '')}"})


async def from_url(request: Request) -> Response:
    """Fill the form from an SMTP URL (``smtps://user@host:465``): host, port, security, username."""
    index = request.path_params["index"]
    form = await request.form()
    loaded = await _loaded(request)
    if isinstance(loaded, Response):
        return loaded
    try:
        fields, password = parse_url(str(form.get("_url", "")), set(SmtpConnection.model_fields))
    except MailgemError as exc:
        return JSONResponse({"errors": {"_url": str(exc)}})
    if password is not None:  # never kept: it belongs in the secret store, set below, write-only
        return JSONResponse({"errors": {"_url": "this URL holds a password, which is never kept in a fabric file: "
                                                "remove it from the URL and set it below, in the secret store"}})
    return JSONResponse({"values": {f"connections[{index}].{k}": show_scalar(v) for k, v in fields.items()}})


async def set_secret(request: Request) -> Response:
    """Store one secret (write-only: the value goes to the store and nowhere else)."""
    form = await request.form()
    name, value = str(form.get("name", "")).strip(), str(form.get(SECRET_VALUE, ""))
    loaded = await _loaded(request)
    if isinstance(loaded, Response):
        return loaded
    try:
        store = loaded[1].store()
        store.set(store.check_name(name), SecretStr(value))
    except MailgemError as exc:
        return JSONResponse({"errors": {"name": str(exc)}})
    return JSONResponse({"redirect": f"/fabric?saved=secret%20{name}"})


def _event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _steps(transport: SmtpTransport) -> StreamingResponse:
    """The connection test (``mailgem connection test``) as a stream of server-sent events: a
    ``step`` per step as it happens, then ``done`` with the report's lines and the verdict."""
    queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    async def stream() -> AsyncIterator[bytes]:
        task = asyncio.create_task(transport.check(lambda step, line: queue.put_nowait((step, line))))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        while (item := await queue.get()) is not None:
            yield _event("step", {"step": item[0], "line": item[1]})
        report = task.result()
        yield _event("done", {"ok": report.ok, "lines": report.lines()})

    return StreamingResponse(stream(), media_type="text/event-stream")


def _failed(message: str) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        yield _event("done", {"ok": False, "lines": [f"error       {message}"]})
    return StreamingResponse(stream(), media_type="text/event-stream")


async def test_connection(request: Request) -> Response:
    """Test a saved connection (the fabric's store holds its secrets)."""
    loaded = await _loaded(request)
    if isinstance(loaded, Response):
        return loaded
    try:
        transport = await asyncio.to_thread(loaded[1].transport, request.path_params["name"], state_of(request).config.user)
    except MailgemError as exc:
        return _failed(str(exc))
    return _steps(transport)


class _Typed(SecretStore):
    """The fabric's store, with the password typed on the page (not yet stored) in front."""

    kind = "typed"

    def __init__(self, store: SecretStore, name: str, value: SecretStr) -> None:
        self._store, self._name, self._value = store, name, value

    def __repr__(self) -> str:
        return f"_Typed({self._store!r})"

    def get(self, name: str) -> SecretStr:
        return self._value if name == self._name else self._store.get(name)

    def names(self) -> list[str]:
        return sorted({*self._store.names(), self._name})


async def test_form(request: Request) -> Response:
    """Test the connection as the form has it, before it is saved (the password typed on the
    page, if any, is used for this test and kept nowhere)."""
    edited = await _edited(request)
    if isinstance(edited, Response):
        return edited if edited.status_code != 200 else _failed(_message_of(edited))
    _, doc, fabric, secret_value, _ = edited
    index = request.path_params["index"]
    name = str(get_path(doc, f"connections[{index}].name", ""))
    secret = get_path(doc, f"connections[{index}].password.secret", None)
    if secret_value and secret:
        fabric = fabric.with_store(_Typed(fabric.store(), str(secret), SecretStr(secret_value)))
    try:
        transport = await asyncio.to_thread(fabric.transport, name, state_of(request).config.user)
    except MailgemError as exc:
        return _failed(str(exc))
    return _steps(transport)


def _message_of(answer: Response) -> str:
    """What a form's JSON answer says is wrong, in one line (for the test's stream)."""
    body = json.loads(bytes(answer.body))
    parts = [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
    return "fix the form first: " + "; ".join([*parts, *([body["message"]] if body.get("message") else [])])
