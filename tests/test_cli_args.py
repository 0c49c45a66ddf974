"""The command line's arguments: -v after the command, --conf, and which Spark a command gets
(--remote, --master, $SPARK_REMOTE, $MAILGEM_SPARK_MASTER). No Spark is started here; the
end-to-end runs are in tests/test_job_cli.py and tests/test_spark_connect.py."""

from __future__ import annotations

import pytest

from mailgem.connections.errors import ConfigError
from mailgem.runner.cli.parser import parser
from mailgem.runner.cli.steps import spark_target


@pytest.mark.parametrize("argv, verbose", [
    (["run", "job.yaml"], False),
    (["-v", "run", "job.yaml"], True),
    (["run", "job.yaml", "-v"], True),
    (["run", "-v", "job.yaml", "--local"], True),
    (["validate", "job.yaml", "--verbose"], True),
    (["preview", "job.yaml", "-v"], True),
    (["connection", "test", "reports", "-v"], True),
    (["secrets", "list", "-v"], True),
    (["schema", "fabric", "-v"], True),
    (["-v", "schema", "fabric"], True),
])
def test_v_is_accepted_before_and_after_the_command(argv, verbose):
    assert parser().parse_args(argv).verbose is verbose


def test_every_command_and_action_takes_v():
    import argparse

    def commands(p, path=()):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, command in action.choices.items():
                    yield path + (name,), command
                    yield from commands(command, path + (name,))

    found = dict(commands(parser()))
    assert {("run",), ("validate",), ("preview",), ("connection", "test"), ("secrets", "set")} <= set(found)
    assert [path for path, command in found.items() if "-v" not in command._option_string_actions] == []


def test_conf_is_repeatable_and_a_bad_one_is_refused(capsys):
    args = parser().parse_args(["run", "job.yaml", "--conf", "spark.executor.memory=4g", "--conf", "spark.ui.enabled=true"])
    assert args.conf == [("spark.executor.memory", "4g"), ("spark.ui.enabled", "true")]
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["run", "job.yaml", "--conf", "spark.ui.enabled"])
    assert exit_.value.code == 2
    assert "write KEY=VALUE, e.g. --conf spark.executor.memory=4g" in capsys.readouterr().err


@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, ("local[2]", None)),
    ([], {"MAILGEM_SPARK_MASTER": "local[4]"}, ("local[4]", None)),
    (["--master", "local[3]"], {"MAILGEM_SPARK_MASTER": "local[4]"}, ("local[3]", None)),
    ([], {"SPARK_REMOTE": "sc://spark.example.com:15002"}, ("", "sc://spark.example.com:15002")),
    (["--remote", "sc://a.example.com:15002"], {"SPARK_REMOTE": "sc://b.example.com:15002"}, ("", "sc://a.example.com:15002")),
    (["--remote", "sc://a.example.com:15002"], {"MAILGEM_SPARK_MASTER": "local[4]"}, ("", "sc://a.example.com:15002")),
])
def test_which_spark_a_command_gets(monkeypatch, argv, env, expected):
    for name in ("SPARK_REMOTE", "MAILGEM_SPARK_MASTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert spark_target(parser().parse_args(["run", "job.yaml", *argv])) == expected


def test_master_given_with_spark_remote_set_is_a_local_session_without_it(monkeypatch):
    import os

    monkeypatch.setenv("SPARK_REMOTE", "sc://spark.example.com:15002")
    assert spark_target(parser().parse_args(["run", "job.yaml", "--master", "local[1]"])) == ("local[1]", None)
    assert "SPARK_REMOTE" not in os.environ  # PySpark would refuse a master beside it


def test_both_environment_variables_without_a_flag_is_a_clear_error_without_the_token(monkeypatch):
    monkeypatch.setenv("SPARK_REMOTE", "sc://spark.example.com:443/;token=dapi-SECRET-123")
    monkeypatch.setenv("MAILGEM_SPARK_MASTER", "local[4]")
    with pytest.raises(ConfigError) as error:
        spark_target(parser().parse_args(["run", "job.yaml"]))
    text = str(error.value)
    assert "$SPARK_REMOTE (sc://spark.example.com:443/)" in text and "$MAILGEM_SPARK_MASTER (local[4])" in text
    assert "--remote or --master" in text and "SECRET" not in text and "token" not in text
