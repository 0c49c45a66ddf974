"""The limits templates render under, and the size a value would print as (see :mod:`.sandbox`).

A value's size is known before it is built (:func:`size_of`), so nothing large is built to be
refused; a render's budget of steps, seconds and written characters lives in a context variable
while :func:`render_limited` runs.
"""

from __future__ import annotations

import time
import types
from collections.abc import ItemsView, KeysView, Mapping, ValuesView
from contextvars import ContextVar
from itertools import islice
from types import GeneratorType
from typing import Any, cast

import jinja2
from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace

__all__ = ["TemplateLimitError", "render_limited", "evaluate_limited", "size_of", "MAX_VALUE_CHARS", "MAX_INT_BITS", "MAX_RENDER_STEPS", "MAX_RENDER_S"]

# Ten times the largest body Gmail shows before clipping it (about 102 KB), and a thousand times a
# typical report's text; building a value this size takes about a millisecond and a few MB.
MAX_VALUE_CHARS = 1_000_000
# About 30,000 decimal digits: beyond Python's own 4,300-digit limit for printing a number
# (sys.int_info.default_max_str_digits, CVE-2020-10735), so nothing printable is refused, and
# arithmetic at this size takes microseconds.
MAX_INT_BITS = 100_000
# Steps of one render: a loop iteration is one, a macro call twenty (_CALL_STEPS). A body looping
# over 10,000 rows x 100 columns takes a million; an empty loop step costs about 0.1-0.2 µs, so
# the limit stops runaway nesting in one or two seconds.
MAX_RENDER_STEPS = 10_000_000
# What a template's call to recurse (a macro, caller(), a recursive loop's loop()) counts: it costs
# about as much as twenty empty loop iterations.
_CALL_STEPS = 20
# A backstop for steps that are each slow (a loop whose body builds large values): no email's
# template needs seconds to render.
MAX_RENDER_S = 10.0
# The clock is read every this many steps, and by every check of a value over _CLOCK_CHARS.
_CLOCK_EVERY_STEPS = 1024
_CLOCK_CHARS = 65_536
# Output pieces read at once (render_limited): most subjects and bodies are fewer.
_PIECES_AT_ONCE = 32
# A number, date or other scalar as printed: a few dozen characters at most.
_SCALAR_CHARS = 32

_TEXT = (str, bytes, bytearray)
_SEQUENCES = (str, bytes, bytearray, list, tuple)
# What prints its items: containers, dict views and Jinja's namespace().
_CONTAINERS = (list, tuple, set, frozenset, dict)
_VIEWS = (KeysView, ValuesView, ItemsView)
_METHODS = (types.BuiltinMethodType, types.MethodType)


class TemplateLimitError(SecurityError):
    """A template would build a value, write text or do work over a limit; the message names the
    operation and the limit."""


class _Budget:
    """What one render may still spend (see the module docstring)."""

    __slots__ = ("steps", "clock_at", "deadline", "max_chars", "written", "stored")

    def __init__(self, max_chars: int) -> None:
        self.steps = MAX_RENDER_STEPS
        self.clock_at = MAX_RENDER_STEPS - _CLOCK_EVERY_STEPS
        self.deadline = time.monotonic() + MAX_RENDER_S
        self.max_chars = max_chars
        self.written = 0  # characters written into captured blocks ({% set %}, macros, filter/call blocks)
        self.stored = 0  # characters put into containers by mutating methods

    def spend(self, steps: int) -> None:
        """Count ``steps`` steps (loop iterations; a macro call is :data:`_CALL_STEPS`).

        Raises:
            TemplateLimitError: over :data:`MAX_RENDER_STEPS` or :data:`MAX_RENDER_S`.
        """
        self.steps -= steps
        if self.steps < self.clock_at:
            self.check()

    def check(self) -> None:
        """Raises TemplateLimitError when the steps or the time are spent."""
        if self.steps < 0:
            raise TemplateLimitError(f"more than {MAX_RENDER_STEPS:,} steps in one render (a loop iteration is one, "
                                     f"a macro call {_CALL_STEPS}: nested loops or recursion?); that is the limit")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering took more than {MAX_RENDER_S:g} s, the limit for one template")
        self.clock_at = self.steps - _CLOCK_EVERY_STEPS


# The budget of the render in progress: None outside render_limited (e.g. while Jinja folds
# constants at compile time), where only the value limits apply; the render's cap (an int) until
# the render first loops, calls a macro or captures, when _budget() makes it a _Budget and its
# clock starts (most renders of a subject or short body never need one; before that, a render's
# work is bounded by its source).
_BUDGET: ContextVar[_Budget | int | None] = ContextVar("mailgem_template_budget", default=None)


def _budget() -> _Budget | None:
    """The budget of the render in progress, or ``None`` outside one."""
    budget = _BUDGET.get()
    if budget is None or type(budget) is _Budget:
        return budget
    made = _Budget(cast(int, budget))
    _BUDGET.set(made)  # render_limited's reset() still restores what was there before the render
    return made


# -- sizes --------------------------------------------------------------------------------------

def _int_chars(value: int) -> int:
    # log10(2) = 0.30103 digits per bit, plus a sign.
    return value.bit_length() * 30103 // 100000 + 2


def _items(value: Any) -> Any:
    """What ``value`` prints besides itself: its items (a dict's keys and values), or ``None``."""
    if isinstance(value, dict):
        return (*value, *value.values())
    if isinstance(value, _CONTAINERS):
        return value
    if isinstance(value, Namespace):
        return (value._Namespace__attrs,)  # Jinja's namespace() prints its attributes' dict
    if isinstance(value, _VIEWS):
        return tuple(value)
    return None


def size_of(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters ``str(value)`` takes: text its length, a number its digits, a
    container (list, tuple, set, dict, dict view, ``namespace()``) the sizes of its items plus two
    per item; other values :data:`_SCALAR_CHARS`. Counting stops once past ``limit``, so a list
    holding itself, or the same large string a million times, is measured in bounded time and
    memory.
    """
    if isinstance(value, _TEXT):
        return len(value)
    if isinstance(value, int):
        return _int_chars(value)
    total, pending = 0, [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, _TEXT):
            total += len(item)
        elif isinstance(item, int):
            total += _int_chars(item)
        else:
            items = _items(item)
            if items is None:
                total += _SCALAR_CHARS
                continue
            # Items are counted (two characters each) before they are queued, so the queue never
            # holds more than limit / 2 of them.
            total += 2 + 2 * len(items)
            if total <= limit:
                pending.extend(items)
    return total


def _kind(value: Any) -> str:
    return "string" if isinstance(value, str) else type(value).__name__


def _refuse_over(what: str, size: int, kind: str = "string", limit: int = MAX_VALUE_CHARS) -> None:
    """Raises TemplateLimitError when ``size`` characters are over ``limit``; reads the clock when
    the value is large (a loop of large values is slow long before it is many steps)."""
    if size > limit:
        raise TemplateLimitError(f"{what} would build a {kind} of about {size:,} characters; the limit for a value "
                                 f"a template builds is {limit:,} characters")
    if size > _CLOCK_CHARS:
        budget = _budget()
        if budget is not None:
            budget.check()


def _refuse_bits(what: str, bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(f"{what} would build a number of about {bits:,} bits; the limit is {MAX_INT_BITS:,} "
                                 f"bits (about {MAX_INT_BITS * 30103 // 100000:,} digits)")


def _width(value: Any) -> int:
    """A width or count argument as the characters it makes: a number itself, a string its length."""
    if isinstance(value, int):
        return max(int(value), 0)
    return len(value) if isinstance(value, str) else 0


def _digits(text: str) -> int:
    # Python refuses to read numbers of thousands of digits; any of more than 18 is over the limit.
    return int(text) if len(text) <= 18 else 10**18


def render_limited(template: jinja2.Template, context: Mapping[str, Any], *, max_chars: int,
                   what: str = "this template") -> str:
    """Render ``template`` (from a :class:`LimitedSandbox`) with ``context``, within the limits.

    The output is read a few pieces at a time and the render stops as soon as it passes
    ``max_chars`` characters, so memory stays bounded (by the cap and :data:`_PIECES_AT_ONCE`
    pieces, each a piece of the template's text or one value); ``max_chars`` also caps what the
    render writes into captured blocks and what mutating methods store.

    Raises:
        TemplateLimitError: over ``max_chars`` (the message says it is the limit for ``what``),
            or any other limit of this module.
        Exception: whatever the template raises otherwise (with Jinja's traceback, not rewritten
            to template lines: callers report messages).
    """
    token = _BUDGET.set(max_chars)
    try:
        # What Template.render does, less its copy of the context (new_context copies it), reading
        # the output _PIECES_AT_ONCE pieces at a time (C loops: a Python loop per piece costs more
        # than a short template's render) and stopping at the first batch that passes the cap.
        root = template.root_render_func(template.new_context(cast("dict[str, Any]", context)))
        pieces = cast("GeneratorType[str, None, None]", root)
        text = "".join(islice(pieces, _PIECES_AT_ONCE))
        if pieces.gi_frame is not None:  # not finished: a long output
            text = _rest(text, pieces, max_chars)
    finally:
        _BUDGET.reset(token)
    if len(text) > max_chars:
        raise TemplateLimitError(f"the rendered text is over {max_chars:,} characters, the limit for {what}")
    return text


def evaluate_limited(expression: Any, context: Mapping[str, Any], *, max_chars: int) -> Any:
    """The value of ``expression`` (a ``jinja2.environment.TemplateExpression`` from a
    :class:`LimitedSandbox`'s ``compile_expression``) with ``context``, within the limits of a
    render whose cap is ``max_chars`` (an expression writes no output; its values, steps and
    time are counted as a render's).

    Raises:
        TemplateLimitError: over a limit.
        Exception: whatever the expression raises otherwise.
    """
    token = _BUDGET.set(max_chars)
    try:
        return expression(context)
    finally:
        _BUDGET.reset(token)


def _rest(text: str, pieces: GeneratorType[str, None, None], max_chars: int) -> str:
    """``text`` and the rest of ``pieces`` joined, or, once past ``max_chars``, only what was read
    so far (longer than ``max_chars``: render_limited refuses it) without reading more. Pieces
    are joined a batch at a time and the batches measured (cheaper than measuring each piece)."""
    out, size = [text], len(text)
    try:
        while size <= max_chars and pieces.gi_frame is not None:  # gi_frame: None once finished
            batch = "".join(islice(pieces, _PIECES_AT_ONCE))
            size += len(batch)
            out.append(batch)
    finally:
        pieces.close()  # stopped early: the template's generator is not resumed again
    return "".join(out)
