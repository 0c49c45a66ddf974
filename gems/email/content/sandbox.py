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

import functools
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

# The sizes and limits (template_limits) and the checks of what grows text (template_growth) are
# this sandbox's own parts, private names included.
from .template_growth import (
    _CACHED_FORMAT_CHARS, _GROWING_FILTERS, _GROWING_STR_METHODS, _OPERATOR_CHECKS, _join_size, _LimitedEscapeFormatter,
    _LimitedFormatter, _plain_format, percent_size)
from .template_limits import (
    _CALL_STEPS, _CLOCK_EVERY_STEPS, _CONTAINERS, _METHODS, _TEXT, MAX_INT_BITS, MAX_RENDER_S,
    MAX_RENDER_STEPS, MAX_VALUE_CHARS, TemplateLimitError, _budget, _Budget, _kind, _refuse_over, _width, render_limited,
    size_of)

__all__ = ["LimitedSandbox", "TemplateLimitError", "render_limited", "size_of", "percent_size", "MAX_VALUE_CHARS",
           "MAX_INT_BITS", "MAX_RENDER_STEPS", "MAX_RENDER_S"]

# Methods that keep values inside a container, and so can gather many large ones in a loop.
_STORING_METHODS = frozenset({"append", "extend", "insert", "add", "update", "setdefault"})
# Jinja's globals (and dict) that build a container from their arguments.
_CONSTRUCTORS = frozenset({dict, Namespace})
# What a template calls to recurse: macros (and caller()) and a recursive loop's loop(). A call
# costs about as much as twenty empty loop iterations, and counts as many steps (a macro per cell
# of a 10,000-row, 20-column table is 4 million).
_RECURSIVE = (Macro, LoopContext)


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
        counted = _through("counted", cast(nodes.Expr, node.iter), self.environment)
        loop = nodes.For(node.target, counted, node.body, node.else_, node.test, node.recursive, lineno=node.lineno)
        loop.environment = self.environment
        super().visit_For(loop, frame)

    def visit_Assign(self, node: nodes.Assign, frame: Frame) -> None:
        if not isinstance(node.target, nodes.NSRef) and not any(node.target.find_all(nodes.NSRef)):
            super().visit_Assign(node, frame)
            return
        assign = nodes.Assign(node.target, _through("checked_value", cast(nodes.Expr, node.node), self.environment),
                              lineno=node.lineno)
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
                return text_type(formatter.vformat(template, (), args[0]))
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

    def concat(self, parts: Iterable[str]) -> str:  # Jinja's is "".join
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
