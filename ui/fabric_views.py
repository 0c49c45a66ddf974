"""The fabric page: its connections (each with Test connection), the connection form generated
from the connection's JSON Schema, and the secret store (names only; values write-only).

Saving writes the fabric YAML through :mod:`.yamlfile` (comments, order and ``${ENV}``
references kept; an edit on disk since the page loaded is refused with a diff). The fabric's
team access applies to every page and action.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mailgem.connections.errors import MailgemError
from mailgem.connections.model import SmtpConnection
from mailgem.connections.url import parse_url
from mailgem.fabric.errors import AccessDeniedError
from mailgem.fabric.loader import interpolate, parse_fabric
from mailgem.fabric.model import Fabric

from .app import UiState, state_of, templates
from .form_errors import validation_errors
from .form_input import apply_form
from .forms import FormErrors, connection_schema, form_fields
from .yamlfile import ConflictError, YamlFile, get_path

__all__ = ["routes"]

SECRET_VALUE = "_secret_value"  # the write-only password input (never rendered with a value)


def routes() -> list[Any]:
    return [
        Route("/fabric", fabric_page),
        Route("/fabric/connections/new", connection_form),
        Route("/fabric/connections/{index:int}", connection_form),
        Route("/fabric/connections/{index:int}/save", save_connection, methods=["POST"]),
        Route("/fabric/connections/{index:int}/from-url", from_url, methods=["POST"]),
        Route("/fabric/test/{name}", test_connection),
        Route("/fabric/secrets", set_secret, methods=["POST"]),
    ]


def fabric_schema() -> dict[str, Any]:
    """The JSON Schema of a fabric file (``mailgem schema fabric``)."""
    return Fabric.model_json_schema()


def _denied(request: Request, exc: Exception) -> Response:
    return templates.TemplateResponse(request, "denied.html", {"message": str(exc)}, status_code=403)


def _load(state: UiState) -> tuple[YamlFile, Fabric]:
    """The fabric file as it is now, and the fabric it holds; the user's access checked.

    Raises:
        AccessDeniedError: the user is in none of the fabric's teams.
        MailgemError: the file cannot be read or is not a valid fabric.
    """
    path = state.config.fabric
    if path is None:
        raise MailgemError("no fabric: start `mailgem ui` with --fabric FABRIC.yaml")
    version = state.remember(YamlFile.load(path))
    fabric = _validated(version.doc, version)
    fabric.check_access(state.config.user)
    return version, fabric


def _plain(doc: Any) -> Any:
    """A round-trip document as plain dicts and lists (what the loader validates)."""
    return json.loads(json.dumps(doc, default=str))


def _validated(doc: Any, version: YamlFile) -> Fabric:
    """The fabric ``doc`` describes, with ``${ENV}`` interpolated as the loader does.

    Raises:
        FabricConfigError: what the loader says (the file, the field, the fix).
    """
    return parse_fabric(interpolate(_plain(doc), str(version.path)), version.path)


def _auth_kind(conn: SmtpConnection) -> str:
    if conn.auth is not None:
        return str(getattr(conn.auth, "type", "oauth2"))
    return "anonymous" if conn.anonymous else "password"


async def fabric_page(request: Request) -> Response:
    state = state_of(request)
    try:
        version, fabric = await asyncio.to_thread(_load, state)
    except AccessDeniedError as exc:
        return _denied(request, exc)
    except MailgemError as exc:
        return templates.TemplateResponse(request, "error.html", {"message": str(exc)}, status_code=400)
    store = fabric.store()
    try:
        names: list[str] | None = store.names()
        store_note = None
    except MailgemError as exc:
        names, store_note = None, str(exc)
    rows = [{"name": c.name, "host": c.host, "port": c.port, "security": c.security, "auth": _auth_kind(c),
             "sender": c.sender, "index": i} for i, c in enumerate(fabric.connections)]
    return templates.TemplateResponse(request, "fabric.html", {
        "fabric": fabric, "path": version.path, "digest": version.digest, "rows": rows, "user": state.config.user,
        "teams": fabric.teams, "store": store, "secret_names": names, "store_note": store_note,
        "saved": request.query_params.get("saved"), "has_job": state.config.job is not None})


def _connection_context(state: UiState, version: YamlFile, fabric: Fabric, index: int, doc: Any,
                        errors: dict[str, str] | None = None, message: str | None = None) -> dict[str, Any]:
    connections = get_path(doc, "connections", None) or []
    try:
        names = fabric.store().names()
    except MailgemError:
        names = []
    fields = form_fields(connection_schema(), doc, f"connections[{index}]")
    return {"fields": fields, "index": index, "digest": version.digest, "path": version.path, "is_new":
            index >= len(connections), "name": get_path(doc, f"connections[{index}].name", ""),
            "errors": errors or {}, "message": message, "secret_names": names, "fabric": fabric,
            "secret_value": SECRET_VALUE, "user": state.config.user}


async def connection_form(request: Request) -> Response:
    state = state_of(request)
    try:
        version, fabric = await asyncio.to_thread(_load, state)
    except AccessDeniedError as exc:
        return _denied(request, exc)
    index = request.path_params.get("index", len(fabric.connections))
    if index > len(fabric.connections):
        return templates.TemplateResponse(request, "error.html", {"message": f"no connection #{index}"},
                                          status_code=404)
    return templates.TemplateResponse(request, "connection.html",
                                      _connection_context(state, version, fabric, index, version.doc))


def _form_items(form: Any) -> list[tuple[str, str]]:
    """The form's text fields (the page's own ``_`` keys are skipped by :func:`apply_form`)."""
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str) and k != SECRET_VALUE]


def _at_fields(errors: dict[str, str], fields: set[str]) -> tuple[dict[str, str], str | None]:
    """Errors at an input, and those about the connection as a whole (a rule across fields)."""
    at = {k: v for k, v in errors.items() if k in fields}
    rest = [f"{k}: {v}" for k, v in errors.items() if k not in fields]
    return at, "\n".join(rest) or None


async def from_url(request: Request) -> Response:
    """Fill the form from an SMTP URL (``smtps://user@host:465``): host, port, security, username."""
    state = state_of(request)
    index = request.path_params["index"]
    form = await request.form()
    try:
        await asyncio.to_thread(_load, state)  # the user's access
        fields, password = parse_url(str(form.get("_url", "")), set(SmtpConnection.model_fields))
    except AccessDeniedError as exc:
        return _denied(request, exc)
    except MailgemError as exc:
        return JSONResponse({"errors": {"_url": str(exc)}})
    if password is not None:  # never kept: it belongs in the secret store, set below, write-only
        return JSONResponse({"errors": {"_url": "this URL holds a password, which is never kept in a fabric file: "
                                                "remove it from the URL and set it below, in the secret store"}})
    values = {f"connections[{index}].{k}": str(v) for k, v in fields.items()}
    return JSONResponse({"values": values})


async def save_connection(request: Request) -> Response:
    state = state_of(request)
    index = request.path_params["index"]
    form = await request.form()
    secret_value = str(form.get(SECRET_VALUE, ""))
    try:
        version = state.version(str(form.get("_digest", "")))
        await asyncio.to_thread(_load, state)  # the user's access, on the fabric as it is now
    except AccessDeniedError as exc:
        return _denied(request, exc)
    except MailgemError as exc:
        return JSONResponse({"message": str(exc)})
    doc = copy.deepcopy(version.doc)
    prefix = f"connections[{index}]"
    try:
        apply_form(doc, connection_schema(), _form_items(form), prefix)
    except FormErrors as exc:
        return JSONResponse({"errors": exc.errors})
    try:
        Fabric.model_validate(interpolate(_plain(doc), str(version.path)))
        new_fabric = _validated(doc, version)
    except ValidationError as exc:
        paths = {f.path for f in form_fields(connection_schema(), doc, prefix)}
        errors, message = _at_fields(validation_errors(exc, schema=fabric_schema()), paths)
        return JSONResponse({"errors": errors, "message": message})
    except MailgemError as exc:
        return JSONResponse({"message": str(exc)})
    try:  # before anything is stored: an edit on disk since the page loaded is refused, with the diff
        version.check_unchanged(version.digest)
    except ConflictError as exc:
        return JSONResponse({"conflict": exc.diff, "message": str(exc)})
    secret_path = f"connections[{index}].password.secret"
    if secret_value:
        name = get_path(doc, secret_path, None)
        if not name:
            return JSONResponse({"errors": {secret_path: "name the secret that holds this password"}})
        try:
            new_fabric.store().set(str(name), SecretStr(secret_value))
        except MailgemError as exc:
            return JSONResponse({"errors": {secret_path: str(exc)}})
    try:
        await asyncio.to_thread(version.copy().save, doc, version.digest)
    except ConflictError as exc:
        return JSONResponse({"conflict": exc.diff, "message": str(exc)})
    name = get_path(doc, f"connections[{index}].name", "")
    return JSONResponse({"redirect": f"/fabric?saved={name}"})


async def set_secret(request: Request) -> Response:
    """Store one secret (write-only: the value goes to the store and nowhere else)."""
    state = state_of(request)
    form = await request.form()
    name, value = str(form.get("name", "")).strip(), str(form.get(SECRET_VALUE, ""))
    try:
        _, fabric = await asyncio.to_thread(_load, state)
        store = fabric.store()
        store.set(store.check_name(name), SecretStr(value))
    except AccessDeniedError as exc:
        return _denied(request, exc)
    except MailgemError as exc:
        return JSONResponse({"errors": {"name": str(exc)}})
    return JSONResponse({"redirect": f"/fabric?saved=secret%20{name}"})


def _event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def test_connection(request: Request) -> Response:
    """Run the connection test (``mailgem connection test``) and stream its steps as they happen
    (server-sent events ``step``, then ``done`` with the report's lines and the verdict)."""
    state = state_of(request)
    name = request.path_params["name"]
    if request.query_params.get("csrf") != request.scope["state"]["csrf"]:
        return HTMLResponse("403 Forbidden: missing or wrong CSRF token; reload the page", status_code=403)
    try:
        _, fabric = await asyncio.to_thread(_load, state)
        transport = await asyncio.to_thread(fabric.transport, name, state.config.user)
    except AccessDeniedError as exc:
        return _denied(request, exc)
    except MailgemError as exc:
        message = str(exc)

        async def failed() -> AsyncIterator[bytes]:
            yield _event("done", {"ok": False, "lines": [f"error       {message}"]})
        return StreamingResponse(failed(), media_type="text/event-stream")

    queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    async def stream() -> AsyncIterator[bytes]:
        task = asyncio.create_task(transport.check(lambda step, line: queue.put_nowait((step, line))))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        while (item := await queue.get()) is not None:
            yield _event("step", {"step": item[0], "line": item[1]})
        report = task.result()
        yield _event("done", {"ok": report.ok, "lines": report.lines()})

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
