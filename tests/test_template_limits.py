"""Templates cannot exhaust the machine (issue 21 §5): the sandbox refuses values, output and
work over its limits at once, with a message naming the operation and the limit; `mailgem
validate` and `mailgem run` report it as an error before Spark starts; and a template that only
blows up on some rows' data fails those messages alone."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pandas as pd
import pytest
from conftest import USER, fabric_for, parse
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from mailgem.gems.email import EmailGem, validate
from mailgem.gems.email.content import template_limits
from mailgem.gems.email.content.render import DEFAULT_TEXT, MAX_LINE_CHARS, TemplateError, base_context, render
from mailgem.gems.email.content.sandbox import MAX_VALUE_CHARS, LimitedSandbox, TemplateLimitError
from mailgem.gems.email.validate import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parents[1]
ROW = {"name": "ada lovelace", "city": "Oslo", "sales": 1234, "when": dt.date(2024, 1, 31)}
CTX = dict(base_context("sales", dt.datetime(2024, 1, 31, 8, 0, tzinfo=dt.UTC), {"region": "North"}), row_count=12345, total_row_count=12345, part=None,
           columns=list(ROW), rows=[ROW], row=ROW, table="", table_text="", shown_rows=1, truncated=False, chart="",
           chart_text="")
BIG = "{% set s = 'a' * 600000 %}"  # within the limit, but not twice


def _refused(name: str, source: str, *expected: str, context: dict | None = None) -> str:
    """The TemplateError message of rendering ``source``, which must come in well under a second."""
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render(name, source, CTX if context is None else context)
    assert time.monotonic() - started < 1.0, source
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "Error:" not in message, message  # no exception class names
    for part in expected:
        assert part in message, message
    return message


# -- 1. ordinary templates render as Jinja's own sandbox renders them ---------------------------

ORDINARY = [
    '{{ "{:,}".format(row_count) }}', "{{ 'x' * 3 }}", "{{ row.name | upper }}", "{{ row.name | title }}",
    "{{ 3 * 'ab' }} {{ [1, 2] * 2 }} {{ 6 * 7 }} {{ 2 ** 10 }} {{ 2.5 ** 2 }} {{ 7 % 3 }} {{ 1 + 2 }} {{ [1] + [2] }}",
    "{{ 'a' ~ row.city ~ 1 }} {{ '%s sold %05.1f' % (row.city, 2.5) }} {{ '%(a)s' % {'a': row.sales} }}",
    "{{ '{0}-{name}-{1:>6}'.format(1, 'x', name=row.city) }} {{ '{}{}'.format(1, 2) }}",
    "{{ '{0.year}/{0.month:02}'.format(row.when) }} {{ '{0[city]}'.format(row) }} {{ '{a}'.format_map({'a': 1}) }}",
    "{{ row.city|center(10) }}|{{ 'x\ny'|indent(2, true) }}|{{ ('word ' * 20)|wordwrap(20) }}",
    "{{ row.city|replace('s', 'ss') }} {{ rows|map(attribute='city')|join(', ') }} {{ [1, 2]|join }}",
    "{{ '%-6s|'|format(row.city) }} {{ {'city': row.city, 'n': [1, 2]}|tojson(2) }} {{ [1, 2, 3]|batch(2)|list }}",
    "{{ 'see www.example.com'|urlize }} {{ [1, 2, 3]|slice(2)|list }} {{ row.city.ljust(6) }}|{{ '7'.zfill(3) }}",
    "{{ 'a\tb'.expandtabs(4) }} {{ '-'.join(['a', 'b']) }} {{ 'abc'.translate({97: 'A'}) }}",
    "{{ {}.fromkeys(['a'], 1) }} {{ (258).to_bytes(2, 'big') }} {{ range(3)|list }}",
    ("{% set ns = namespace(total=0, names=[]) %}{% for r in rows %}{% set ns.total = ns.total + r.sales %}"
     "{{ ns.names.append(r.city) }}{% endfor %}{{ ns.total }} {{ ns.names }} {{ dict(a=1) }} {{ (1, row.city) }}"),
    ("{% macro cell(v) %}<{{ v }}>{% endmacro %}{% for k, v in row.items() %}{{ cell(v) }}{% endfor %}"
     "{% set block %}{{ row.city }}!{% endset %}{{ block }}{% filter upper %}{{ row.city }}{% endfilter %}"),
    ("{% macro m(a, b=2) %}{{ a }}{{ b }}{{ varargs }}{{ kwargs }}{{ caller() if caller is defined else '' }}"
     "{% endmacro %}{{ m(1, 3, 4, z=5) }}{% call m(9) %}inner{{ rows|length }}{% endcall %}"),
    ("{% for i in [3, 1, 2] if i > 1 %}{{ loop.index }}{{ loop.revindex }}{{ loop.last }}{{ loop.cycle('o', 'e') }}"
     "{{ loop.length }}{% else %}none{% endfor %}{% for i in [] %}x{% else %}none{% endfor %}"),
    ("{% set tree = [{'n': 'a', 'c': [{'n': 'b', 'c': []}]}, {'n': 'c', 'c': []}] %}{% for x in tree recursive %}"
     "[{{ x.n }}{{ loop.depth }}{% if x.c %}{{ loop(x.c) }}{% endif %}]{% endfor %}"),
    "{% for i in range(100) %}{{ '' }}{{ row.name[:0] }}{% endfor %}end: a long output of empty pieces is whole",
    "{% for i in range(2000) %}{{ i }},{% endfor %}",
    DEFAULT_TEXT,
]


def _jinjas(html: bool = False) -> SandboxedEnvironment:
    """Jinja's own sandbox, set up as ours is (without the limits)."""
    return SandboxedEnvironment(autoescape=html, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                finalize=lambda v: "" if v is None else v)


@pytest.mark.parametrize("source", ORDINARY)
def test_ordinary_templates_render_as_jinjas_own_sandbox_renders_them(source):
    ours = render("text_body", source, CTX)
    assert ours == _jinjas().from_string(source).render(CTX) and ours


def test_markup_format_captured_blocks_and_concatenation_still_escape():
    source = ("{{ '<b>{}</b>'|safe }}{{ ('<i>{}</i>'|safe).format(row.city ~ '<') }}{{ '<' ~ row.city }}"
              "{% macro m(v) %}<b>{{ v }}</b>{% endmacro %}{% set c %}<i>{{ '<x>' }}</i>{% endset %}{{ c }}"
              "{{ m('<&>') }}{% filter upper %}{{ '<y>' }}{% endfilter %}{{ ['<'] }}")
    html = render("html_body", source, CTX, html=True)
    assert html == _jinjas(html=True).from_string(source).render(CTX)
    assert html.startswith("<b>{}</b><i>Oslo&lt;</i>&lt;Oslo<i>&lt;x&gt;</i><b>&lt;&amp;&gt;</b>&LT;Y&GT;")
    assert render("text_body", "{{ lipsum(2, false)|wordcount > 20 }}", CTX) == "True"


# -- 2. values over the limit are refused before they are built -----------------------------------

@pytest.mark.parametrize(("source", "expected"), [
    ("{{ 'a' * 10**9 }}", "'*' would build a string of about 1,000,000,000 characters"),
    ("{{ 10**9 * 'a' }}", "'*' would build a string of about 1,000,000,000 characters"),
    ("{{ [0] * 10**8 }}", "'*' would build a list of about"),
    ("{{ 10 ** (10**6) }}", "'**' would build a number of about 3,321,929 bits; the limit is 100,000 bits"),
    ("{{ (10 ** 20000) * (10 ** 20000) }}", "'*' would build a number of about 132,878 bits"),
    (BIG + "{{ (s + s)|length }}", "'+' would build a string of about 1,200,000 characters"),
    (BIG + "{{ ([s] + [s])|length }}", "'+' would build a list of about 1,200,00"),
    (BIG + "{{ (s ~ s)|length }}", "'~' would build a string of about 1,200,000 characters"),
    ("{{ '%1000000000d' % 1 }}", "'%' would build a string of about 1,000,000,014 characters"),
    ("{{ '%*d' % (10**9, 1) }}", "'%' would build a string of about 1,000,000,005 characters"),
    (BIG + "{{ '%(a)s%(a)s' % {'a': s} }}", "'%' would build a string of about 1,200,01"),
])
def test_operators_over_the_limit_are_refused_at_once(source, expected):
    _refused("subject", source, expected, "the limit" if "bits" in expected else
             f"the limit for a value a template builds is {MAX_VALUE_CHARS:,} characters")


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ '{:>1000000000}'.format(1) }}", "str.format would build a string of about 1,000,000,0"),
    ("{{ '{0.real:>1000000000}'.format(1) }}", "str.format would build a string of about 1,000,000,0"),
    (BIG + "{{ '{0}{0}'.format(s) }}", "str.format would build a string of about 1,200,00"),
    (BIG + "{{ '{0[0]}{0[0]}'.format([s]) }}", "str.format would build a string of about 1,200,00"),
    ("{{ '%1000000000s'|format(1) }}", "the filter 'format' would build a string of about 1,000,000,0"),
    ("{{ 'x'|center(10**9) }}", "the filter 'center' would build a string of about 1,000,000,000 characters"),
    ("{{ 'x\ny'|indent(10**9) }}", "the filter 'indent' would build a string of about 2,000,000,003 characters"),
    ("{{ ('a ' * 400000)|wordwrap(1, wrapstring='x' * 1000) }}", "the filter 'wordwrap' would build a string"),
    ("{{ ('a' * 600000)|replace('a', 'bb') }}", "the filter 'replace' would build a string of about 1,200,000"),
    (BIG + "{{ [s, 'b']|join(s) }}", "the filter 'join' would build a string of about 1,200,001"),
    (BIG + "{{ range(3)|map('string')|join(s) }}", "the filter 'join' would build a string of about 1,200,003"),
    ("{{ ('a.b ' * 100000)|urlize(target='t' * 100) }}", "the filter 'urlize' would build a string"),
    ("{{ [1, 2]|tojson(10**6) }}", "the filter 'tojson' would build a string"),
    ("{{ [1]|batch(10**9, 0)|list }}", "the filter 'batch' would build a list of about 2,000,000,00"),
    ("{{ [1]|slice(10**9)|list }}", "the filter 'slice' would build a list of about 2,000,000,00"),
    ("{{ 'x'.ljust(10**9) }}{{ 'x'.rjust(10**9) }}", "str.ljust would build a string of about 1,000,000,000"),
    ("{{ '1'.zfill(10**9) }}", "str.zfill would build a string of about 1,000,000,000"),
    ("{{ 'a\tb'.expandtabs(10**9) }}", "str.expandtabs would build a string of about 1,000,000,003"),
    ("{{ ('a' * 600000).replace('a', 'bb') }}", "str.replace would build a string of about 1,200,000"),
    (BIG + "{{ s.join(['a', 'b', 'c']) }}", "str.join would build a string of about 1,200,003"),
    (BIG + "{{ 'aa'.translate({97: s}) }}", "str.translate would build a string of about 1,200,000"),
    ("{{ (1).to_bytes(10**9, 'big') }}", "int.to_bytes would build a bytes of about 1,000,000,000"),
    ("{{ lipsum(10**6) }}", "lipsum() would build a string of about 1,000,000,000"),
])
def test_format_widths_and_filters_and_methods_that_grow_text_are_refused(source, expected):
    _refused("subject", source, expected, f"{MAX_VALUE_CHARS:,} characters")


@pytest.mark.parametrize(("source", "expected"), [
    # The same large string many times is small in memory, but prints as gigabytes.
    (BIG + "{% set b = [s, s] %}", "a literal or namespace attribute would build a list of about 1,200,00"),
    (BIG + "{% set b = (s, s) %}", "a literal or namespace attribute would build a tuple"),
    (BIG + "{% set b = {'a': s, 'b': s} %}", "a literal or namespace attribute would build a dict"),
    (BIG + "{{ dict(a=s, b=s) }}", "dict() would build a dict of about 1,200,0"),
    (BIG + "{% set n = namespace(a=s) %}{% set m = namespace(a=n, b=n) %}", "namespace() would build a dict"),
    (BIG + "{% set n = namespace() %}{% set n.a = [s] %}{% set n.b = [n.a, n.a] %}",
     "a literal or namespace attribute would build a list"),
    ("{{ {}.fromkeys(range(100000), 'a' * 1000) }}", "dict.fromkeys would build a dict of about 100,"),
])
def test_values_that_would_print_huge_are_refused(source, expected):
    _refused("subject", source, expected, f"{MAX_VALUE_CHARS:,} characters")


def test_a_limit_is_a_security_error_of_the_sandbox_and_nothing_is_built_at_compile_time():
    env = LimitedSandbox()
    started = time.monotonic()
    template = env.from_string("{{ 'a' * 10**9 }}{{ 'x'|center(1000000000) }}")  # not folded into a constant
    assert time.monotonic() - started < 1.0
    with pytest.raises(SecurityError, match="'\\*' would build a string"):
        template.render()
    assert issubclass(TemplateLimitError, SecurityError)


# -- 3. what a render writes is capped, per kind of template ---------------------------------------

def test_output_is_capped_per_kind_of_template():
    twenty_thousand = "{{ 'x' * 20000 }}"
    for name in ("subject", "headers.X-Team", "attachments[0].file_name", "ledger.run_key"):
        _refused(name, twenty_thousand, f"the rendered text is over {MAX_LINE_CHARS:,} characters, the limit for a "
                                        "one-line template (subject, header, file name, run key)")
    assert len(render("text_body", twenty_thousand, CTX)) == len(render("to[0]", twenty_thousand, CTX)) == 20000
    # Nothing exceeds the value limit here: only the total; the render stops at the first pieces over.
    body = "{% for i in range(11) %}{{ 'x' * 999999 }}{% endfor %}"
    _refused("html_body", body, f"the rendered text is over {MAX_BODY_BYTES:,} characters, the limit for a body")
    _refused("to[0]", "{% for i in range(2) %}{{ 'x' * 999999 }}{% endfor %}", "over 1,000,000 characters, the "
             "limit for an address template")
    _refused("text_body", "{% for i in range(100000) %}" + "x" * 200 + "{% endfor %}", "over 10,485,760 characters")


def test_blocks_macros_and_containers_count_toward_the_templates_cap():
    _refused("subject", "{% set b %}{% for i in range(100) %}{{ 'x' * 200 }}{% endfor %}{% endset %}{{ b[:5] }}",
             "blocks and macros wrote more than 10,000 characters; that is this template's limit")
    _refused("subject", "{% macro m() %}{% for i in range(100) %}{{ i }}{% endfor %}{% endmacro %}"
                        "{% for i in range(200) %}{{ m()[:1] }}{% endfor %}",
             "blocks and macros wrote more than 10,000")
    _refused("subject", "{% set b %}" + "y" * 20000 + "{% endset %}{{ b[:5] }}", "a block or macro would make 20,000 "
             "characters; this template's limit is 10,000")
    _refused("subject", "{% set l = [] %}{% for i in range(1000) %}{{ l.append('x' * 100) }}{% endfor %}",
             "list.append: values added to lists, sets and dicts in this render would make more than 10,000")
    _refused("subject", "{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}", "list.extend: ")
    # A body may capture what it may write.
    assert len(render("text_body", "{% set b %}{% for i in range(100) %}{{ 'x' * 200 }}{% endfor %}{% endset %}{{ b }}",
                      CTX)) == 20000


# -- 4. work: nested loops and recursion stop -------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in 'x' * 999999 %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
])
def test_nested_loops_and_recursion_stop_at_the_step_limit(source, monkeypatch):
    monkeypatch.setattr(template_limits, "MAX_RENDER_S", 600.0)  # however loaded the machine, the steps stop it
    started = time.monotonic()
    with pytest.raises(TemplateError, match="more than 10,000,000 steps in one render \\(a loop iteration is one, a "
                                            "macro call 20: nested loops or recursion\\?\\); that is the limit"):
        render("subject", source, CTX)
    assert time.monotonic() - started < 60  # measured 1-3 s


def test_a_render_that_takes_too_long_stops(monkeypatch):
    monkeypatch.setattr(template_limits, "MAX_RENDER_S", 0.3)
    started = time.monotonic()
    with pytest.raises(TemplateError, match="subject: rendering took more than 0.3 s, the limit for one template"):
        # Few steps, each building a value near the limit: the clock is read with every large value.
        render("subject", "{% for i in range(100000) %}{% set x = ('ab' * 499999)|upper %}{% endfor %}", CTX)
    assert time.monotonic() - started < 3


# -- 5. validate reports a limit as an error, before any data is read --------------------------------

def test_validate_reports_a_limit_as_an_error_and_an_ordinary_failure_as_a_warning():
    props = {"connection": "c", "to": "a@example.com", "subject": "{{ 'a' * 10**9 }}",
             "text_body": "{{ row_count / 0 }}", "headers": {"X-Big": "{{ 'x' * 20000 }}"}}
    started = time.monotonic()
    diagnostics = {d.path: d for d in validate(props)}
    assert time.monotonic() - started < 1.0
    assert diagnostics["subject"].severity == "error"
    assert diagnostics["subject"].message == ("'*' would build a string of about 1,000,000,000 characters; the limit "
                                              "for a value a template builds is 1,000,000 characters")
    assert diagnostics["headers.X-Big"].severity == "error"
    assert "the rendered text is over 10,000 characters" in diagnostics["headers.X-Big"].message
    assert diagnostics["text_body"].severity == "warning"  # made-up values may fail where real ones do not


# -- 6. as a user runs it: validate and run stop in seconds, before Spark ----------------------------

@pytest.mark.parametrize("command", [["validate", "job.yaml", "--local"],
                                     ["run", "job.yaml", "--local", "--outbox", "out"]])
def test_a_huge_subject_is_an_error_before_spark_starts(tmp_path, command):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales.csv").write_text("city,sales\nOslo,10\nBergen,5\n")
    (tmp_path / "job.yaml").write_text("name: sales\nsource: {path: data/sales.csv}\nemail:\n  connection: local\n"
                                       "  to: boss@example.com\n  subject: \"{{ 'a' * 10**9 }}\"\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", *command], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=False)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "email.subject" in line]
    assert line.endswith("job.yaml: email.subject: '*' would build a string of about 1,000,000,000 characters; the "
                         "limit for a value a template builds is 1,000,000 characters"), line
    assert "error" in line and "warning" not in line  # an error, not a warning that lets Spark start
    assert "Traceback" not in done.stderr
    assert took < 20, took  # measured about 2 s: Spark (8-70 s) never started; before, 282 s and 1 GB
    assert not list(tmp_path.glob("out/*.eml"))


# -- 7. a template that only blows up on some rows fails those messages alone ------------------------

def test_a_row_whose_data_blows_up_a_template_fails_alone(starttls_server):
    frame = pd.DataFrame({"to": ["a@example.com", "b@example.com", "c@example.com"], "note": ["ab", "xy", "cd"],
                          "n": [2, 10**9, 3]})
    props = {"connection": "reports", "mode": "per_row", "to_column": "to", "subject": "{{ row.note * row.n }}",
             "text_body": "{{ row.note }}", "on_error": "continue"}
    started = time.monotonic()
    report = EmailGem(props, fabric_for(starttls_server), user=USER, name="daily").apply(None, frame)
    assert time.monotonic() - started < 20
    assert list(report["status"]) == ["sent", "failed", "sent"]
    failed = report.iloc[1]
    assert failed.error_type == "TemplateError" and failed.recipients == "b@example.com"
    assert failed.error == ("subject: '*' would build a string of about 2,000,000,000 characters; the limit for a "
                            "value a template builds is 1,000,000 characters")
    received = [parse(m.data) for m in starttls_server.wait_for_messages(2, timeout_s=10)]
    assert sorted(m["Subject"] for m in received) == ["abab", "cdcdcd"]
    assert sorted(r for m in starttls_server.messages for r in m.rcpt_tos) == ["a@example.com", "c@example.com"]
