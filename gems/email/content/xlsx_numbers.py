"""Numbers and dates as Excel holds and shows them: number formats translated from the body's
Python format specs and strftime patterns, and the numbers Excel cannot hold exactly.

Number formats (Python format spec → Excel number format; a ``unit`` becomes a quoted literal
after the number, as in the body: ``",.1f"`` with unit ``min`` → ``#,##0.0" min"``)::

    ,.2f  → #,##0.00      .1f  → 0.0        f  → 0.000000   (precision 6, as in Python)
    .1%   → 0.0%          ,.0% → #,##0%     .2e → 0.00E+00
    ,     → #,##0         d    → 0          "" → 0           (integer columns only)
    +,.1f → +#,##0.0;-#,##0.0               " .1f" → " 0.0;-0.0"   (sign: sections)

Anything else — fill, alignment, width, ``#``, ``z``, ``_`` grouping, types ``g G n b o x X c s``,
a precision without a type, ``,`` or ``d`` on a float or decimal column — has no faithful Excel
form and falls back to ``General`` (the unit is still added).

Date patterns (strftime → Excel)::

    %Y → yyyy   %y → yy    %m → mm    %b → mmm    %B → mmmm   %d → dd    %a → ddd   %A → dddd
    %H → hh     %I → hh (with %p: 12-hour)     %p → AM/PM     %M → mm    %S → ss    %% → %

Other text is kept (quoted where Excel would read it as a code). A pattern with another directive
(``%f``, ``%j``, ``%Z``…), ``%I`` without ``%p`` or ``%H`` with it, or a ``%M``/``%m`` that Excel
would read as the other one (Excel's ``mm`` is minutes right after an hour or before seconds) is
untranslatable: the caller uses its default format. Fractions of a second (``ss.000``, Excel
shows at most milliseconds) are added only for columns that have them.

Exactness: Excel stores doubles and shows 15 significant digits (Microsoft, "Excel
specifications and limits": "Number precision: 15 digits"; "Largest allowed positive number:
9.99999999999999E+307"; "Smallest allowed positive number: 2.2251E-308"). :func:`excel_number`
says which values Excel cannot hold as numbers; they are written as text instead of being
rounded or turned into errors.
"""

from __future__ import annotations

import decimal
import math
import re

__all__ = ["number_format", "date_format", "with_fractions", "excel_number", "GENERAL", "EXCEL_MAX", "EXCEL_MIN_POSITIVE",
           "EXCEL_DIGITS"]

GENERAL = "General"
EXCEL_MAX = 9.99999999999999e307  # largest magnitude Excel allows
EXCEL_MIN_POSITIVE = 2.2251e-308  # smallest non-zero magnitude Excel allows
EXCEL_DIGITS = 15  # significant digits Excel keeps
_INT_EXACT = 10**EXCEL_DIGITS  # integers below this magnitude have at most 15 digits

# [[fill]align][sign][z][#][0][width][grouping][.precision][type] (Python's format spec mini-language)
_SPEC = re.compile(r"^(?:(?P<fill>.)?(?P<align>[<>=^]))?(?P<sign>[-+ ])?(?P<z>z)?(?P<alt>#)?(?P<zero>0)?(?P<width>\d+)?"
                   r"(?P<grouping>[,_])?(?:\.(?P<precision>\d+))?(?P<type>[bcdeEfFgGnosxX%])?$", re.DOTALL)


def _quoted(text: str) -> str:
    """``text`` as an Excel format literal: in double quotes, a ``"`` in it as ``\\"``."""
    return '\\"'.join(f'"{part}"' if part else "" for part in text.split('"'))


def _digits(m: re.Match[str], integer: bool) -> str | None:
    """The Excel code for one section of spec ``m`` (no sign, no unit), or ``None``."""
    if m["align"] or m["z"] or m["alt"] or m["zero"] or m["width"] or m["grouping"] == "_":
        return None
    whole = "#,##0" if m["grouping"] else "0"
    kind, precision = m["type"], m["precision"]
    places = int(precision) if precision is not None else 6
    if kind in ("f", "F", "%"):
        return whole + ("." + "0" * places if places else "") + ("%" if kind == "%" else "")
    if kind in ("e", "E") and not m["grouping"]:
        return "0" + ("." + "0" * places if places else "") + "E+00"
    if kind in (None, "d") and precision is None and integer:
        return whole
    return None


def number_format(spec: str | None, unit: str | None = None, *, integer: bool = False) -> str:
    """The Excel number format showing numbers as ``format(value, spec)`` does, followed by
    `` unit``; ``General`` (plus the unit) when ``spec`` has no faithful Excel form (see the module
    docstring). ``integer``: the column holds integers (``,`` and ``d`` apply)."""
    suffix = _quoted(" " + unit) if unit else ""
    m = _SPEC.match(spec) if spec else None
    code = _digits(m, integer) if m else None
    if m is None or code is None:
        return GENERAL + suffix
    if m["sign"] in ("+", " "):
        positive = "+" if m["sign"] == "+" else _quoted(" ")
        return f"{positive}{code}{suffix};-{code}{suffix}"
    return code + suffix


# strftime directive → Excel code; the ones not here are untranslatable.
_DATE_CODES = {"Y": "yyyy", "y": "yy", "m": "mm", "b": "mmm", "B": "mmmm", "d": "dd", "a": "ddd", "A": "dddd",
               "H": "hh", "I": "hh", "p": "AM/PM", "M": "mm", "S": "ss"}
# Literal characters Excel shows as they are in a date format; others are quoted.
_PLAIN = " -:/.,()"
_LITERAL_RUNS = r"[ \-:/.,()]+|[^ \-:/.,()]+"


def _minutes_ok(tokens: list[str]) -> bool:
    """Whether Excel reads each ``mm`` as the directive meant: minutes right after an hour or
    right before seconds (literals between do not count), months elsewhere."""
    codes = [t for t in tokens if t.startswith("%")]
    for i, code in enumerate(codes):
        if code in ("%M", "%m"):
            near_time = (i > 0 and codes[i - 1] in ("%H", "%I")) or (i + 1 < len(codes) and codes[i + 1] == "%S")
            if near_time != (code == "%M"):
                return False
    return True


def date_format(pattern: str | None) -> str | None:
    """The Excel date format for strftime ``pattern``, or ``None`` when it has none (see the
    module docstring)."""
    if not pattern:
        return None
    tokens = re.findall(r"%.|[^%]+|%$", pattern, re.DOTALL)
    directives = {t for t in tokens if t.startswith("%") and t != "%%"}
    if (not directives or not directives <= {f"%{d}" for d in _DATE_CODES} or ("%I" in directives) != ("%p" in directives)
            or ("%H" in directives and "%p" in directives) or not _minutes_ok(tokens)):
        return None
    out = []
    for token in tokens:
        if token == "%%":
            out.append(_quoted("%"))
        elif token.startswith("%"):
            out.append(_DATE_CODES[token[1]])
        else:
            out.extend(run if run[0] in _PLAIN else _quoted(run) for run in re.findall(_LITERAL_RUNS, token))
    return "".join(out)


def with_fractions(code: str) -> str:
    """``code`` showing milliseconds after its seconds (``hh:mm:ss`` → ``hh:mm:ss.000``)."""
    return re.sub(r"ss(?!\.0)", "ss.000", code, count=1)


def _significant_digits(value: int | decimal.Decimal) -> int:
    """Digits of ``value`` from its first to its last non-zero one (``1200`` → 2, ``0.0015`` → 2)."""
    if isinstance(value, int):
        return len(str(abs(value)).rstrip("0")) or 1
    return len("".join(map(str, value.as_tuple().digits)).strip("0")) or 1


def excel_number(value: int | float | decimal.Decimal) -> float | str | None:
    """``value`` as the double Excel stores; ``None`` for NaN (an empty cell); or, for a value
    Excel cannot hold as a number, the reason (a phrase for the note) it is written as text:
    an infinity, a magnitude over :data:`EXCEL_MAX` or under :data:`EXCEL_MIN_POSITIVE`, or an
    integer or decimal with more than :data:`EXCEL_DIGITS` significant digits (a double would
    round it: ``2**53 + 1``, ``Decimal("12345678901234567.89")``). Floats are doubles already:
    written as they are."""
    if isinstance(value, int) and -_INT_EXACT < value < _INT_EXACT:
        return float(value)  # the common case first
    if isinstance(value, decimal.Decimal) and value.is_nan():
        return None
    if isinstance(value, int | decimal.Decimal) and not (isinstance(value, decimal.Decimal) and value.is_infinite()) \
            and _significant_digits(value) > EXCEL_DIGITS:
        return f"more than {EXCEL_DIGITS} significant digits"
    try:
        number = float(value)
    except OverflowError:  # an int past the largest double
        number = math.inf
    if -EXCEL_MAX <= number <= EXCEL_MAX:  # NaN fails both comparisons
        if number == 0 or abs(number) >= EXCEL_MIN_POSITIVE:
            return number
        return f"under Excel's smallest number {EXCEL_MIN_POSITIVE}"
    if math.isnan(number):
        return None
    if (isinstance(value, float) and math.isinf(value)) or (isinstance(value, decimal.Decimal) and value.is_infinite()):
        return "infinity"
    return "over Excel's largest number 9.99999999999999E+307"
