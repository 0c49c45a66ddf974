"""What an operation a template calls would make, in characters, before it is done: operators
(``*``, ``**``, ``+``, ``%``), ``str.format`` and the filters and ``str`` methods that grow text
(see :mod:`.sandbox`, which calls these checks)."""

from __future__ import annotations

import _string  # the C parser behind str.format and string.Formatter
import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

from .template_limits import _SEQUENCES, _TEXT, MAX_VALUE_CHARS, _digits, _kind, _refuse_bits, _refuse_over, _width, size_of

__all__ = ["percent_size"]

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
    tabs = (value.count("\t") if isinstance(value, str) else value.count(b"\t")) if isinstance(value, _TEXT) else 0
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
