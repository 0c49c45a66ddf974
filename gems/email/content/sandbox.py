"""The Jinja2 sandbox templates run in, with limits so that no template can exhaust the machine.

Jinja's own sandbox keeps templates away from Python's internals and caps ``range()`` at
``MAX_RANGE`` items, but ``{{ 'a' * 10**9 }}`` still builds a gigabyte (it ran 282 s and took
about 1 GB before failing, issue 21 §5). :class:`LimitedSandbox` refuses, with a
:class:`TemplateLimitError` (a ``jinja2.sandbox.SecurityError``) naming the operation and the
limit, *before* the memory is taken:

- **Values**: a string, list, tuple or dict a template builds — with ``*``, ``+``, ``~``, ``%``,
  ``str.format``, a literal (``[a, a, a]``), ``dict()``/``namespace()``, ``{% set ns.x = ... %}``,
  or a filter or ``str`` method that grows text — is at most :data:`MAX_VALUE_CHARS` characters
  as printed; a whole number at most :data:`MAX_INT_BITS` bits. Widths and precisions
  (``"{:>1000000000}"``, ``center(10**9)``) count as the characters they make. The size is known
  before the work is done (:func:`size_of`), so nothing large is built to be refused.
- **Writing**: what a render writes — its output, what ``{% set %}`` blocks, macros, filter and
  call blocks capture, what ``append``/``extend``/``update``... put into containers — is at most
  the template's own cap (:func:`render_limited`; per kind of template in ``render.py``).
- **Work**: at most :data:`MAX_RENDER_STEPS` steps, a loop iteration one and a macro call twenty
  (nested loops over ``range()`` make no output and no value, so only counting them stops them;
  without loops, only recursion repeats work), and at most :data:`MAX_RENDER_S` seconds for one
  render.

Only ``*``, ``**``, ``+`` and ``%`` are intercepted: Jinja compiles an intercepted operator as a
method call (slower, and never folded at compile time), and ``-``, ``/``, ``//`` and the unary
operators cannot make anything much larger than their operands. The rest hooks into Jinja's
code generator (loops, ``~``, literals, namespace assignment, captured output), its ``call``,
``wrap_str_format`` and ``concat``, and wraps the growing filters; templates that use none of
these (most subjects and bodies) pay only for counting their output.
"""

from __future__ import annotations

import _string  # the C parser behind str.format and string.Formatter
import functools
import math
import re
import time
import types
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextvars import ContextVar
from itertools import islice
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter, SecurityError
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

__all__ = ["LimitedSandbox", "TemplateLimitError", "render_limited", "size_of", "percent_size", "MAX_VALUE_CHARS",
           "MAX_INT_BITS", "MAX_RENDER_STEPS", "MAX_RENDER_S"]

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
        return budget  # type: ignore[return-value]
    made = _Budget(budget)  # type: ignore[arg-type]
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


# -- operators ----------------------------------------------------------------------------------

def _check_multiply(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        _refuse_bits("'*'", left.bit_length() + right.bit_length())
        return
    seq, times = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(seq, _SEQUENCES) and isinstance(times, int) and times > 1:
        _refuse_over("'*'", size_of(seq, MAX_VALUE_CHARS // times + 1) * times, _kind(seq))


def _check_power(base: Any, exponent: Any) -> None:
    # Floats overflow at once (OverflowError); whole numbers grow without end.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 1 and abs(base) > 1:
        _refuse_bits("'**'", int(math.log2(abs(base)) * exponent) + 1)


def _check_add(left: Any, right: Any) -> None:
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _refuse_over("'+'", size_of(left) + size_of(right), _kind(left))


# printf-style conversion specifiers (``%(name)-10.3f``, ``%*d``, ``%%``).
_PERCENT = re.compile(r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?"
                      r"(?P<type>.?)", re.DOTALL)


def percent_size(template: str, args: Any) -> int:
    """About how many characters ``template % args`` makes (the ``%`` operator and the ``format``
    filter): the template, and for each conversion its width, precision and value."""
    positional = args if isinstance(args, tuple) else (args,)
    total, i = len(template), 0
    for match in _PERCENT.finditer(template):
        if match["type"] == "%":
            continue
        for part in (match["width"], match["precision"]):
            if part == "*":
                total += _width(positional[i] if i < len(positional) else 0)
                i += 1
            elif part:
                total += _digits(part)
        if match["key"] is not None and isinstance(args, Mapping):
            total += size_of(args.get(match["key"]))
        elif i < len(positional):
            total += size_of(positional[i])
            i += 1
    return total


def _check_percent(left: Any, right: Any) -> None:
    if isinstance(left, str):
        _refuse_over("'%'", percent_size(left, right))
    elif isinstance(left, bytes):  # b"%1000000000d" % 1 pads as str does
        _refuse_over("'%'", percent_size(left.decode("latin-1"), right), "bytes")


_OPERATOR_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "*": _check_multiply, "**": _check_power, "+": _check_add, "%": _check_percent}


# -- str.format ---------------------------------------------------------------------------------

_SPEC_NUMBERS = re.compile(r"\d+")
# A replacement field that only picks an argument ("", "0", "name"): no attribute or item access.
_PLAIN_FIELD = re.compile(r"\d*|[^\W\d]\w*")


def _spec_widths(spec: str) -> int:
    """Characters a format spec may add: its numbers (width, precision) summed."""
    return sum(_digits(n) for n in _SPEC_NUMBERS.findall(spec)) if spec else 0


@functools.lru_cache(maxsize=512)
def _plain_fields(template: str) -> tuple[tuple[str, int], ...] | None:
    """``(field name, widths)`` of each replacement field of format string ``template`` when every
    field only picks an argument and its spec has no nested field; ``None`` otherwise (or when
    ``template`` is malformed: the sandbox's formatter then reports it)."""
    fields = []
    try:
        for _text, name, spec, _conversion in _string.formatter_parser(template):
            if name is None:
                continue
            if not _PLAIN_FIELD.fullmatch(name) or "{" in spec:
                return None
            fields.append((name, _spec_widths(spec)))
    except ValueError:
        return None
    return tuple(fields)


# Format strings up to this long (a template's own, like "{:,}") have their wrapper cached; longer
# ones (from data) are wrapped each time rather than kept.
_CACHED_FORMAT_CHARS = 200


@functools.lru_cache(maxsize=512)
def _plain_format(template: str) -> Callable[..., str] | None:
    """``template.format`` measured first (see LimitedSandbox.wrap_str_format), or ``None`` when
    a field of ``template`` reaches into attributes or items; one function per format string."""
    fields = _plain_fields(template)
    if fields is None:
        return None

    def formatted(*args: Any, **kwargs: Any) -> str:
        _refuse_over("str.format", _format_size(template, fields, args, kwargs))
        return template.format(*args, **kwargs)

    return formatted


def _format_size(template: str, fields: tuple[tuple[str, int], ...], args: tuple[Any, ...],
                 kwargs: Mapping[str, Any]) -> int:
    """About how many characters ``template.format(*args, **kwargs)`` makes."""
    total, auto = len(template), 0
    for name, widths in fields:
        if not name:
            value, auto = (args[auto] if auto < len(args) else None), auto + 1
        elif name.isdigit():
            value = args[int(name)] if int(name) < len(args) else None
        else:
            value = kwargs.get(name)
        total += size_of(value) + widths
    return total


class _LimitedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox for fields that reach into attributes or items, counting what
    each field makes (``"{0}{0}{0}".format(s)`` repeats a value; ``"{:>1000000000}"`` pads it) and
    refusing before the result is joined."""

    def __init__(self, env: jinja2.Environment, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.made = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.made += size_of(value) + _spec_widths(format_spec)
        _refuse_over("str.format", self.made)
        return super().format_field(value, format_spec)


class _LimitedEscapeFormatter(_LimitedFormatter, SandboxedEscapeFormatter):
    """The same for ``Markup.format`` (each value escaped)."""


# -- filters, methods and globals that grow text --------------------------------------------------

def _lines(text: Any) -> int:
    return text.count("\n") + 1 if isinstance(text, str) else size_of(text) + 1


def _padded_size(value: Any, width: Any = 80, *_: Any) -> int:
    return max(size_of(value), _width(width))


def _indent_size(value: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    return size_of(value) + _lines(value) * _width(width)


def _wordwrap_size(value: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                   *_: Any, **__: Any) -> int:
    # Each wrapped line but the last holds at least half a width of text (or ends a line of the
    # input), so the breaks are at most 2 * size / width plus the input's lines.
    size = size_of(value)
    breaks = 2 * size // max(_width(width), 1) + _lines(value)
    return size + breaks * (len(wrapstring) if isinstance(wrapstring, str) else 1)  # else "\n"


def _replace_size(value: Any, old: Any = "", new: Any = "", count: Any = None, *_: Any) -> int:
    size = size_of(value)
    if not isinstance(old, _TEXT) or not isinstance(new, _TEXT):
        return size
    same_type = isinstance(value, _TEXT) and isinstance(old, str) == isinstance(value, str)
    found = (value.count(old) if old else len(value) + 1) if same_type else size + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return size + found * max(len(new) - len(old), 0)


def _expandtabs_size(value: Any, tabsize: Any = 8, *_: Any) -> int:
    tabs = value.count("\t" if isinstance(value, str) else b"\t") if isinstance(value, _TEXT) else 0
    return size_of(value) + tabs * _width(tabsize)


def _translate_size(value: Any, table: Any = None, *_: Any) -> int:
    longest = max((size_of(v) for v in table.values()), default=1) if isinstance(table, Mapping) else 1
    return size_of(value) * max(longest, 1)


def _urlize_size(value: Any, trim_url_limit: Any = None, nofollow: Any = False, target: Any = None,
                 rel: Any = None, extra_schemes: Any = None) -> int:
    # A link is a word with a '.', '@' or ':' inside it (not ending a sentence), written twice
    # (href and text), with the tag and its target and rel attributes around it.
    size = size_of(value)
    links = len(_LINK_LIKE.findall(value)) if isinstance(value, str) else size
    extras = sum(size_of(x) for x in (target, rel) if x is not None)
    return 2 * size + links * (64 + extras)


_LINK_LIKE = re.compile(r"[^\s.@:]*[.@:][\w/]\S*")


def _tojson_size(value: Any, indent: Any = None) -> int:
    # Each line (at most one per printed item) is indented by indent x depth; this counts a
    # generous 32 levels of depth.
    size = size_of(value)
    return size + (size // 2 + 1) * _width(indent) * 32 if indent else size


def _format_filter_size(value: Any, *args: Any, **kwargs: Any) -> int:
    if not isinstance(value, str):  # not a format: printed as it is (measured without printing it)
        return size_of(value) + sum(size_of(a) for a in (*args, *kwargs.values()))
    return percent_size(value, kwargs or args)


def _pieces_size(value: Any, count: Any = 0, *_: Any) -> int:
    # batch(n, fill) pads a batch to n items; slice(n) makes n lists: both build count items.
    return size_of(value) + 2 * _width(count)


def _join_size(items: list[Any], separator: Any) -> int:
    return sum(size_of(item) for item in items) + max(len(items) - 1, 0) * size_of(separator)


# Filters whose result can be much larger than their input: a function of the filter's arguments
# (without the environment or eval context) giving the result's size in characters. The other
# filters make at most a few times their input (escape: six), which is itself within the limits.
_GROWING_FILTERS: dict[str, Callable[..., int]] = {
    "center": _padded_size, "indent": _indent_size, "wordwrap": _wordwrap_size, "replace": _replace_size,
    "format": _format_filter_size, "tojson": _tojson_size, "urlize": _urlize_size, "batch": _pieces_size,
    "slice": _pieces_size}
# str (and Markup) methods that grow text, by name (str.join and str.format are checked apart).
_GROWING_STR_METHODS: dict[str, Callable[..., int]] = {
    "center": _padded_size, "ljust": _padded_size, "rjust": _padded_size, "zfill": _padded_size,
    "expandtabs": _expandtabs_size, "replace": _replace_size, "translate": _translate_size}
# Methods that keep values inside a container, and so can gather many large ones in a loop.
_STORING_METHODS = frozenset({"append", "extend", "insert", "add", "update", "setdefault"})
# Jinja's globals (and dict) that build a container from their arguments.
_CONSTRUCTORS = frozenset({dict, Namespace})
# What a template calls to recurse: macros (and caller()) and a recursive loop's loop(). A call
# costs about as much as twenty empty loop iterations, and counts as many steps (a macro per cell
# of a 10,000-row, 20-column table is 4 million).
_RECURSIVE = (Macro, LoopContext)
_CALL_STEPS = 20


def _guard_filter(name: str, filter_: Callable[..., Any]) -> Callable[..., Any]:
    """``filter_`` refusing (TemplateLimitError) when its result would be over the value limit."""
    skip = 1 if getattr(filter_, "jinja_pass_arg", None) is not None else 0  # eval context or environment first
    if name == "join":
        return _guard_join(filter_, skip)
    size = _GROWING_FILTERS[name]
    kind = "list" if name in ("batch", "slice") else "string"

    @functools.wraps(filter_)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _refuse_over(f"the filter {name!r}", size(*args[skip:], **kwargs), kind)
        return filter_(*args, **kwargs)

    return guarded


def _guard_join(join: Callable[..., Any], skip: int) -> Callable[..., Any]:
    @functools.wraps(join)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        head, (value, *rest) = args[:skip], args[skip:]
        items = list(value)  # a generator (map, select) is read once: measured, then joined
        separator = rest[0] if rest else kwargs.get("d", "")
        attribute = rest[1] if len(rest) > 1 else kwargs.get("attribute")
        shown = items if attribute is None else list(map(make_attrgetter(_environment_of(head), attribute), items))
        _refuse_over("the filter 'join'", _join_size(shown, separator))
        return join(*head, items, *rest, **kwargs)

    return guarded


def _environment_of(head: tuple[Any, ...]) -> jinja2.Environment:
    first = head[0]
    return first if isinstance(first, jinja2.Environment) else first.environment


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """``args`` for ``method`` once the call is known not to grow text or a container past its
    limit (an iterable given to ``str.join`` is read into a list first, to measure it).

    Raises:
        TemplateLimitError: the call would go over a limit.
    """
    name = method.__name__
    owner = getattr(method, "__self__", None)
    if name == "fromkeys":  # {}.fromkeys(keys, value): bound to the dict type, one value per key
        keys = list(args[0]) if args else []
        value = args[1] if len(args) > 1 else kwargs.get("value")
        _refuse_over("dict.fromkeys", size_of(keys) + len(keys) * size_of(value), "dict")
        return (keys, *args[1:])
    if isinstance(owner, _TEXT):
        grows = _GROWING_STR_METHODS.get(name)
        if grows is not None:
            _refuse_over(f"str.{name}", grows(owner, *args, **kwargs), _kind(owner))
        elif name == "join" and len(args) == 1:
            items = list(args[0])
            _refuse_over("str.join", _join_size(items, owner))
            return (items,)
    elif isinstance(owner, int) and name == "to_bytes":
        _refuse_over("int.to_bytes", _width(args[0] if args else kwargs.get("length", 1)), "bytes")
    elif isinstance(owner, _CONTAINERS) and name in _STORING_METHODS:
        _count_stored(f"{type(owner).__name__}.{name}", sum(size_of(a) for a in (*args, *kwargs.values())))
    return args


def _count_stored(what: str, size: int) -> None:
    """Count ``size`` characters put into a container during the render (a loop of ``append``,
    or ``l.extend(l)`` doubling, would gather values until memory runs out).

    Raises:
        TemplateLimitError: over the template's cap.
    """
    budget = _budget()
    if budget is None:
        return
    budget.stored += size
    if budget.stored > budget.max_chars:
        raise TemplateLimitError(f"{what}: values added to lists, sets and dicts in this render would make more than "
                                 f"{budget.max_chars:,} characters; that is this template's limit")


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's ``lipsum()``, refusing more text than the value limit (about 10 characters a word)."""
    _refuse_over("lipsum()", _width(n) * _width(max) * 10)
    return generate_lorem_ipsum(n, html, min, max)


# -- the environment ------------------------------------------------------------------------------

# Methods of LimitedSandbox the generated code calls directly (see _LimitedCodeGenerator.visit_Call).
_DIRECT = frozenset({"counted", "checked_value"})


def _through(method: str, node: nodes.Expr, environment: jinja2.Environment) -> nodes.Call:
    """``environment.<method>(node)``, as a node (Jinja allows no custom node types)."""
    call = nodes.Call(nodes.EnvironmentAttribute(method), [node], [], None, None, lineno=node.lineno)
    call.environment = call.node.environment = environment
    return call


class _LimitedCodeGenerator(CodeGenerator):
    """Jinja's code generator with hooks for the limits, each a direct call of a method of the
    environment: every ``{% for %}`` iterates through :meth:`LimitedSandbox.counted`; every ``~``
    goes through :meth:`LimitedSandbox.checked_parts`; list, tuple and dict literals and values
    assigned to ``namespace()`` attributes through :meth:`LimitedSandbox.checked_value`; and
    every value written into a captured block through :meth:`LimitedSandbox.captured`."""

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        # A call this generator made (_through; templates cannot name EnvironmentAttribute) is a
        # direct call: through the sandbox's call() it would cost several times more, and count.
        if isinstance(node.node, nodes.EnvironmentAttribute) and node.node.name in _DIRECT:
            self.write(f"environment.{node.node.name}(")
            self.visit(node.args[0], frame)
            self.write(")")
            return
        super().visit_Call(node, frame, forward_caller=forward_caller)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        counted = _through("counted", node.iter, self.environment)
        loop = nodes.For(node.target, counted, node.body, node.else_, node.test, node.recursive, lineno=node.lineno)
        loop.environment = self.environment
        super().visit_For(loop, frame)

    def visit_Assign(self, node: nodes.Assign, frame: Frame) -> None:
        if not isinstance(node.target, nodes.NSRef) and not any(node.target.find_all(nodes.NSRef)):
            super().visit_Assign(node, frame)
            return
        assign = nodes.Assign(node.target, _through("checked_value", node.node, self.environment), lineno=node.lineno)
        assign.environment = self.environment
        super().visit_Assign(assign, frame)

    def _checked_literal(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        self.write("environment.checked_value(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        # Constant literals were folded into constants before code generation: these hold values.
        self._checked_literal(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._checked_literal(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":  # a tuple target ({% for a, b in ... %}) stays a target
            self._checked_literal(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # Jinja's own join (str_join or markup_join), over parts measured first.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.checked_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.buffer is not None:
            self.write("environment.captured(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        if frame.buffer is not None:
            self.write(")")


class LimitedSandbox(SandboxedEnvironment):
    """Jinja's ``SandboxedEnvironment`` with the limits of this module (see its docstring).

    Every refusal is a :class:`TemplateLimitError`; the per-render limits apply while
    :func:`render_limited` renders.
    """

    code_generator_class = _LimitedCodeGenerator
    intercepted_binops = frozenset(_OPERATOR_CHECKS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _guard_filter(name, f) if name in _GROWING_FILTERS or name == "join" else f
                        for name, f in self.filters.items()}
        self.globals["lipsum"] = _lipsum

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        """``left operator right`` for ``*``, ``**``, ``+`` and ``%``, refused when the result
        would be over the limits.

        Raises:
            TemplateLimitError: the result would be over :data:`MAX_VALUE_CHARS` or :data:`MAX_INT_BITS`.
        """
        _OPERATOR_CHECKS[operator](left, right)
        return self.binop_table[operator](left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``__obj`` from a template: a macro (or ``caller()``, or a recursive loop's
        ``loop()``) is a step of the budget, since only recursion repeats work without a loop;
        methods that grow text or fill containers, and ``dict()``/``namespace()``, are checked first.

        Raises:
            TemplateLimitError: over a limit; SecurityError: an unsafe callable.
        """
        kind = type(__obj)
        if kind in _METHODS:
            args = _check_method(__obj, args, kwargs)
        elif kind in _RECURSIVE:
            budget = _budget()
            if budget is not None:
                budget.spend(_CALL_STEPS)
        elif kind is type and __obj in _CONSTRUCTORS:
            _refuse_over(f"{__obj.__name__.lower()}()", size_of((args, kwargs)), "dict")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` of a template's string, measured before it runs: Python's
        own ``str.format`` when every field only picks an argument (``"{:,}"``, ``"{0}"``,
        ``"{name:>8}"``: nothing for the sandbox to guard, and several times faster), the
        sandbox's formatter, counting, for fields that reach into attributes or items."""
        if not isinstance(value, _METHODS) or value.__name__ not in ("format", "format_map"):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        if value.__name__ == "format" and type(template) is str and len(template) <= _CACHED_FORMAT_CHARS:
            plain = _plain_format(template)
            if plain is not None:
                return plain
        text_type, is_map = type(template), value.__name__ == "format_map"

        def formatted(*args: Any, **kwargs: Any) -> str:
            formatter = (_LimitedEscapeFormatter(self, escape=template.escape) if isinstance(template, Markup)
                         else _LimitedFormatter(self))
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                args, kwargs = (), args[0]
            return text_type(formatter.vformat(template, args, kwargs))

        return functools.update_wrapper(formatted, value)

    def counted(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """``iterable`` of a ``{% for %}`` loop, one budget step per item: a list, dict, range...
        of up to :data:`_CLOCK_EVERY_STEPS` items is charged at once and iterated as it is (no
        cost per item); a longer or unsized one is read in chunks of that many, each charged and
        the clock read before its items are used.

        Raises:
            TemplateLimitError: over :data:`MAX_RENDER_STEPS` or :data:`MAX_RENDER_S`.
        """
        budget = _budget()
        if budget is None:
            return iterable
        if getattr(type(iterable), "__len__", None) is not None:
            size = len(iterable)  # type: ignore[arg-type]
            if size <= _CLOCK_EVERY_STEPS:
                budget.spend(size)
                return iterable
        return _in_chunks(iterable, budget)

    def checked_value(self, value: Any) -> Any:
        """``value`` (a literal's, or one assigned to a ``namespace()`` attribute) once its printed
        size is known to be within :data:`MAX_VALUE_CHARS` (``[a, a, a]`` of large ``a``, nested a
        few times, would otherwise print as gigabytes)."""
        _refuse_over("a literal or namespace attribute", size_of(value), _kind(value))
        return value

    def checked_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The parts of a ``~`` concatenation, once their total size is known to be in the limit."""
        _refuse_over("'~'", sum(size_of(p) for p in parts))
        return parts

    def captured(self, text: str) -> str:
        """``text`` written into a captured block, counted against the template's cap.

        Raises:
            TemplateLimitError: the captured text of this render is over the cap.
        """
        budget = _budget()
        if budget is not None:
            budget.written += len(text)
            if budget.written > budget.max_chars:
                raise TemplateLimitError(f"blocks and macros wrote more than {budget.max_chars:,} characters; that is "
                                         "this template's limit")
        return text

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]  # Jinja's is "".join
        """Join a captured block's parts (or, for ``Template.render``, a whole output), refusing
        before the join when they are over the render's cap (:data:`MAX_VALUE_CHARS` outside
        :func:`render_limited`).

        Raises:
            TemplateLimitError: over the cap.
        """
        budget = _budget()
        limit = budget.max_chars if budget is not None else MAX_VALUE_CHARS
        parts = parts if isinstance(parts, list) else list(parts)
        size = sum(map(len, parts))
        if size > limit:
            raise TemplateLimitError(f"a block or macro would make {size:,} characters; this template's limit is "
                                     f"{limit:,}")
        return "".join(parts)


def _in_chunks(iterable: Iterable[Any], budget: _Budget) -> Iterator[Any]:
    """The items of ``iterable``, read :data:`_CLOCK_EVERY_STEPS` at a time, each chunk charged to
    ``budget`` before its items are used (one clock read per chunk)."""
    items = iter(iterable)
    while chunk := list(islice(items, _CLOCK_EVERY_STEPS)):
        budget.spend(len(chunk))
        yield from chunk


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
        pieces = template.root_render_func(template.new_context(context))
        text = "".join(islice(pieces, _PIECES_AT_ONCE))
        if pieces.gi_frame is not None:  # not finished: a long output
            text = _rest(text, pieces, max_chars)
    finally:
        _BUDGET.reset(token)
    if len(text) > max_chars:
        raise TemplateLimitError(f"the rendered text is over {max_chars:,} characters, the limit for {what}")
    return text


def _rest(text: str, pieces: Iterator[str], max_chars: int) -> str:
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
