"""The Starlette application: its configuration, its state while it runs, its pages.

Pages: ``/fabric`` (connections, Test connection, secrets; :mod:`.fabric_views`) and ``/job``
(the Email gem's form, its live preview, Send test; :mod:`.job_views`). Every request passes
:class:`~.security.Guard` first (token, CSRF, host).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from mailgem.connections.errors import MailgemError
from mailgem.fabric.model import Fabric

from .frames import FrameCache
from .previews import PreviewMessage
from .security import Guard
from .yamlfile import YamlFile

__all__ = ["UiConfig", "UiState", "create_app", "state_of", "templates"]

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


@dataclass(frozen=True)
class UiConfig:
    """What ``mailgem ui`` was started with.

    Attributes:
        fabric, job: the files shown (either may be ``None``, not both).
        local: previews and Send test go to the embedded local SMTP server; ``outbox`` is its folder.
        user: who uses the dialogs (``--user``, ``$MAILGEM_USER``, the OS login): the fabric's
            team access applies to every page and action.
        token: the access token (not in ``repr``). hosts: the ``Host`` values the server
            answers to (``None``: any, when it listens on every address). cookie: the session
            cookie's name (:func:`~.security.cookie_name`).
        master: the Spark master for a job with a transform.
    """

    fabric: Path | None
    job: Path | None
    local: bool
    outbox: Path
    user: str
    token: str = field(repr=False)
    hosts: frozenset[str] | None
    cookie: str = "mailgem_ui"
    master: str = "local[2]"


@dataclass
class UiState:
    """What the app keeps while it runs.

    Attributes:
        versions: the YAML versions pages were rendered from, by digest (a save can tell a
            conflicting edit on disk).
        frames: the job's kept input frame (:class:`~.frames.FrameCache`), made on first use.
        local: the embedded SMTP server's fabric and what stops it (``--local``; started by
            the first Send test).
        previews: the last preview's messages (their attachments are downloaded from here).
        latest_preview: the number of the newest preview request: an older one still waiting
            is dropped, not built.
    """

    config: UiConfig
    versions: dict[str, YamlFile] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    frames: FrameCache | None = None
    local: tuple[Fabric, contextlib.ExitStack] | None = None
    local_lock: threading.Lock = field(default_factory=threading.Lock)
    previews: list[PreviewMessage] = field(default_factory=list)
    latest_preview: int = 0
    preview_turn: asyncio.Lock = field(default_factory=asyncio.Lock)

    def remember(self, version: YamlFile) -> YamlFile:
        """Keep ``version`` (the text a page shows) for its save; the last few per file."""
        with self.lock:
            self.versions[version.digest] = version
            mine = [d for d, v in self.versions.items() if v.path == version.path]
            for old in mine[:-20]:
                del self.versions[old]
        return version

    def version(self, digest: str) -> YamlFile:
        """The version a page was rendered from.

        Raises:
            MailgemError: unknown (the server restarted since the page loaded): reload it.
        """
        with self.lock:
            found = self.versions.get(digest)
        if found is None:
            raise MailgemError("this page is older than the running `mailgem ui`: reload it (your changes are "
                               "still in the form; copy them first)")
        return found


def state_of(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


def create_app(config: UiConfig) -> Starlette:
    """The app for ``config``, wrapped in its :class:`Guard`.

    Raises:
        MailgemError: the fabric or job file cannot be read (reported before serving).
    """
    from . import fabric_views, job_views

    for path in (config.fabric, config.job):
        if path is not None and not path.is_file():
            raise MailgemError(f"{path}: no such file")
    state = UiState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            job_views.shutdown(state)

    async def home(request: Request) -> Response:
        return RedirectResponse("/fabric" if config.fabric is not None else "/job", status_code=303)

    routes = [Route("/", home), *fabric_views.routes(), *job_views.routes(),
              Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ui = state
    app.add_middleware(Guard, token=config.token, hosts=config.hosts, cookie=config.cookie)
    return app
