"""The chart's look and axes: fonts (Latin and CJK), sizes readable on a phone, an opaque
background for light and dark clients, no mathtext, label truncation, and the x axis (time,
number or category) with ticks that do not overlap.

Everything here draws with matplotlib's object API on a :class:`~matplotlib.figure.Figure`
(Agg canvas, no display); :func:`chart_style` is the ``rcParams`` scope a chart is drawn and
saved in.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import unicodedata
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from .cells import clip, tzinfo_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["chart_style", "font_families", "has_wide_chars", "cut", "setup_x_axis", "XAxis",
           "FIGURE_SIZE_IN", "DPI", "LABEL_CHARS", "BACKGROUND", "BORDER", "INK"]

log = logging.getLogger("mailgem.gems")

XAxis = Literal["category", "number", "time"]

# The image is 1,200 x 720 px: 6 x 3.6 inches at 200 dpi, shown 600 CSS px wide (2x density).
DPI = 200
FIGURE_SIZE_IN = (6.0, 3.6)
# Font sizes in points. One point is DPI/72 = 2.78 image px; shown at 600 CSS px, an image px
# is 0.5 CSS px; on a 390 px phone the 600 px image shrinks to 65%, so a point is
# 2.78 * 0.5 * 0.65 = 0.90 CSS px there: tick labels of 11 pt are 9.9 CSS px (the old 8 pt were
# 7.2 px, with an x-height near 4), titles of 14 pt are 12.6 px.
TICK_PT = 11
LABEL_PT = 12
TITLE_PT = 14
CAPTION_PT = 11
# Opaque everywhere (never transparent: dark-mode clients would show dark text on black): a
# white card with a light-grey border reads on light and dark backgrounds alike.
BACKGROUND = "#ffffff"
BORDER = "#cbd2d9"
INK = "#1f2933"
MUTED = "#52606d"
# Labels drawn on the chart (ticks, legend) are cut to this many characters ("…" at the end).
LABEL_CHARS = 30
# At most this many category ticks are labelled; more are thinned to every k-th.
_MAX_CATEGORY_TICKS = 20
# The axes take about this share of the figure's width (after tight_layout), for the overlap estimate.
_AXES_WIDTH_PX = FIGURE_SIZE_IN[0] * DPI * 0.85
# A glyph's advance as a share of the font size: about 0.6 em for Latin (DejaVu Sans), 1 em
# for East Asian wide characters.
_NARROW_EM, _WIDE_EM = 0.6, 1.0
# Font families with CJK glyphs, in order of preference (fonts-noto-cjk installs the first ones).
CJK_FAMILIES = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
                "Source Han Sans", "WenQuanYi Zen Hei", "Droid Sans Fallback")
LATIN_FAMILY = "DejaVu Sans"  # matplotlib's own font: always there


def cut(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (the last one "…" when cut)."""
    return clip(" ".join(text.split()), limit)


def has_wide_chars(text: str) -> bool:
    """Whether ``text`` holds East Asian wide or full-width characters (CJK ideographs, kana, hangul)."""
    return any(unicodedata.east_asian_width(ch) in "WF" for ch in text)


@functools.lru_cache(maxsize=4)
def font_families(candidates: tuple[str, ...] = CJK_FAMILIES, file_hint: str = "cjk") -> tuple[tuple[str, ...], bool]:
    """The font family list for charts: DejaVu Sans, then the first of ``candidates`` installed
    (matplotlib falls back glyph by glyph along the list), and whether a CJK font was found.

    matplotlib's font cache is built once; fonts installed later (``apt-get install
    fonts-noto-cjk``) are found by scanning the system's fonts for files whose name holds
    ``file_hint`` and adding them. Without one, logs a warning (once): CJK characters in
    charts may not show.
    """
    from matplotlib import font_manager

    manager = font_manager.fontManager
    if not {f.name for f in manager.ttflist} & set(candidates):
        for path in font_manager.findSystemFonts():
            if file_hint in os.path.basename(path).lower():
                with contextlib.suppress(OSError, RuntimeError, ValueError):  # an unreadable font file: skip it
                    manager.addfont(path)
    known = {f.name for f in manager.ttflist}
    found = [name for name in candidates if name in known]
    if not found:
        log.warning("charts: no CJK font found (tried %s): Chinese, Japanese and Korean characters may not "
                    "show; install fonts-noto-cjk", ", ".join(candidates))
    return (LATIN_FAMILY, *found[:1]), bool(found)


@contextlib.contextmanager
def chart_style() -> Iterator[None]:
    """The ``rcParams`` a chart is drawn and saved in: Agg, no mathtext (text from data is
    drawn as written: ``$5 to $10`` is not maths, ``$\\foo$`` is no error), the font family
    list of :func:`font_families`, sizes readable on a phone and opaque colours."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    families, _ = font_families()
    with matplotlib.rc_context({
        "text.parse_math": False, "text.usetex": False, "font.family": list(families),
        "font.size": LABEL_PT, "xtick.labelsize": TICK_PT, "ytick.labelsize": TICK_PT,
        "axes.labelsize": LABEL_PT, "axes.titlesize": TITLE_PT, "legend.fontsize": TICK_PT,
        "figure.facecolor": BACKGROUND, "axes.facecolor": BACKGROUND, "savefig.facecolor": BACKGROUND,
        "savefig.edgecolor": BORDER, "savefig.transparent": False,
        "text.color": INK, "axes.labelcolor": INK, "xtick.color": INK, "ytick.color": INK,
        "axes.edgecolor": MUTED, "axes.unicode_minus": True,
    }):
        yield


def _width_px(text: str) -> float:
    """Estimated width of ``text`` drawn horizontally at :data:`TICK_PT`, in image px."""
    ems = sum(_WIDE_EM if unicodedata.east_asian_width(ch) in "WF" else _NARROW_EM for ch in text)
    return ems * TICK_PT * DPI / 72


def crowded(labels: Sequence[str]) -> bool:
    """Whether ``labels`` side by side along the x axis would overlap (then they are rotated).
    Short labels stay horizontal: 12 labels of 4 characters take 73 of the 85 px each has."""
    if not labels:
        return False
    slot = _AXES_WIDTH_PX / len(labels)
    return max(_width_px(label) for label in labels) > slot * 0.9


def _category_axis(ax: Axes, labels: Sequence[str]) -> None:
    """One tick per category (every k-th when there are more than 20), labels rotated only when crowded."""
    step = max(1, math.ceil(len(labels) / _MAX_CATEGORY_TICKS))
    positions = list(range(0, len(labels), step))
    shown = [cut(labels[i]) for i in positions]
    if crowded(shown):
        ax.set_xticks(positions, shown, rotation=40, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(positions, shown)
    for tick in ax.get_xticklabels():
        tick.set_parse_math(False)


def setup_x_axis(ax: Axes, kind: XAxis, labels: Sequence[str], tz: str | None) -> None:
    """Ticks of the x axis.

    ``time``: x values are matplotlib dates (days since its epoch, UTC), labelled in ``tz``
    (an IANA name or a fixed offset; ``None``: as UTC, i.e. naive timestamps as written) by an
    ``AutoDateLocator`` (3 to 8 ticks) and a ``ConciseDateFormatter``. ``number``: a numeric
    axis. ``category``: x values are 0..n-1 with ``labels`` (one per point).
    """
    if kind == "time":
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        zone = tzinfo_of(tz) if tz else None  # an IANA name or a fixed offset (+01:00)
        locator = AutoDateLocator(tz=zone, minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=zone))
    elif kind == "number":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=7))
    else:
        _category_axis(ax, labels)
