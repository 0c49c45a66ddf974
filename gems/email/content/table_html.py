"""The body table as HTML and as text, and the HTML document the body travels in.

Mail clients differ in what CSS they keep (tested here: Chromium, i.e. what Apple Mail's
WebKit and browser webmail render from the same markup; the choices below follow what Gmail,
Outlook and Apple Mail are documented to support):

- A ``<style>`` block in the document's ``<head>`` carries what repeats per cell (padding,
  borders, right alignment, no wrapping of numbers, dates and booleans): Gmail (web and apps),
  Apple Mail, Outlook (desktop and web) and Yahoo keep class selectors in ``<head>``, and one
  ``class="n"`` costs 10 bytes a cell where the inline styles cost ~140, so a 60-column table
  shows 40+ rows within the 90 KB budget.
- Inline fallbacks only where a client dropping the ``<style>`` block (Gmail with a
  non-Google account, some webmail) would lose legibility: the table's and headers' colours
  and backgrounds, the header's alignment. Text colour is always set with its background, so
  a client that darkens the canvas but keeps inline styles still shows the table as a light
  card; ``color-scheme: light dark`` and a ``prefers-color-scheme: dark`` block give clients
  that honour them (Apple Mail) a dark table instead.
- A wide table scrolls sideways inside its own ``<div>`` (``overflow-x: auto``) and says how
  many columns it has, so a 390 px phone does not cut it after a few columns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jinja2
from markupsafe import Markup, escape

from ..properties import HIGHLIGHT_STYLES
from .cells import clip
from .table import Table

__all__ = ["html_table", "text_table", "html_document", "STYLE", "WIDE_COLUMNS"]

# Light: text #101828 on #ffffff (17.7:1), headers #1d2939 on #eef1f5, highlights #7a271a on
# #fee4e2 and the like (all ≥ 7:1). Dark: #f2f4f7 on #101828 and on #344054 (≥ 9:1). Every pair is
# at least WCAG AA's 4.5:1 (checked in Chromium by tests/test_report_render.py).
STYLE = """body{margin:0;padding:12px;background-color:#ffffff;color:#101828;font-family:Arial,Helvetica,sans-serif;font-size:14px}
.mg-wrap{overflow-x:auto;max-width:100%;background-color:#ffffff;color:#101828}
table.mg{border-collapse:collapse;font-size:13px}
table.mg th,table.mg td{padding:4px 10px;border:1px solid #d0d5dd;vertical-align:top}
table.mg th{padding:6px 10px}
table.mg td{overflow-wrap:break-word}
table.mg .x{min-width:14em;overflow-wrap:anywhere;word-break:break-word}
table.mg .n{text-align:right;white-space:nowrap}
table.mg .t{white-space:nowrap}
table.mg .c{text-align:center}
table.mg .r{text-align:right}
table.mg .l{text-align:left}
table.mg .w{background-color:#fef0c7;color:#7a2e0e;font-weight:bold}
table.mg .b{background-color:#fee4e2;color:#7a271a;font-weight:bold}
table.mg .g{background-color:#d1fadf;color:#054f31;font-weight:bold}
table.mg tfoot td{font-weight:bold;background-color:#eef1f5;color:#101828;border-top:2px solid #667085}
p.mg-note{font-size:12px;margin:6px 0}
@media (prefers-color-scheme:dark){
body,.mg-wrap,table.mg{background-color:#101828!important;color:#f2f4f7!important}
table.mg th,table.mg tfoot td{background-color:#344054!important;color:#f2f4f7!important}
table.mg th,table.mg td{border-color:#475467!important}
table.mg .w{background-color:#4e1d09!important;color:#fedf89!important}
table.mg .b{background-color:#55160c!important;color:#fecdca!important}
table.mg .g{background-color:#053321!important;color:#a6f4c5!important}
}"""

# Inline fallbacks (see the module docstring): the colours with their backgrounds.
_TABLE_STYLE = "border-collapse:collapse;background-color:#ffffff;color:#101828;font-family:Arial,Helvetica,sans-serif;font-size:13px"
_TH_STYLE = "background-color:#eef1f5;color:#1d2939;text-align:{};padding:6px 10px;border:1px solid #d0d5dd"
_WRAP_STYLE = "overflow-x:auto;max-width:100%;background-color:#ffffff;color:#101828"
# More columns than this: a phone shows only some, so the note says how to see the rest.
WIDE_COLUMNS = 6

_CLASS = {"number": "n", "time": "t", "bool": "t", "text": ""}
_ALIGN_CLASS = {"left": "l", "right": "r", "center": "c"}
_MARK_CLASS = {"warn": "w", "bad": "b", "good": "g"}


# A text column with a value longer than this is "long text": it gets a minimum width and may
# break anywhere (a 200-character token), so it neither squeezes to one letter a line beside
# columns that never wrap nor widens the table by a whole token.
LONG_TEXT = 40


def _classes(table: Table) -> list[str]:
    """Per column, the cell's class attribute (`` class="n"``) or ``""``: kind (long text
    ``x``), then alignment when it differs from the kind's."""
    out = []
    for c, (kind, align) in enumerate(zip(table.kinds, table.align, strict=True)):
        long_text = kind == "text" and any(len(row[c]) > LONG_TEXT for row in table.rows)
        names = ["x" if long_text else _CLASS[kind]]
        default = "right" if kind == "number" else "left"
        if align != default:
            names.append(_ALIGN_CLASS[align])
        joined = " ".join(n for n in names if n)
        out.append(f' class="{joined}"' if joined else "")
    return out


def _marked(cell: str, style: str | None, ascii_only: bool = False) -> str:
    if style is None:
        return cell
    return f"{_ASCII_MARKERS[style] if ascii_only else HIGHLIGHT_STYLES[style][0]} {cell}"


# Where the text part's charset cannot hold ▲ ✖ ✔ (a connection's charset: iso-8859-1).
_ASCII_MARKERS = {"warn": "[!]", "bad": "[x]", "good": "[ok]"}
# In HTML the markers are character references, which any charset can carry.
_HTML_MARKERS = {marker: f"&#{ord(marker)};" for marker, _ in HIGHLIGHT_STYLES.values()}


def _html_markers(html: str) -> str:
    for marker, reference in _HTML_MARKERS.items():
        html = html.replace(marker, reference)
    return html


_TABLE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    """<div class="mg-wrap" style="{{ wrap_style }}">
<table class="mg" role="table" cellspacing="0" cellpadding="4" style="{{ table_style }}">
<thead><tr>{% for c in header %}<th style="{{ th_styles[loop.index0] }}">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{{ body }}</tbody>
{% if totals %}<tfoot><tr>{% for cell in totals %}<td{{ classes[loop.index0] }}>{{ cell }}</td>{% endfor %}</tr></tfoot>
{% endif %}
</table>
{% for line in notes %}<p class="mg-note">{{ line }}</p>
{% endfor %}
</div>
""")


def _row_html(table: Table, classes: list[str], r: int) -> str:
    """One ``<tr>`` of the table body: each cell escaped (markupsafe, as Jinja2's autoescape)."""
    marks = table.marks[r] if table.marks else None
    cells = []
    for c, cell in enumerate(table.rows[r]):
        style = marks[c] if marks else None
        if style is None:
            cells.append(f"<td{classes[c]}>{escape(cell)}</td>")
        else:
            names = " ".join(n for n in (classes[c][len(' class="'):-1], _MARK_CLASS[style]) if n)
            # The marker becomes a character reference with the rest of the table (_html_markers).
            cells.append(f'<td class="{names}">{escape(_marked(cell, style))}</td>')
    return "<tr>" + "".join(cells) + "</tr>\n"


def _body(table: Table, classes: list[str], n: int) -> str:
    """The first ``n`` body rows as HTML; rows are made once per table and kept in
    :attr:`Table.html_rows`, so each try of the budget search only joins them."""
    done = table.html_rows
    for r in range(len(done), min(n, len(table.rows))):
        done.append(_row_html(table, classes, r))
    return "".join(done[:n])


def _notes(table: Table, shown: int, note: str) -> list[str]:
    """The lines under the table: highlight legend, rows shown, how to see every column."""
    lines = ["; ".join(table.legend)] if table.legend else []
    if shown < table.total:
        lines.append(f"Showing {shown:,} of {table.total:,} rows{f'; {note}' if note else ''}.")
    if len(table.header) > WIDE_COLUMNS:
        lines.append(f"{len(table.header)} columns: on a narrow screen, scroll the table sideways to see them all.")
    return lines


def html_table(table: Table, shown: int, note: str = "") -> Markup:
    """The first ``shown`` rows as an HTML table (classes styled by :data:`STYLE`, inline
    colour fallbacks), in a sideways-scrolling container, with the notes under it: the
    highlight legend, "Showing N of M rows" (plus ``note``), and the column count of a wide table."""
    classes = _classes(table)
    th_styles = [_TH_STYLE.format(a) for a in table.align]
    return Markup(_html_markers(_TABLE.render(header=table.header, body=Markup(_body(table, classes, shown)), classes=[Markup(c) for c in classes],
                                totals=table.totals, notes=_notes(table, shown, note), th_styles=th_styles,
                                table_style=_TABLE_STYLE, wrap_style=_WRAP_STYLE)))


_LINE_BREAKS = re.compile(r"\s*[\r\n\u2028\u2029]+\s*")


def text_table(table: Table, shown: int, max_width: int = 40, charset: str = "utf-8") -> str:
    """The first ``shown`` rows as a fixed-width text table, for the text/plain alternative,
    with the totals row, highlight markers and legend as in the HTML table (ASCII markers
    ``[!]``, ``[x]``, ``[ok]`` where ``charset`` cannot hold ▲ ✖ ✔). Line breaks inside a cell
    become spaces, so every row stays one line."""
    def one_line(text: str) -> str:
        return clip(_LINE_BREAKS.sub(" ", text), max_width)

    marks = table.marks
    ascii_only = bool(marks) and not _holds(charset, "".join(m for m, _ in HIGHLIGHT_STYLES.values()))
    header = [one_line(h) for h in table.header]
    rows = [[one_line(_marked(c, marks[r][i] if marks else None, ascii_only)) for i, c in enumerate(row)]
            for r, row in enumerate(table.rows[:shown])]
    footer = [[one_line(c) for c in table.totals]] if table.totals else []
    widths = [max([len(h)] + [len(r[i]) for r in rows + footer]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if table.align[i] == "right" else c.center(w) if table.align[i] == "center"
                         else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    rule = "  ".join("-" * w for w in widths)
    out = [line(header), rule] + [line(r) for r in rows] + ([rule, line(footer[0])] if footer else [])
    legend = "; ".join(table.legend)
    if ascii_only:
        for style, (marker, _) in HIGHLIGHT_STYLES.items():
            legend = legend.replace(marker, _ASCII_MARKERS[style])
    out += [legend] if legend else []
    if shown < table.total:
        out.append(f"Showing {shown:,} of {table.total:,} rows.")
    return "\n".join(out)


def _holds(charset: str, text: str) -> bool:
    try:
        text.encode(charset)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


_HEAD = (
    '<meta charset="{charset}">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<meta name="color-scheme" content="light dark">\n<meta name="supported-color-schemes" content="light dark">\n'
    f"<style>\n{STYLE}\n</style>\n")
_HAS_HEAD = re.compile(r"<head(\s[^>]*)?>", re.IGNORECASE)
_HAS_HTML = re.compile(r"<html(\s[^>]*)?>", re.IGNORECASE)
_HAS_DOCTYPE = re.compile(r"\s*<!doctype", re.IGNORECASE)


def html_document(body: str, charset: str = "utf-8") -> str:
    """``body`` (an HTML fragment, or a whole document) as a whole document: doctype, ``<html>``,
    a ``<head>`` with the charset, the viewport (phones lay it out at their width), the colour
    schemes it supports and :data:`STYLE`; a document the template wrote itself gets the same
    ``<head>`` elements added to its own."""
    head = _HEAD.replace("{charset}", escape(charset))
    doctype = "" if _HAS_DOCTYPE.match(body) else "<!DOCTYPE html>\n"  # without one, browsers render in quirks mode
    found = _HAS_HEAD.search(body)
    if found:
        return doctype + body[:found.end()] + "\n" + head + body[found.end():]
    found = _HAS_HTML.search(body)
    if found:
        return doctype + body[:found.end()] + f"\n<head>\n{head}</head>" + body[found.end():]
    return (f'<!DOCTYPE html>\n<html>\n<head>\n{head}</head>\n'
            f'<body style="margin:0;padding:12px;background-color:#ffffff;color:#101828;'
            f'font-family:Arial,Helvetica,sans-serif;font-size:14px">\n{body}</body>\n</html>\n')
