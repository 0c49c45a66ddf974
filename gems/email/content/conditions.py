"""``send_if`` and ``skip_if``: conditions written as templates, and what their result means.

A condition that is one expression, ``"{{ row_count > 0 and rows[0].error_rate > 0.05 }}"``, is
evaluated as an expression (Jinja's ``compile_expression`` of the sandboxed environment, within
the sandbox's limits) and its value's truth is used, as ``{% if %}`` would: ``false``, ``0``,
``None``, an empty string or list are false. A string that is one of the words below is read as
that word (``{{ 'yes' if ... else 'no' }}``, a param ``"false"``). Any other condition
(``"{% if ... %}yes{% endif %}"``) is rendered and its text read, trimmed and case-insensitive:
``true``, ``yes``, ``1`` hold; ``false``, ``no``, ``0``, ``none`` and nothing do not; any other
text is an error that names the condition and the text.

``send_if`` is evaluated per message with that message's template context (and ``aggregates``)
before anything of it is built; a condition that fails (an undefined name, a type error) is a
:class:`~.render.TemplateError`: that message's failed row, not the run's end.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.environment import TemplateExpression

from ..properties import EmailProperties
from .render import MAX_LINE_CHARS, TemplateError, render, render_checked, template_environment
from .sandbox import TemplateLimitError
from .template_limits import evaluate_limited
from .unit import Unit

__all__ = ["Condition", "condition", "send_if_skip", "truth", "uses_aggregates", "aggregate_columns", "variables",
           "TRUE_WORDS", "FALSE_WORDS"]

TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0", "", "none"})
# One expression and nothing else but whitespace: "{{ expr }}" (whitespace control included).
_ONE_EXPRESSION = re.compile(r"\A\s*\{\{-?(?P<expr>.*?)-?\}\}\s*\Z", re.DOTALL)


def truth(path: str, value: Any, *, text: bool) -> bool:
    """What a condition's value means (see the module docstring): a string by its words, anything
    else by its truth; with ``text`` (a rendered condition), a string that is none of the words is
    an error, else it is true when not empty.

    Raises:
        TemplateError: ``text`` and none of the words; names ``path`` and the text.
    """
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        if not text:
            return True
        shown = value.strip()
        raise TemplateError(f"{path}: the condition gave {shown[:80]!r}{'...' if len(shown) > 80 else ''}, which is "
                            "neither true nor false: make it an expression like {{ row_count > 0 }}, or render "
                            "true/yes/1 or false/no/0")
    return bool(value)  # StrictUndefined raises here: an undefined value is an error, not false


def _is_one_expression(source: str) -> bool:
    """Whether ``source`` parses to one ``{{ expression }}`` and whitespace around it."""
    try:
        body = template_environment(False).parse(source).body
    except jinja2.TemplateSyntaxError:
        return False
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return False
    values = [n for n in body[0].nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    return len(values) == 1 and not isinstance(values[0], nodes.TemplateData)


class Condition:
    """A compiled condition: ``path`` (``send_if``, ``skip_if``) and its ``source``.

    Raises:
        TemplateError: on creation, a syntax error.
    """

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.source = source
        self._expression: TemplateExpression | None = None
        found = _ONE_EXPRESSION.match(source)
        if found is not None and _is_one_expression(source):
            try:
                self._expression = template_environment(False).compile_expression(found.group("expr"),
                                                                                  undefined_to_none=False)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{path}: template syntax error: {exc.message}") from None

    @property
    def is_expression(self) -> bool:
        """Evaluated as one expression (else rendered and read as text)."""
        return self._expression is not None

    def evaluate(self, context: dict[str, Any]) -> Any:
        """The expression's value, or the rendered text, as they come (the checks before a run
        read the exceptions themselves).

        Raises:
            TemplateLimitError: over a limit of the sandbox; anything the condition raises.
        """
        if self._expression is None:
            return render_checked(self.path, template_environment(False).from_string(self.source), context)
        return evaluate_limited(self._expression, context, max_chars=MAX_LINE_CHARS)

    def value(self, context: dict[str, Any]) -> Any:
        """The expression's value, or the rendered text.

        Raises:
            TemplateError: the condition failed (undefined name, a failing expression, a limit).
        """
        if self._expression is None:
            return render(self.path, self.source, context)
        try:
            return evaluate_limited(self._expression, context, max_chars=MAX_LINE_CHARS)
        except TemplateLimitError as exc:
            raise TemplateError(f"{self.path}: {exc}") from None
        except jinja2.UndefinedError as exc:
            names = ", ".join(sorted(k for k in context if not k.startswith("_")))
            raise TemplateError(f"{self.path}: {exc.message}; available: {names}") from None
        except Exception as exc:  # a condition failing on this message's data is that message's error
            raise TemplateError(f"{self.path}: {type(exc).__name__}: {exc}") from None

    def holds(self, context: dict[str, Any]) -> bool:
        """Whether the condition holds for ``context``.

        Raises:
            TemplateError: it failed, or its text is neither true nor false.
        """
        value = self.value(context)
        try:
            return truth(self.path, value, text=self._expression is None)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{self.path}: {exc.message}") from None


@functools.lru_cache(maxsize=64)
def condition(path: str, source: str) -> Condition:
    """The compiled :class:`Condition` (compiled once per process: on Spark, once per worker)."""
    return Condition(path, source)


def send_if_skip(props: EmailProperties, unit: Unit, context: dict[str, Any]) -> str | None:
    """Why ``unit``'s message is not sent: ``send_if: <condition> was false``, or ``None`` (no
    ``send_if``, it holds, or the unit is a part of a message split to fit the size limit, whose
    condition held before it was split).

    Raises:
        TemplateError: the condition failed for this message.
    """
    source = props.send_if
    if source is None or "part" in unit.extra:
        return None
    if condition("send_if", source).holds(context):
        return None
    return f"send_if: {source.strip()} was false"


def variables(source: str) -> set[str]:
    """The names ``source`` reads from its context (none when it does not parse)."""
    import jinja2.meta

    try:
        return jinja2.meta.find_undeclared_variables(template_environment(False).parse(source))
    except jinja2.TemplateSyntaxError:
        return set()


def uses_aggregates(props: EmailProperties) -> bool:
    """Whether any template reads ``aggregates`` (the frame's rows are then collected whole in
    ``report`` mode, so that they are the whole frame's)."""
    from .templates import templates_of

    return any("aggregates" in source and "aggregates" in variables(source) for _, source, _ in templates_of(props))


def aggregate_columns(source: str) -> set[str] | None:
    """The columns ``source`` reads from ``aggregates`` (``aggregates.x``, ``aggregates["x"]``),
    or ``None`` when it uses ``aggregates`` otherwise too (then every column is needed)."""
    try:
        ast = template_environment(False).parse(source)
    except jinja2.TemplateSyntaxError:
        return None
    uses = sum(1 for n in ast.find_all(nodes.Name) if n.name == "aggregates")
    found: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        if isinstance(node.node, nodes.Name) and node.node.name == "aggregates":
            key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if not isinstance(key, str):
                return None
            found.add(key)
            uses -= 1
    return found if uses == 0 else None
