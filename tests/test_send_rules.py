"""Send only when it matters (issue 26 §2): ``send_if`` per message, ``skip_if`` per run,
``aggregates`` in templates, the ``skipped_by_rule`` status in the report, the ledger, preview,
dry runs, ``validate`` and the CLI's exit code. Every sending test asserts on what a real
in-process SMTP server received."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import USER, fabric_for, parse

from mailgem.gems.email import EmailGem
from mailgem.gems.email.content.conditions import Condition, aggregate_columns
from mailgem.gems.email.content.render import TemplateError
from mailgem.runner.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Yesterday's loads: one row per table, its team and error rate.
LOADS = pd.DataFrame({
    "team": ["core", "core", "web", "data", "web"],
    "manager": ["ana@example.com", "ana@example.com", "ben@example.com", "cy@example.com", "ben@example.com"],
    "table": ["orders", "users", "pages", "events", "clicks"],
    "error_rate": [0.10, 0.00, 0.01, 0.20, 0.02],
})
ROW = {"connection": "reports", "mode": "per_row", "key_columns": ["table"], "to_column": "manager",
       "subject": "{{ row.table }}: {{ row.error_rate }}", "on_error": "continue",
       "send_if": "{{ row_count > 0 and rows[0].error_rate > 0.05 }}"}
GROUP = {"connection": "reports", "mode": "per_group", "group_by": ["team"], "to_column": "manager",
         "subject": "{{ group.team }}: worst {{ aggregates.error_rate.max }} of {{ aggregates.table.count }}",
         "send_if": "{{ aggregates.error_rate.max > 0.05 }}", "on_error": "continue"}


def _subjects(server, n: int) -> list[str]:
    return sorted(parse(m.data)["Subject"] for m in server.wait_for_messages(n, timeout_s=20))


def _report(result) -> pd.DataFrame:
    out = result if isinstance(result, pd.DataFrame) else result.toPandas()
    return out.sort_values("message_key").reset_index(drop=True)


def _frame(spark, engine: str):
    # Three partitions on Spark: the executors' path (mapInPandas) evaluates the conditions.
    return LOADS if engine == "pandas" else spark.createDataFrame(LOADS).repartition(3)


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_send_if_per_row_sends_only_the_rows_whose_condition_holds(request, starttls_server, engine):
    spark = request.getfixturevalue("spark") if engine == "spark" else None
    report = _report(EmailGem(ROW, fabric_for(starttls_server), user=USER).apply(spark, _frame(spark, engine)))
    assert _subjects(starttls_server, 2) == ["events: 0.2", "orders: 0.1"]
    skipped = report[report["status"] == "skipped_by_rule"]
    assert sorted(skipped["message_key"]) == ['row:["clicks"]', 'row:["pages"]', 'row:["users"]']
    assert set(skipped["error"]) == {"send_if: {{ row_count > 0 and rows[0].error_rate > 0.05 }} was false"}
    assert (skipped["recipients"] == "").all() and skipped["message_id"].isna().all()  # never built
    assert sorted(report.loc[report["status"] == "sent", "message_key"]) == ['row:["events"]', 'row:["orders"]']
    assert len(starttls_server.messages) == 2


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_send_if_per_group_sees_the_groups_aggregates(request, starttls_server, engine):
    spark = request.getfixturevalue("spark") if engine == "spark" else None
    report = _report(EmailGem(GROUP, fabric_for(starttls_server), user=USER).apply(spark, _frame(spark, engine)))
    assert _subjects(starttls_server, 2) == ["core: worst 0.1 of 2", "data: worst 0.2 of 1"]
    assert dict(zip(report["message_key"], report["status"], strict=True)) == {
        'group:["core"]': "sent", 'group:["data"]': "sent", 'group:["web"]': "skipped_by_rule"}
    assert report.loc[2, "error"] == "send_if: {{ aggregates.error_rate.max > 0.05 }} was false"
    assert len(starttls_server.messages) == 2


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_report_mode_conditions_see_the_whole_frame_not_the_shown_rows(request, starttls_server, engine):
    spark = request.getfixturevalue("spark") if engine == "spark" else None
    frame = _frame(spark, engine)
    # Only one row is shown, and it is not a failing one: the sum is over all five.
    props = {"connection": "reports", "to": "oncall@example.com", "table": {"max_rows": 1},
             "subject": "{{ row_count }} loads, error sum {{ '%.2f' % aggregates.error_rate.sum }}, "
                        "mean {{ '%.3f' % aggregates.error_rate.mean }}, worst {{ aggregates.table.max }}",
             "send_if": "{% if aggregates.error_rate.sum > 0.3 %} Yes {% else %}no{% endif %}"}
    report = _report(EmailGem(props, fabric_for(starttls_server), user=USER).apply(spark, frame))
    assert list(report["status"]) == ["sent"]
    assert _subjects(starttls_server, 1) == ["5 loads, error sum 0.33, mean 0.066, worst users"]
    quiet = props | {"send_if": "{% if aggregates.error_rate.sum > 0.5 %}yes{% endif %}"}  # renders nothing: false
    report = _report(EmailGem(quiet, fabric_for(starttls_server), user=USER).apply(spark, frame))
    assert list(report["status"]) == ["skipped_by_rule"] and report.loc[0, "message_key"] == "report"
    assert len(starttls_server.messages) == 1


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_skip_if_decides_for_the_whole_run(request, starttls_server, engine):
    spark = request.getfixturevalue("spark") if engine == "spark" else None
    frame = _frame(spark, engine)
    rule = "{{ row_count < 10 and aggregates.error_rate.max < 0.5 and columns[0] == 'team' and rows[0].table }}"
    skipping = ROW | {"send_if": None, "skip_if": rule}
    report = _report(EmailGem(skipping, fabric_for(starttls_server), user=USER).apply(spark, frame))
    assert report[["message_key", "status"]].values.tolist() == [["(run)", "skipped_by_rule"]]
    assert report.loc[0, "error"] == f"skip_if: {rule} was true; nothing was sent"
    sending = skipping | {"skip_if": "{{ aggregates.error_rate.max > 0.5 }}"}
    report = _report(EmailGem(sending, fabric_for(starttls_server), user=USER).apply(spark, frame))
    assert list(report["status"]) == ["sent"] * 5
    assert len(_subjects(starttls_server, 5)) == 5 and starttls_server.sessions_opened >= 1


def test_skip_if_on_spark_aggregates_only_what_it_reads(spark):
    from mailgem.gems.email.content.aggregates import column_stats, spark_frame_stats

    frame = spark.createDataFrame(LOADS)
    total, stats = spark_frame_stats(frame, {"error_rate", "team"}, timezone=None)
    assert total == 5 and set(stats) == {"error_rate", "team"}
    assert stats["team"] == {"count": 5, "nulls": 0, "min": "core", "max": "web"}
    arrow = column_stats(__import__("pyarrow").array(LOADS["error_rate"]))
    assert stats["error_rate"].keys() == arrow.keys()
    assert {k: round(v, 6) for k, v in stats["error_rate"].items()} == {k: round(v, 6) for k, v in arrow.items()}
    assert aggregate_columns("{{ aggregates.a.max > aggregates['b'].min }}") == {"a", "b"}
    assert aggregate_columns("{{ aggregates | length }}") is None


def test_a_failing_condition_fails_only_its_message(starttls_server):
    frame = LOADS.assign(error_rate=[0.1, None, 0.2, 0.0, 0.3], verdict=["yes", "no", "maybe", "no", "TRUE"])
    report = _report(EmailGem(ROW | {"send_if": "{{ row.error_rate > 0.05 }}"}, fabric_for(starttls_server),
                              user=USER).apply(None, frame))
    bad = report[report["status"] == "failed"].iloc[0]
    assert bad.message_key == 'row:["users"]' and bad.error_type == "TemplateError"
    assert bad.error.startswith("send_if: TypeError: '>' not supported")
    assert sorted(report["status"]) == ["failed", "sent", "sent", "sent", "skipped_by_rule"]
    # Rendered text is read as words; anything else names send_if and the text.
    words = "{% for r in rows %}{{ r.verdict }}{% endfor %}"
    report = _report(EmailGem(ROW | {"send_if": words}, fabric_for(starttls_server), user=USER).apply(None, frame))
    statuses = dict(zip(report["message_key"], report["status"], strict=True))
    assert statuses == {'row:["clicks"]': "sent", 'row:["events"]': "skipped_by_rule", 'row:["orders"]': "sent",
                        'row:["pages"]': "failed", 'row:["users"]': "skipped_by_rule"}
    assert "send_if: the condition gave 'maybe', which is neither true nor false" in report.loc[3, "error"]
    assert _subjects(starttls_server, 5) == ["clicks: 0.3", "clicks: 0.3", "orders: 0.1", "orders: 0.1", "pages: 0.2"]


def test_conditions_keep_the_sandbox_and_undefined_names_are_errors():
    with pytest.raises(TemplateError, match="send_if: .*limit"):
        Condition("send_if", "{{ ('a' * 100000) * 100000 }}").holds({})
    with pytest.raises(TemplateError, match="send_if: 'nope' is undefined"):
        Condition("send_if", "{{ nope }}").holds({})
    with pytest.raises(TemplateError, match="unsafe|SecurityError"):
        Condition("send_if", "{{ ().__class__.__mro__ }}").holds({})
    assert Condition("send_if", " {{- 2 > 1 -}} ").is_expression
    assert not Condition("send_if", "{{ 1 }}{{ 2 }}").is_expression
    assert Condition("send_if", "{{ [] }}").holds({}) is False and Condition("send_if", "{{ 'No' }}").holds({}) is False
    # An expression's string is true unless it is one of the false words (a chain of `and` gives its last value).
    assert Condition("send_if", "{{ 1 and 'orders' }}").holds({}) is True
    with pytest.raises(TemplateError, match="send_if: the condition gave '1orders', which is neither true nor false"):
        Condition("send_if", "{{ 1 }}{{ 'orders' }}").holds({})


def test_a_skipped_message_is_not_in_the_ledger_and_a_rerun_decides_again(starttls_server, tmp_path):
    props = ROW | {"send_if": "{{ row.error_rate > params.threshold }}",
                   "ledger": {"path": str(tmp_path / "ledger.sqlite"), "run_key": "2026-12-06"}}
    first = _report(EmailGem(props, fabric_for(starttls_server), user=USER, params={"threshold": 0.05}).apply(LOADS))
    assert sorted(first["status"]) == ["sent", "sent", "skipped_by_rule", "skipped_by_rule", "skipped_by_rule"]
    second = _report(EmailGem(props, fabric_for(starttls_server), user=USER, params={"threshold": 0.015}).apply(LOADS))
    assert dict(zip(second["message_key"], second["status"], strict=True)) == {
        'row:["clicks"]': "sent", 'row:["events"]': "already_sent", 'row:["orders"]': "already_sent",
        'row:["pages"]': "skipped_by_rule", 'row:["users"]': "skipped_by_rule"}
    assert _subjects(starttls_server, 3) == ["clicks: 0.02", "events: 0.2", "orders: 0.1"]


def test_preview_and_build_show_what_the_rules_skip(starttls_server):
    gem = EmailGem(GROUP, fabric_for(starttls_server), user=USER)
    built = {b.key: b for b in gem.preview(LOADS, limit=5)}
    assert built['group:["web"]'].skipped == "send_if: {{ aggregates.error_rate.max > 0.05 }} was false"
    assert built['group:["web"]'].summary() == ('group:["web"]: would be skipped (skipped_by_rule): send_if: '
                                                "{{ aggregates.error_rate.max > 0.05 }} was false")
    assert built['group:["web"]'].dry_run_row("reports").status == "skipped_by_rule"
    assert built['group:["core"]'].message is not None and built['group:["core"]'].skipped is None
    run = EmailGem(ROW | {"skip_if": "{{ row_count == 5 }}"}, fabric_for(starttls_server), user=USER)
    [whole] = run.preview(LOADS, limit=1)  # the whole frame's 5 rows, not the one row previewed
    assert whole.key == "(run)" and whole.skipped == "skip_if: {{ row_count == 5 }} was true; nothing was sent"
    assert starttls_server.sessions_opened == 0


def test_validate_checks_conditions_like_any_template(starttls_server):
    gem = EmailGem(GROUP | {"send_if": "{{ rows[0].erorr_rate > 0.05 }}",
                            "skip_if": "{{ row.table == 'x' or aggregates.error_rat.max > 1 }}"},
                   fabric_for(starttls_server), user=USER)
    found = {(d.path, d.severity): d.message for d in gem.validate({c: "double" if c == "error_rate" else "string"
                                                                     for c in LOADS.columns})}
    assert "no column 'erorr_rate' (did you mean 'error_rate'?)" in found[("send_if", "error")]
    assert found[("skip_if", "error")] == ("'row' is undefined (did you mean 'rows'?); this template sees: job, run_ts, "
                                           "run_date, params, row_count, columns, rows, aggregates")
    gem = EmailGem(GROUP | {"send_if": "{{ aggregates.error_rat.max > 1 }}", "skip_if": "{% if %}"},
                   fabric_for(starttls_server), user=USER)
    found = {(d.path, d.severity): d.message for d in gem.validate(list(LOADS.columns))}
    assert "aggregates.error_rat: no column 'error_rat' (did you mean 'error_rate'?)" in found[("send_if", "error")]
    assert found[("skip_if", "error")].startswith("template syntax error on line 1")
    text = EmailGem(GROUP | {"send_if": "{{ group.team }} maybe"}, fabric_for(starttls_server), user=USER)
    [warning] = [d for d in text.validate(list(LOADS.columns)) if d.path == "send_if"]
    assert warning.severity == "warning" and "neither true nor false" in warning.message


# -- through the command line -----------------------------------------------------------------

JOB = textwrap.dedent("""
    name: loads
    source: {path: loads.csv}
    email:
      connection: local
      mode: per_row
      key_columns: [table]
      to_column: manager
      subject: "{{ row.table }}"
""")


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_reports_the_condition_before_spark(tmp_path, monkeypatch, capsys):
    def no_spark(*args, **kwargs):
        raise AssertionError("Spark was started")

    monkeypatch.setattr("mailgem.runner.spark.local_spark", no_spark)
    LOADS.to_csv(tmp_path / "loads.csv", index=False)
    (tmp_path / "job.yaml").write_text(JOB + '  send_if: "{{ rows[0].erorr_rate > 0.05 }}"\n')
    code, _, err = _cli(["validate", str(tmp_path / "job.yaml")], capsys)
    assert code == 2 and "email.send_if: row.erorr_rate: no column 'erorr_rate' (did you mean 'error_rate'?)" in err
    (tmp_path / "job.yaml").write_text(JOB + '  skip_if: "{{ row_count > }}"\n')
    code, _, err = _cli(["validate", str(tmp_path / "job.yaml")], capsys)
    assert code == 2 and "email.skip_if: template syntax error" in err


def test_the_alert_example_sends_only_when_the_load_failed(spark, tmp_path, capsys):
    folder = tmp_path / "alerts"
    shutil.copytree(ROOT / "examples" / "alerts", folder)
    job = str(folder / "load_failed.yaml")
    code, out, err = _cli(["run", job, "--local", "--outbox", str(tmp_path / "out1"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["counts"] == {"sent": 1}
    [eml] = (tmp_path / "out1").glob("*.eml")
    msg = parse(eml.read_bytes())
    assert msg["Subject"] == "Load 2026-12-06 FAILED: 2 failed task(s), 4 tables" and msg["To"] == "oncall@example.com"
    assert "connection reset by peer" in msg.get_body(("html",)).get_content()

    status = pd.read_csv(folder / "load_status.csv")
    status.assign(failed_tasks=0, error="").to_csv(folder / "load_status.csv", index=False)
    code, out, err = _cli(["run", job, "--local", "--outbox", str(tmp_path / "out2"), "--json",
                           "--report-out", str(tmp_path / "report.csv")], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["counts"] == {"skipped_by_rule": 1} and summary["messages"] == 1 and summary["exit_code"] == 0
    assert not list((tmp_path / "out2").glob("*.eml"))
    row = pd.read_csv(tmp_path / "report.csv").iloc[0]
    assert (row.message_key, row.status) == ("report", "skipped_by_rule")
    assert row.error == "send_if: {{ aggregates.failed_tasks.sum > 0 }} was false"


def test_cli_skip_if_exits_0_and_says_so(spark, tmp_path, capsys):
    LOADS.to_csv(tmp_path / "loads.csv", index=False)
    (tmp_path / "job.yaml").write_text(JOB + '  skip_if: "{{ aggregates.error_rate.max < params.alarm }}"\n'
                                       "params: {alarm: 0.5}\n")
    job = str(tmp_path / "job.yaml")
    code, out, err = _cli(["run", job, "--outbox", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "(run): skipped_by_rule" in out
    assert "Run skipped by skip_if: skip_if: {{ aggregates.error_rate.max < params.alarm }} was true" in out
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.eml"))
    code, out, err = _cli(["run", job, "--json", "--param", "alarm=0.1", "--outbox", str(tmp_path / "out")], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["counts"] == {"sent": 5} and "skipped_by" not in summary
    assert len(list((tmp_path / "out").glob("*.eml"))) == 5
    code, out, err = _cli(["run", job, "--json", "--outbox", str(tmp_path / "out3")], capsys)
    assert code == 0 and json.loads(out)["skipped_by"] == "skip_if"


def test_cli_dry_run_and_preview_show_the_skipped_messages(spark, tmp_path, capsys):
    LOADS.to_csv(tmp_path / "loads.csv", index=False)
    (tmp_path / "job.yaml").write_text(JOB + '  send_if: "{{ row.error_rate > 0.05 }}"\n')
    job = str(tmp_path / "job.yaml")
    code, out, err = _cli(["run", job, "--dry-run", "--out", str(tmp_path / "dr"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["counts"] == {"skipped_by_rule": 3, "dry_run": 2}
    assert len(list((tmp_path / "dr").glob("*.eml"))) == 2
    code, out, err = _cli(["preview", job, "--limit", "5", "--out", str(tmp_path / "pv")], capsys)
    assert code == 0, err
    assert out.count("would be skipped (skipped_by_rule): send_if: {{ row.error_rate > 0.05 }} was false") == 3
    assert len(list((tmp_path / "pv").glob("*.eml"))) == 2


def test_the_ui_preview_says_why_and_a_test_send_ignores_the_rules(tmp_path, starttls_server):
    from mailgem.fabric.local import local_identity_fabric
    from mailgem.runner.job import parse_job
    from mailgem.ui.frames import FrameCache
    from mailgem.ui.previews import build_previews, send_test

    LOADS.to_parquet(tmp_path / "loads.parquet", index=False)
    job = parse_job({"name": "loads", "source": {"path": "loads.parquet"},
                     "email": ROW | {"send_if": "{{ row.error_rate > 0.5 }}"}}, tmp_path / "job.yaml")
    frame, _ = FrameCache().frame(job)
    [first] = build_previews(job, frame, local_identity_fabric(USER), "local", USER, limit=1)
    assert first.error == "send_if: {{ row.error_rate > 0.5 }} was false" and first.html is None
    assert first.report_row["status"] == "skipped_by_rule"
    # "Send a test to me" shows what the message looks like: a rule would only hide it.
    result = send_test(job, frame, fabric_for(starttls_server), "reports", USER, "me@example.com")
    [received] = starttls_server.messages
    assert received.rcpt_tos == ("me@example.com",) and parse(received.data)["Subject"] == "[test] orders: 0.1"
    assert result.code == 250
