"""The job page: the job's form (from its JSON Schema) and its raw YAML, ``validate``'s
diagnostics at their fields as you type, the live preview of the first messages, Send test,
and Save (comments kept, conflicts refused).

The page's form (or its YAML tab) is the job being edited: every request carries it whole, and
the server applies it to the version of the file the page was rendered from.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailgem.connections.errors import MailgemError
from mailgem.fabric.errors import AccessDeniedError
from mailgem.fabric.loader import LOCAL_CONNECTION, load_fabric
from mailgem.fabric.local import local_fabric, local_identity_fabric
from mailgem.fabric.model import Fabric
from mailgem.runner.job import JobSpec
from mailgem.runner.preflight import Preflight, check_job

from .app import UiState, state_of, templates
from .documents import field_errors, job_from
from .form_errors import validation_errors
from .form_input import apply_form
from .forms import FormErrors, form_fields
from .frames import FrameCache
from .previews import PreviewMessage, SendTestResult, build_previews, send_test
from .yamlfile import ConflictError, YamlFile

__all__ = ["DARK_CANVAS", "dark_canvas", "job_schema", "routes", "shutdown"]

PREVIEW_LIMIT = 3
_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (.*)$", re.S)
# A dark canvas as several webmail dark modes paint one: the page's background and text darkened,
# the message's own inline styles kept (what tests/browser.py calls "dark-canvas").
DARK_CANVAS = "<style>html, body { background: #121212 !important; color: #e8e8e8 !important; }</style>"

View = Callable[[Request], Awaitable[Response]]


def routes() -> list[Any]:
    return [
        Route("/job", _member(job_page)),
        Route("/job/preview", _member(preview), methods=["POST"]),
        Route("/job/yaml", _member(to_yaml), methods=["POST"]),
        Route("/job/form", _member(to_form), methods=["POST"]),
        Route("/job/send-test", _member(send_test_view), methods=["POST"]),
        Route("/job/save", _member(save), methods=["POST"]),
        Route("/job/attachment/{message:int}/{index:int}", _member(attachment)),
    ]


@functools.cache  # made once (14-24 ms), then shared: callers read it, never change it
def job_schema() -> dict[str, Any]:
    """The JSON Schema of a job file (as ``mailgem schema job`` prints it)."""
    return JobSpec.model_json_schema()


def dark_canvas(html: str) -> str:
    """``html`` with :data:`DARK_CANVAS` added at the end of its head (or its start)."""
    at = html.lower().find("</head>")
    return html[:at] + DARK_CANVAS + html[at:] if at >= 0 else DARK_CANVAS + html


def shutdown(state: UiState) -> None:
    """Stop what the page keeps running: the warm Spark session, the embedded SMTP server."""
    if state.frames is not None:
        state.frames.close()
        state.frames = None
    with state.local_lock:
        if state.local is not None:
            state.local[1].close()
            state.local = None


def _member(view: View) -> View:
    """``view`` for members of the fabric's teams only (when ``mailgem ui`` was given a fabric):
    the fabric's team access applies to the job page and each of its actions."""
    @functools.wraps(view)
    async def checked(request: Request) -> Response:
        state = state_of(request)
        if state.config.fabric is not None:
            try:
                fabric = await asyncio.to_thread(load_fabric, state.config.fabric)
                fabric.check_access(state.config.user)
            except AccessDeniedError as exc:
                return templates.TemplateResponse(request, "denied.html", {"message": str(exc)}, status_code=403)
            except MailgemError as exc:
                return templates.TemplateResponse(request, "error.html", {"message": str(exc)}, status_code=400)
        return await view(request)
    return checked


def _frames(state: UiState) -> FrameCache:
    with state.lock:
        if state.frames is None:
            state.frames = FrameCache(master=state.config.master)
        return state.frames


def _local_fabric(state: UiState) -> Fabric:
    """The embedded local server's fabric (started on first use, kept while the UI runs)."""
    with state.local_lock:  # its own lock: starting the server must not hold up the other pages
        if state.local is None:
            stack = contextlib.ExitStack()
            running = stack.enter_context(local_fabric(state.config.outbox, user=state.config.user))
            state.local = (running.fabric, stack)
        return state.local[0]


def _target(state: UiState, job: JobSpec, *, sending: bool) -> tuple[Fabric, str]:
    """Where the job's messages go from this page: the embedded server (``--local``, or a job
    naming ``local``; started only to send), else the job's connection in the fabric.

    Raises:
        MailgemError: the job names a fabric connection and no fabric was given.
    """
    if state.config.local or job.email.connection == LOCAL_CONNECTION:
        if not sending:
            return local_identity_fabric(state.config.user), LOCAL_CONNECTION
        return _local_fabric(state), LOCAL_CONNECTION
    if state.config.fabric is None:
        raise MailgemError(f"the job sends through connection {job.email.connection!r}, which lives in a fabric: start "
                           "`mailgem ui` with --fabric FABRIC.yaml, or with --local for the embedded server")
    return load_fabric(state.config.fabric), job.email.connection


async def job_page(request: Request) -> Response:
    state = state_of(request)
    path = state.config.job
    if path is None:
        return templates.TemplateResponse(request, "error.html", {
            "message": "no job: start `mailgem ui` with --job JOB.yaml"}, status_code=404)
    try:
        version = state.remember(await asyncio.to_thread(YamlFile.load, path))
    except (MailgemError, OSError) as exc:
        return templates.TemplateResponse(request, "error.html", {"message": f"{path}: {exc}"}, status_code=400)
    return templates.TemplateResponse(request, "job.html", {
        "path": path, "digest": version.digest, "fields": form_fields(job_schema(), version.doc),
        "yaml": version.text, "address": _default_address(state.config.user), "local": state.config.local,
        "saved": request.query_params.get("saved")})


def _default_address(user: str) -> str:
    """The user's own address when their user name is one (``--user ann@example.com``)."""
    return user if "@" in user else ""


def _edited(state: UiState, form: Any) -> tuple[YamlFile, Any]:
    """The version the page was rendered from, and the document as the page now has it.

    Raises:
        FormErrors: a field cannot be read. MailgemError: the YAML tab is not valid YAML; the
        page is older than the server.
    """
    version = state.version(str(form.get("_digest", "")))
    if form.get("_mode") == "yaml":
        return version, version.parse(str(form.get("_yaml", "")))
    doc = copy.deepcopy(version.doc)
    apply_form(doc, job_schema(), [(k, v) for k, v in form.multi_items() if isinstance(v, str)])
    return version, doc


def _diagnostics(pre: Preflight, path: str) -> tuple[dict[str, list[str]], list[str]]:
    """``validate``'s findings by field path (``email.subject``), and those that name no field."""
    fields: dict[str, list[str]] = {}
    general: list[str] = []
    for finding in pre.findings:
        text = finding.message.removeprefix(f"{path}: ")
        match = _FIELD.match(text)
        line = f"{finding.severity}: {match.group(2) if match else text}"
        if match:
            fields.setdefault(match.group(1), []).append(line)
        else:
            general.append(line)
    return fields, general


def _errors(exc: ValidationError | FormErrors) -> dict[str, list[str]]:
    found = exc.errors if isinstance(exc, FormErrors) else validation_errors(exc, schema=job_schema())
    return {path: [f"error: {message}"] for path, message in found.items()}


def _check(state: UiState, form: Any) -> tuple[JobSpec | None, dict[str, list[str]], list[str]]:
    """The page's job, and what ``validate`` says of it (by field, and the rest); no job when
    it cannot be read."""
    try:
        version, doc = _edited(state, form)
        field_errors(JobSpec, doc, version.path)
        job = job_from(doc, version.path)
    except (ValidationError, FormErrors) as exc:
        return None, _errors(exc), []
    except MailgemError as exc:
        return None, {}, [f"error: {exc}"]
    pre = check_job(version.path, fabric_file=state.config.fabric, local=state.config.local,
                    user=state.config.user, read_secrets=False, job=job)
    fields, general = _diagnostics(pre, str(version.path))
    return job, fields, general


def _build(state: UiState, job: JobSpec) -> tuple[list[PreviewMessage], str | None]:
    fabric, connection = _target(state, job, sending=False)
    frame, in1, note = _frames(state).frames(job)
    messages = build_previews(job, frame, fabric, connection, state.config.user, PREVIEW_LIMIT, in1)
    with state.lock:
        state.previews = messages
    return messages, note


def _chosen(form: Any) -> int:
    text = str(form.get("_message", "0"))
    return int(text) if text.isdigit() else 0


async def preview(request: Request) -> Response:
    """Diagnostics and the preview of the page's job: ``{fields, general, html}`` (``stale``
    when a newer edit's preview was asked for meanwhile)."""
    state = state_of(request)
    form = await request.form()
    with state.lock:
        state.latest_preview += 1
        mine = state.latest_preview
    job, fields, general = await asyncio.to_thread(_check, state, form)
    body: dict[str, Any] = {"fields": fields, "general": general}
    failed = any(m.startswith("error") for m in [*general, *(m for ms in fields.values() for m in ms)])
    if job is None or failed:
        return JSONResponse(body)
    # One preview is built at a time (the first waits for Spark and the source); an edit made
    # meanwhile makes the waiting ones stale: only the newest is built.
    async with state.preview_turn:
        if mine != state.latest_preview:
            return JSONResponse({**body, "stale": True})
        try:
            messages, note = await asyncio.to_thread(_build, state, job)
        except AccessDeniedError as exc:
            general.append(f"error: access denied: {exc}")
            return JSONResponse(body)
        except MailgemError as exc:
            general.append(f"error: {exc}")
            return JSONResponse(body)
    template = templates.get_template("preview.html")
    chosen = min(_chosen(form), max(len(messages) - 1, 0))
    body["html"] = template.render(messages=messages, chosen=chosen, note=note, dark=form.get("_dark") == "1",
                                   dark_canvas=dark_canvas)
    return JSONResponse(body)


async def to_yaml(request: Request) -> Response:
    """The form as the YAML it would save (the raw-YAML tab follows the form)."""
    state = state_of(request)
    form = await request.form()
    try:
        version, doc = await asyncio.to_thread(_edited, state, form)
    except FormErrors as exc:
        return JSONResponse({"fields": _errors(exc)})
    except MailgemError as exc:
        return JSONResponse({"general": [f"error: {exc}"]})
    return JSONResponse({"yaml": version.dump(doc)})


async def to_form(request: Request) -> Response:
    """The YAML tab's text as the form (the form follows the raw YAML)."""
    state = state_of(request)
    form = await request.form()
    try:
        _, doc = await asyncio.to_thread(_edited, state, form)
    except MailgemError as exc:
        return JSONResponse({"general": [f"error: {exc}"]})
    html = templates.get_template("fields.html").render(fields=form_fields(job_schema(), doc))
    return JSONResponse({"html": html})


def _sent(result: SendTestResult) -> str:
    return (f"Sent to {result.recipient}: the server answered {result.code} {result.message} "
            f"({result.size_bytes:,} bytes, subject {result.subject!r})")


async def send_test_view(request: Request) -> Response:
    """Send the first message to the user's own address only, marked as a test."""
    state = state_of(request)
    form = await request.form()
    address = str(form.get("_address", "")).strip()

    def run() -> SendTestResult:
        version, doc = _edited(state, form)
        field_errors(JobSpec, doc, version.path)
        job = job_from(doc, version.path)
        fabric, connection = _target(state, job, sending=True)
        frame, in1, _ = _frames(state).frames(job)
        return send_test(job, frame, fabric, connection, state.config.user, address, in1)

    try:
        result = await asyncio.to_thread(run)
    except (ValidationError, FormErrors) as exc:
        return JSONResponse({"ok": False, "message": "fix the job first: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in _errors(exc).items())})
    except AccessDeniedError as exc:
        return JSONResponse({"ok": False, "message": f"access denied: {exc}"})
    except MailgemError as exc:
        return JSONResponse({"ok": False, "message": str(exc)})
    return JSONResponse({"ok": True, "message": _sent(result)})


async def save(request: Request) -> Response:
    state = state_of(request)
    form = await request.form()
    try:
        version, doc = await asyncio.to_thread(_edited, state, form)
        field_errors(JobSpec, doc, version.path)
        job_from(doc, version.path)
    except (ValidationError, FormErrors) as exc:
        return JSONResponse({"fields": _errors(exc), "message": "not saved: fix the fields marked first"})
    except MailgemError as exc:
        return JSONResponse({"message": f"not saved: {exc}"})
    try:
        await asyncio.to_thread(version.copy().save, doc, version.digest)
    except ConflictError as exc:
        return JSONResponse({"conflict": exc.diff, "message": str(exc)})
    except OSError as exc:
        return JSONResponse({"message": f"not saved: cannot write {version.path}: {exc.strerror or exc}"})
    return JSONResponse({"redirect": "/job?saved=1"})


async def attachment(request: Request) -> Response:
    """One attachment of the last preview, to download and open."""
    state = state_of(request)
    with state.lock:
        messages = state.previews
    m, a = request.path_params["message"], request.path_params["index"]
    if m >= len(messages) or a >= len(messages[m].attachments):
        return Response("no such attachment in the last preview: refresh it", status_code=404)
    file_name, content_type, _, payload = messages[m].attachments[a]
    return Response(payload, media_type=content_type,
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(file_name, safe='')}"})
