"""Jinja2 rendering of subject, bodies and file names, and the context templates see."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from connections.errors import MailgemError

__all__ = ["template_environment", "render", "TemplateError", "DEFAULT_TEXT", "DEFAULT_HTML", "one_line"]

DEFAULT_TEXT = """{{ job }}: {{ "{:,}".format(row_count) }} rows ({{ run_date }}).

{{ table_text }}
"""
DEFAULT_HTML = """<p style="font-family: Arial, Helvetica, sans-serif; font-size: 14px;">{{ job }}: {{ "{:,}".format(row_count) }} rows ({{ run_date }}).</p>
{{ table }}
"""


class TemplateError(MailgemError, ValueError):
    """A template failed to render (undefined variable, bad filter); names the template."""


@functools.lru_cache(maxsize=2)
def template_environment(html: bool) -> jinja2.Environment:
    """The sandboxed Jinja2 environment: autoescape for HTML, undefined variables are errors."""
    return SandboxedEnvironment(autoescape=html, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def _compile(source: str, html: bool) -> jinja2.Template:
    return template_environment(html).from_string(source)


def render(name: str, source: str, context: dict[str, Any], *, html: bool = False) -> str:
    """Render template ``source`` (called ``name`` in errors) with ``context``.

    Raises:
        TemplateError: syntax error, undefined variable or failing expression.
    """
    try:
        return _compile(source, html).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: template syntax error on line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        names = ", ".join(sorted(k for k in context if not k.startswith("_")))
        raise TemplateError(f"{name}: {exc.message}; available: {names}") from None
    except Exception as exc:  # a template expression failing is a user error worth naming
        raise TemplateError(f"{name}: {type(exc).__name__}: {exc}") from None


# C0 and C1 control characters other than whitespace: meaningless in a header line, and
# obsolete syntax there (RFC 5322 §4.1), so they are dropped.
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def one_line(text: str) -> str:
    """Fold line breaks and runs of whitespace to single spaces and drop control characters (a
    subject is one header line)."""
    return re.sub(r"\s+", " ", _CONTROLS.sub("", text)).strip()


def base_context(job: str, run_ts: dt.datetime, params: dict[str, Any]) -> dict[str, Any]:
    """Context shared by every template of a run."""
    return {"job": job, "run_ts": run_ts, "run_date": run_ts.date().isoformat(), "params": params}
