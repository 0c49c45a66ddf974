"""Render a received message's HTML part in headless Chromium (Playwright) and measure it there.

Not a test module: the helper of tests/test_report_render.py (issue 23 §3) and of the session's
``browser`` fixture (tests/conftest.py). What it measures is computed in the page, by the browser's
own layout, at a viewport width and in one of three colour schemes:

* ``light``: no emulation (``prefers-color-scheme: light``);
* ``dark``: ``prefers-color-scheme: dark`` (what Apple Mail and iOS honour);
* ``dark-canvas``: a client that darkens the canvas but keeps inline styles — a stylesheet injected
  after load sets ``html, body`` to #121212 / #e8e8e8, as several webmail dark modes do to elements
  without their own colours.

The message's ``cid:`` images (RFC 2392) are replaced by ``data:`` URLs of their related parts, so
the chart shows. Every wait is bounded (``timeout_s``); the measuring script's loops, by ``_MAX_NODES``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

__all__ = ["Cell", "TableBox", "Image", "Rendering", "SCHEMES", "WIDTHS", "ARTIFACTS", "find_chromium",
           "html_with_images", "render", "kind_of", "contrast_ratio", "artifact_path"]

Scheme = Literal["light", "dark", "dark-canvas"]
SCHEMES: tuple[Scheme, ...] = ("light", "dark", "dark-canvas")
WIDTHS = (1000, 390)  # desktop, phone (an iPhone 12-15 is 390 CSS px wide)
_HEIGHT = {1000: 800, 390: 844}
DARK_CANVAS_CSS = "html, body { background: #121212 !important; color: #e8e8e8 !important; }"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
# Where Debian's chromium-headless-shell puts the browser; MAILGEM_CHROMIUM overrides.
_CHROMIUM = ("chromium-headless-shell", "/usr/lib/chromium/chromium-headless-shell", "chromium", "chromium-browser")
_MAX_NODES = 50_000  # cells, text nodes, tables and images a page may have for the measurement

# A number as reports show it: optional currency sign, sign (- + − –), digits with , . or
# (narrow) no-break space separators, an exponent, then an optional % or unit (≤ 5 letters) and
# a marker (▲ ▼ * † ‡). Infinities as ∞.
_NUMBER = re.compile(r"[$€£¥]?\s?[-+−–]?(\d[\d,.\u00a0\u202f ]*\d|\d)([eE][-+]?\d+)?\s?(%|‰|[A-Za-zµ°]{1,5})?\s?[▲▼*†‡]?"
                     r"|[-+−]?∞")
# ISO-like dates, date-times (T or space, optional seconds, fraction, Z / offset / zone name) and times.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s?(Z|[-+]\d{2}:?\d{2}|[A-Z]{2,5})?)?"
                   r"|\d{2}:\d{2}(:\d{2})?")
_BOOLEAN = re.compile(r"true|false", re.IGNORECASE)


def kind_of(text: str) -> str | None:
    """``number``, ``date`` or ``boolean`` when the whole cell text looks like one, else ``None``."""
    text = text.strip()
    for kind, pattern in (("date", _DATE), ("number", _NUMBER), ("boolean", _BOOLEAN)):
        if pattern.fullmatch(text):
            return kind
    return None


def _luminance(rgb: tuple[float, float, float]) -> float:
    """Relative luminance of an sRGB colour, channels 0-255 (WCAG 2.x)."""
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(fg: tuple[float, ...], bg: tuple[float, ...]) -> float:
    """WCAG 2.x contrast ratio of text ``fg`` (RGBA, alpha 0-1, blended over ``bg``) on opaque ``bg`` (RGB)."""
    alpha = fg[3] if len(fg) > 3 else 1.0
    seen = tuple(alpha * f + (1 - alpha) * b for f, b in zip(fg[:3], bg[:3], strict=True))
    light, dark = sorted((_luminance(seen), _luminance(bg[:3])), reverse=True)  # type: ignore[arg-type]
    return (light + 0.05) / (dark + 0.05)


@dataclass(frozen=True)
class Cell:
    """One td/th: its text, kind (:func:`kind_of`), rendered lines and worst text/background contrast.

    ``layout`` cells hold another table (a layout table): their text is not classified.
    ``pairs`` are the (text RGBA, background RGB) pairs of its visible text, for messages.
    """

    tag: str
    text: str
    kind: str | None
    lines: int
    contrast: float | None
    pairs: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    layout: bool


@dataclass(frozen=True)
class TableBox:
    """A table's box: ``fits`` the viewport, or sits in a horizontal ``scroller`` that fits it."""

    left: float
    right: float
    width: float
    fits: bool
    scroller: bool
    scroller_fits: bool

    @property
    def fits_or_scrolls(self) -> bool:
        return self.fits or (self.scroller and self.scroller_fits)


@dataclass(frozen=True)
class Image:
    """An img: rendered width, natural size, and whether it loaded."""

    src: str
    width: float
    natural_width: int
    natural_height: int
    loaded: bool


@dataclass(frozen=True)
class Rendering:
    """What one render measured (see the module docstring)."""

    width: int
    scheme: Scheme
    cells: list[Cell]
    tables: list[TableBox]
    images: list[Image]
    page_scroll_width: int
    screenshot: Path | None

    @property
    def page_scrolls_sideways(self) -> bool:
        return self.page_scroll_width > self.width + 1


def find_chromium() -> str | None:
    """The headless Chromium to launch: $MAILGEM_CHROMIUM (only it, when set), else Debian's
    chromium-headless-shell; ``None`` when there is none."""
    named = os.environ.get("MAILGEM_CHROMIUM")
    for candidate in [named] if named else _CHROMIUM:
        found = shutil.which(candidate) if "/" not in candidate else (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    return None


def html_with_images(message: EmailMessage) -> str:
    """The message's HTML part, its ``cid:`` URLs replaced by ``data:`` URLs of the related parts."""
    html_part = message.get_body(("html",))
    assert html_part is not None, "the message has no HTML part"
    html = html_part.get_content()
    parts = {}
    for part in message.walk():
        cid = part.get("Content-ID")
        if cid and not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes), cid
            parts[str(cid).strip().strip("<>")] = f"data:{part.get_content_type()};base64,{base64.b64encode(payload).decode()}"
    def replace(match: re.Match[str]) -> str:
        return parts.get(unquote(match.group(1)), match.group(0))
    return re.sub(r"cid:([^\"'\s)>]+)", replace, html)


def artifact_path(name: str, width: int, scheme: str) -> Path:
    """``test-artifacts/browser/<name>-<width>-<scheme>.png`` at the repository root (CI keeps it)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:120]
    return ARTIFACTS / f"{safe}-{width}-{scheme}.png"


# Runs in the page. Colours are resolved to RGBA bytes by a 1x1 canvas (any CSS colour syntax);
# a background is composited from the element up to the root over the canvas colour (the
# ``Canvas`` system colour of the root's used color-scheme, unless html/body paint it).
_MEASURE = """(maxNodes) => {
  const ctx = document.createElement('canvas').getContext('2d', {willReadFrequently: true});
  const rgba = (css) => { ctx.clearRect(0, 0, 1, 1); ctx.fillStyle = '#000'; ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1); const d = ctx.getImageData(0, 0, 1, 1).data; return [d[0], d[1], d[2], d[3] / 255]; };
  const probe = document.createElement('div'); probe.style.backgroundColor = 'Canvas';
  document.documentElement.appendChild(probe);
  const canvas = rgba(getComputedStyle(probe).backgroundColor); probe.remove();
  const background = (el) => {
    const layers = [];
    for (let e = el; e && layers.length < maxNodes; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let out = canvas.slice(0, 3);
    for (const c of layers.reverse()) out = out.map((v, i) => c[3] * c[i] + (1 - c[3]) * v);
    return out;
  };
  const vw = window.innerWidth;
  const cells = [...document.querySelectorAll('td, th')].slice(0, maxNodes).map((cell) => {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    const tops = [], pairs = [];
    for (let n = walker.nextNode(), i = 0; n && i < maxNodes; n = walker.nextNode(), i++) {
      if (!n.textContent.trim() || n.parentElement.closest('td, th') !== cell) continue;
      const range = document.createRange(); range.selectNodeContents(n);
      const rects = [...range.getClientRects()].filter((r) => r.width > 0.5 && r.height > 0.5);
      if (!rects.length) continue;
      rects.forEach((r) => tops.push([r.top, r.height]));
      const p = n.parentElement;
      pairs.push([rgba(getComputedStyle(p).color), background(p)]);
    }
    tops.sort((a, b) => a[0] - b[0]);
    let lines = 0, last = -Infinity;
    for (const [top, h] of tops) { if (top > last + Math.max(2, h / 2)) { lines++; last = top; } }
    return {tag: cell.tagName.toLowerCase(), text: cell.innerText.trim(), lines, pairs,
            layout: cell.querySelector('table') !== null};
  });
  const tables = [...document.querySelectorAll('table')].slice(0, maxNodes).map((t) => {
    const r = t.getBoundingClientRect();
    let scroller = null;
    for (let e = t.parentElement; e && e !== document.body; e = e.parentElement) {
      const ox = getComputedStyle(e).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && e.scrollWidth > e.clientWidth) { scroller = e; break; }
    }
    const s = scroller ? scroller.getBoundingClientRect() : null;
    return {left: r.left, right: r.right, width: r.width, fits: r.left >= -1 && r.right <= vw + 1,
            scroller: scroller !== null, scroller_fits: s !== null && s.left >= -1 && s.right <= vw + 1};
  });
  const images = [...document.images].slice(0, maxNodes).map((i) => ({
    src: i.currentSrc.slice(0, 40), width: i.getBoundingClientRect().width,
    natural_width: i.naturalWidth, natural_height: i.naturalHeight, loaded: i.complete && i.naturalWidth > 0}));
  return {cells, tables, images, page_scroll_width: document.scrollingElement.scrollWidth};
}"""


def _cell(raw: dict[str, Any]) -> Cell:
    pairs = tuple((tuple(fg), tuple(bg)) for fg, bg in raw["pairs"])
    worst = min((contrast_ratio(fg, bg) for fg, bg in pairs), default=None)
    kind = None if raw["layout"] else kind_of(raw["text"])
    return Cell(raw["tag"], raw["text"], kind, raw["lines"], worst, pairs, raw["layout"])


def render(browser: Any, html: str, *, width: int, scheme: Scheme, screenshot: Path | None = None,
           timeout_s: float = 20.0) -> Rendering:
    """Load ``html`` in a new page of ``browser`` (a Playwright ``Browser``) at ``width`` CSS px in
    ``scheme``, measure it, and save a full-page PNG to ``screenshot`` when given."""
    context = browser.new_context(viewport={"width": width, "height": _HEIGHT.get(width, 800)},
                                  color_scheme="dark" if scheme == "dark" else "light", device_scale_factor=1)
    try:
        context.set_default_timeout(timeout_s * 1000)
        page = context.new_page()
        page.set_content(html, wait_until="load", timeout=timeout_s * 1000)
        if scheme == "dark-canvas":
            page.add_style_tag(content=DARK_CANVAS_CSS)
        raw = page.evaluate(_MEASURE, _MAX_NODES)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True, timeout=timeout_s * 1000)
    finally:
        context.close()
    return Rendering(width=width, scheme=scheme, cells=[_cell(c) for c in raw["cells"]],
                     tables=[TableBox(**t) for t in raw["tables"]], images=[Image(**i) for i in raw["images"]],
                     page_scroll_width=int(raw["page_scroll_width"]), screenshot=screenshot)
