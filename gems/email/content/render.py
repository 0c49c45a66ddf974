"""Jinja2 rendering of subject, bodies and file names, and the context templates see."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

import jinja2

from mailgem.connections.errors import MailgemError

from .sandbox import LimitedSandbox, TemplateLimitError, render_limited

__all__ = ["template_environment", "render", "TemplateError", "DEFAULT_TEXT", "DEFAULT_HTML", "one_line", "nulls_refused",
           "max_output_chars", "render_checked", "MAX_LINE_CHARS", "MAX_ADDRESS_CHARS", "NullKey"]

DEFAULT_TEXT = """{{ job }}: {% if part %}{{ part }}{% else %}{{ "{:,}".format(row_count) }} {{ "row" if row_count == 1 else "rows" }}{% endif %} ({{ run_date }}).
{% if row_count == 0 %}
The result was empty: no rows matched.
{% else %}
{% if chart_text %}
{{ chart_text }}
{% endif %}

{{ table_text }}
{% endif %}"""
DEFAULT_HTML = """<p style="font-family: Arial, Helvetica, sans-serif; font-size: 14px;">{{ job }}: {% if part %}{{ part }}{% else %}{{ "{:,}".format(row_count) }} {{ "row" if row_count == 1 else "rows" }}{% endif %} ({{ run_date }}).{% if row_count == 0 %} The result was empty: no rows matched.{% endif %}</p>
{% if row_count %}{{ chart }}{{ table }}
{% endif %}"""


# What one render of a template may write, in characters, by kind of template (see
# max_output_chars). A one-line template (subject, header value, file name, run key): ten times
# the 998 characters RFC 5322 §2.1.1 allows a line, room for whitespace that one_line() folds
# away; a longer subject or header fails later anyway.
MAX_LINE_CHARS = 10_000
# An address template (to/cc/bcc) may list a group's recipients: 10,000 rows of 100 characters.
MAX_ADDRESS_CHARS = 1_000_000
_BODIES = ("text_body", "html_body")
_ADDRESSES = ("to[", "cc[", "bcc[")


class TemplateError(MailgemError, ValueError):
    """A template failed to render (undefined variable, bad filter, a limit of the sandbox);
    names the template."""


class NullKey(str):
    """A null group key in templates: prints as ``formats.na_rep`` (``{{ group.region }}`` →
    ``(null)``), is false in a test (``{{ group.region or "unknown" }}``), and is refused by an
    address template like a null (see :func:`nulls_refused`)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


def _null_as_empty(value: Any) -> Any:
    # A null (a null group key, an empty cell) prints as nothing, never as "None".
    return "" if value is None else value


@functools.lru_cache(maxsize=2)
def template_environment(html: bool) -> jinja2.Environment:
    """The sandboxed Jinja2 environment (:class:`~.sandbox.LimitedSandbox`: no template can
    exhaust memory or time): autoescape for HTML, undefined variables are errors, null values
    print as nothing."""
    return LimitedSandbox(autoescape=html, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          finalize=_null_as_empty)


def max_output_chars(name: str) -> int:
    """The most characters template ``name`` (``subject``, ``text_body``, ``to[0]``,
    ``headers.X-Team``, ``attachments[0].file_name``, ``ledger.run_key``) may write in one render:
    a body ``MAX_BODY_BYTES`` (10 MiB), an address template :data:`MAX_ADDRESS_CHARS`, any other
    (one line) :data:`MAX_LINE_CHARS`."""
    return _cap(name)[0]


# name -> _cap(name): a dict, since a render looks it up every time (an lru_cache costs more).
_CAPS: dict[str, tuple[int, str]] = {}


def _cap(name: str) -> tuple[int, str]:
    """``(max_output_chars(name), what kind of template name is)``."""
    cap = _CAPS.get(name)
    if cap is None:
        from ..validate import MAX_BODY_BYTES  # validate imports this module: read at first use

        if name in _BODIES or name.startswith("sections[") and name.endswith("].text"):  # a section's text is body text
            cap = MAX_BODY_BYTES, "a body"
        elif name.startswith(_ADDRESSES):
            cap = MAX_ADDRESS_CHARS, "an address template"
        else:
            cap = MAX_LINE_CHARS, "a one-line template (subject, header, file name, run key)"
        if len(_CAPS) < 4096:  # names come from properties (to[0]...), not data; bounded all the same
            _CAPS[name] = cap
    return cap


def render_checked(name: str, template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render compiled ``template`` (called ``name``) with ``context`` within the sandbox's limits
    and ``name``'s output cap (:func:`max_output_chars`), as :func:`render` does: the checks
    before a run render their sample messages through this.

    Raises:
        TemplateLimitError: over a limit (the message names the limit).
        Exception: whatever the template raises otherwise.
    """
    max_chars, what = _cap(name)
    return render_limited(template, context, max_chars=max_chars, what=what)


@functools.lru_cache(maxsize=256)
def _compile(source: str, html: bool) -> jinja2.Template:
    template = template_environment(html).from_string(source)
    # A template's globals are a ChainMap over the environment's, copied into every render's
    # context (half of a short template's render time); ours never change after creation, so a
    # plain dict gives the same names for half the cost.
    template.globals = dict(template.globals)
    return template


def nulls_refused(context: dict[str, Any]) -> dict[str, Any]:
    """``context`` for an address template: a null in ``row`` or ``group`` is an error when used
    (printed, filtered or tested), so a null key never makes up an address like ``-leads@...``."""
    out = dict(context)
    for owner in ("row", "group"):
        values = context.get(owner)
        if isinstance(values, dict):
            out[owner] = {k: jinja2.StrictUndefined(hint=f"{owner}.{k} is null, so this message has no address from it")
                          if v is None or isinstance(v, NullKey) else v for k, v in values.items()}
    return out


def render(name: str, source: str, context: dict[str, Any], *, html: bool = False) -> str:
    """Render template ``source`` (called ``name`` in errors) with ``context``, within the
    sandbox's limits and ``name``'s output cap (:func:`max_output_chars`).

    Raises:
        TemplateError: syntax error, undefined variable, failing expression, or a value, the
            output or the work over a limit (the message names the limit).
    """
    try:
        return render_checked(name, _compile(source, html), context)
    except TemplateLimitError as exc:
        raise TemplateError(f"{name}: {exc}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: template syntax error on line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        names = ", ".join(sorted(k for k in context if not k.startswith("_")))
        raise TemplateError(f"{name}: {exc.message}; available: {names}") from None
    except Exception as exc:  # a template expression failing is a user error worth naming
        raise TemplateError(f"{name}: {type(exc).__name__}: {exc}") from None


# C0 and C1 control characters other than whitespace: meaningless in a header line, and
# obsolete syntax there (RFC 5322 §4.1), so they are dropped. So are Unicode's bidirectional
# controls (LRM/RLM, ALM, embeddings and overrides, isolates): from data, a right-to-left
# override makes a subject read differently from what it says (Trojan Source, CVE-2021-42574).
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """Fold line breaks and runs of whitespace to single spaces and drop control characters (a
    subject is one header line)."""
    return re.sub(r"\s+", " ", _CONTROLS.sub("", text)).strip()


def base_context(job: str, run_ts: dt.datetime, params: dict[str, Any]) -> dict[str, Any]:
    """Context shared by every template of a run."""
    return {"job": job, "run_ts": run_ts, "run_date": run_ts.date().isoformat(), "params": params}
