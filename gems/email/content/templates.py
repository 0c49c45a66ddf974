"""What each template sees, and checking every template before a run.

A template is checked in two steps, both before any data is read or any message built:

1. Statically: names it uses that its context does not have (``jinja2.meta``) are errors, with
   "did you mean" (difflib) and the names that template has. This covers branches a sample
   render would not take.
2. Rendered once against a *sample context*: the real ``job``, ``params`` and run date, and a
   sample row made from the frame's columns (and their types, when known), within the sandbox's
   limits (``sandbox.py``: the sample render is protected like every other). A missing attribute
   (``row.citty``, ``params.regoin``) is an error, and so is going over a limit (``{{ 'a' *
   10**9 }}`` is refused here, before Spark starts); any other failure with made-up values is
   only a warning, since real data may well render (``mailgem preview`` shows the real thing).

When the columns are not known (a ``transform`` changes them and Spark has not run), ``row`` and
``group`` accept any attribute, and only the first step and ``params`` are checked.
"""

from __future__ import annotations

import datetime as dt
import decimal
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
import jinja2.meta
from jinja2.sandbox import SecurityError
from markupsafe import Markup

from ..properties import EmailProperties
from .render import base_context, render_checked, template_environment
from .sandbox import TemplateLimitError

__all__ = ["BASE_NAMES", "MESSAGE_NAMES", "BODY_NAMES", "SECTION_NAMES", "template_names", "templates_of", "check_templates",
           "sample_value", "TemplateProblem", "is_template"]

# Every template of a run: the job's name, the run's UTC timestamp and date, and the job's params.
BASE_NAMES = ("job", "run_ts", "run_date", "params")
# Every template of one message (subject, recipients, attachment file names, send_if): plus its rows.
MESSAGE_NAMES = (*BASE_NAMES, "row_count", "total_row_count", "part", "columns", "rows", "aggregates", "in1_row_count")
# skip_if, once per run: the whole frame.
RUN_NAMES = (*BASE_NAMES, "row_count", "columns", "rows", "aggregates")
# Conditions: their result must read as true or false (see conditions.py).
CONDITIONS = ("send_if", "skip_if")
# Bodies: plus the rendered table and how much of it is shown.
BODY_NAMES = (*MESSAGE_NAMES, "table", "table_text", "shown_rows", "truncated", "chart", "chart_text", "sections",
              "sections_text")
# A section's title and text: a message template's names, plus its own rows (``section``).
SECTION_NAMES = (*MESSAGE_NAMES, "section")
_MODE_NAMES = {"report": (), "per_group": ("group",), "per_row": ("row",)}


def template_names(template: str, mode: str) -> tuple[str, ...]:
    """The names template ``template`` (``subject``, ``html_body``, ``to[0]``,
    ``attachments[0].file_name``, ``ledger.run_key``) sees in ``mode``, in documentation order."""
    if template == "ledger.run_key":
        return BASE_NAMES
    if template == "skip_if":
        return RUN_NAMES
    names = (BODY_NAMES if template in ("text_body", "html_body") else SECTION_NAMES if template.startswith("sections[")
             else MESSAGE_NAMES)
    return names + _MODE_NAMES[mode]


def is_template(value: str) -> bool:
    """Whether an address entry is a Jinja2 template rendered per message."""
    return "{{" in value or "{%" in value


def templates_of(props: EmailProperties) -> list[tuple[str, str, bool]]:
    """``(path, source, is_html)`` of every template in the properties."""
    out = [("subject", props.subject, False)]
    if props.text_body is not None:
        out.append(("text_body", props.text_body, False))
    if props.html_body is not None:
        out.append(("html_body", props.html_body, True))
    out += [(f"attachments[{i}].file_name", a.file_name, False) for i, a in enumerate(props.attachments)]
    out += [(f"files[{i}].{k}", v, False) for i, f in enumerate(props.files) for k, v in (("path", f.path),
            ("file_name", f.file_name)) if v is not None and is_template(v)]
    out += [(f"sections[{i}].{part}", source, False) for i, s in enumerate(props.sections)
            for part, source in (("title", s.title), ("text", s.text)) if source is not None]
    out += [(f"{f}[{i}]", v, False) for f in ("to", "cc", "bcc") for i, v in enumerate(getattr(props, f))
            if is_template(v)]
    out += [(f"headers.{name}", value, False) for name, value in props.headers.items() if is_template(value)]
    if props.ledger is not None:
        out.append(("ledger.run_key", props.ledger.run_key, False))
    out += [(name, getattr(props, name), False) for name in CONDITIONS if getattr(props, name) is not None]
    return out


class _AnyColumn(dict[str, Any]):
    """``row``/``group`` when the columns are unknown: every attribute is a sample string."""

    def __missing__(self, key: str) -> str:
        return "sample"


class _Named(dict[str, Any]):
    """A sample mapping that remembers what it stands for and which keys were asked for and
    missing (Jinja2's message says only "'dict object' has no attribute ..."), for "did you mean"."""

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.name = name
        self.missed: list[str] = []

    def __missing__(self, key: str) -> Any:
        self.missed.append(key)
        raise KeyError(key)


def sample_value(type_name: str | None) -> Any:
    """A made-up value of a column type (Arrow or Spark type names); a string when unknown."""
    t = (type_name or "").lower()
    if t.startswith(("int", "uint", "long", "short", "byte", "bigint", "smallint", "tinyint")):
        return 1
    if t.startswith(("double", "float", "halffloat")):
        return 1.5
    if t.startswith("decimal"):
        return decimal.Decimal("1.50")
    if t.startswith(("bool",)):
        return True
    if t.startswith("timestamp"):
        return dt.datetime(2024, 1, 31, 12, 0)
    if t.startswith(("date",)):
        return dt.date(2024, 1, 31)
    return "sample"


@dataclass(frozen=True)
class TemplateProblem:
    """One finding about a template: ``path``, ``severity`` (``error``/``warning``), ``message``."""

    path: str
    severity: Literal["error", "warning"]
    message: str


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


_MISSING_ATTRIBUTE = re.compile(r"has no attribute '(?P<name>[^']*)'|'(?P<undef>[^']*)' is undefined")


def _sample_context(props: EmailProperties, template: str, *, job: str, params: Mapping[str, Any] | None,
                    columns: Mapping[str, str | None] | None) -> dict[str, Any]:
    ctx = base_context(job, dt.datetime.now(dt.UTC), {})
    ctx["params"] = _Named("params", params) if params is not None else _AnyColumn()
    if template == "ledger.run_key":
        return ctx
    row: dict[str, Any] = (_Named("row", {c: sample_value(t) for c, t in columns.items()})
                           if columns is not None else _AnyColumn())
    ctx.update(row_count=1, total_row_count=1, part=None, columns=list(columns or []), rows=[row],
               aggregates=_sample_aggregates(columns), in1_row_count=1)
    if template == "skip_if":
        del ctx["total_row_count"], ctx["part"], ctx["in1_row_count"]
        return ctx
    if props.mode == "per_row":
        ctx["row"] = row
    elif props.mode == "per_group":
        ctx["group"] = (_Named("group", {g: row[g] for g in props.group_by if g in row}) if columns is not None
                        else _AnyColumn())
    if template in ("text_body", "html_body"):
        ctx.update(table=Markup("<table></table>"), table_text="", shown_rows=1, truncated=False,
                   chart=Markup('<img src="cid:chart">'), chart_text="Chart: ...", sections=Markup("<div></div>"),
                   sections_text="")
    if template.startswith("sections["):  # the section's own rows: the frame's, or in1's (columns unknown here)
        in1 = props.sections[int(template[len("sections["):template.index("]")])].from_ == "in1"
        ctx["section"] = {"row_count": 1, "columns": [] if in1 else list(columns or []), "from": "in1" if in1 else "in0",
                          "rows": [_AnyColumn() if in1 else row]}
    return ctx


class _AnyAggregates(dict[str, Any]):
    """``aggregates`` when the columns are unknown: every column has sample statistics."""

    def __missing__(self, key: str) -> dict[str, Any]:
        return _sample_stats(None)


def _sample_stats(type_name: str | None) -> dict[str, Any]:
    """Made-up statistics of a column of ``type_name`` (the keys :mod:`.aggregates` gives it)."""
    value = sample_value(type_name)
    stats: dict[str, Any] = {"count": 1, "nulls": 0, "min": value, "max": value}
    if type_name is None or isinstance(value, int | float | decimal.Decimal):  # unknown type: maybe numbers
        stats["sum"] = value
        if not isinstance(value, bool):
            stats["mean"] = value
    return stats


def _sample_aggregates(columns: Mapping[str, str | None] | None) -> dict[str, Any]:
    if columns is None:
        return _AnyAggregates()
    return _Named("aggregates", {c: _sample_stats(t) for c, t in columns.items()})


def check_templates(props: EmailProperties, *, job: str = "email", params: Mapping[str, Any] | None = None,
                    columns: Mapping[str, str | None] | None = None) -> list[TemplateProblem]:
    """Check every template of ``props``; see the module docstring.

    Args:
        job: the job's (gem's) name, ``job`` in templates.
        params: the job's params; ``None`` when not known (any ``params.x`` passes).
        columns: the input frame's columns and their type names (``None`` for unknown types);
            ``None`` when the columns are not known.

    Returns:
        problems: ``error`` for syntax errors, undefined names and a sample render the sandbox
        refused (an unsafe attribute, or over a limit: a value, the output or the work, see
        ``sandbox.py``), ``warning`` for a sample render that failed otherwise.
    """
    out: list[TemplateProblem] = []
    for path, source, html in templates_of(props):
        env = template_environment(html)
        try:
            ast = env.parse(source)
            compiled = env.from_string(source)  # also finds unknown filters and tests
        except jinja2.TemplateSyntaxError as exc:
            out.append(TemplateProblem(path, "error", f"template syntax error on line {exc.lineno}: {exc.message}"))
            continue
        available = list(template_names(path, props.mode))
        unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - set(available))
        for name in unknown:
            out.append(TemplateProblem(path, "error", f"{name!r} is undefined{_did_you_mean(name, available)}; "
                                                      f"this template sees: {', '.join(available)}"))
        if unknown:
            continue
        ctx = _sample_context(props, path, job=job, params=params, columns=columns)
        try:
            if path in CONDITIONS:
                out += _condition_result(path, source, ctx)
                continue
            render_checked(path, compiled, ctx)
        except SecurityError as exc:  # the sandbox refused: an unsafe attribute, or over a limit
            out.append(TemplateProblem(path, "error", str(exc) if isinstance(exc, TemplateLimitError) else
                                       f"the template sandbox refused it: {exc}"))
        except jinja2.UndefinedError as exc:
            known = _undefined_message(exc.message or "", ctx)
            out.append(TemplateProblem(path, "error", known) if known else TemplateProblem(
                path, "warning", f"rendering with a sample row: {exc.message}; it may depend on the data (e.g. "
                                 "rows[5] of a short frame): check the real messages with `mailgem preview`"))
        except Exception as exc:  # noqa: BLE001 - made-up values may fail where real ones do not
            out.append(TemplateProblem(path, "warning", f"rendering with sample values raised {type(exc).__name__}: "
                                                        f"{exc}; check the real messages with `mailgem preview`"))
    return out


def _undefined_message(message: str, ctx: dict[str, Any]) -> str | None:
    """For a column or param that does not exist: what is missing and what exists instead
    (columns for ``row``/``group``, params keys). ``None`` for anything else."""
    match = _MISSING_ATTRIBUTE.search(message)
    name = (match.group("name") or match.group("undef")) if match else None
    if name is None:
        return None
    owners = [ctx.get("params"), ctx.get("group"), ctx.get("row"), ctx.get("aggregates"), *(ctx.get("rows") or [])]
    for value in owners:
        if isinstance(value, _Named) and name in value.missed:
            what = "param" if value.name == "params" else "column"
            keys = list(value)
            have = ", ".join(keys) or "none"
            if value.name == "group":
                have += " (a group has only its group_by columns)"
            return f"{value.name}.{name}: no {what} {name!r}{_did_you_mean(name, keys)}; there are: {have}"
    return None


def _condition_result(path: str, source: str, ctx: dict[str, Any]) -> list[TemplateProblem]:
    """A condition evaluated with the sample context as a run would (an expression's value, or
    the rendered text): text that is neither true nor false is a warning (sample values made it).

    Raises:
        what evaluating it raises, for :func:`check_templates` to report.
    """
    from .conditions import Condition, truth
    from .render import TemplateError

    condition = Condition(path, source)
    value = condition.evaluate(ctx)
    try:
        truth(path, value, text=not condition.is_expression)
    except TemplateError as exc:
        return [TemplateProblem(path, "warning", f"with sample values, {str(exc).removeprefix(path + ': ')}")]
    return []
