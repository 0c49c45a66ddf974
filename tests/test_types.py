"""Types a checker can follow: the package passes mypy (strict on the public API; config in
pyproject.toml), and a user's checkers (mypy, pyright) resolve ``mailgem`` through its install
from outside the checkout and read the overloads of ``EmailGem.apply``: pandas in, pandas out;
Spark in, Spark out; with one input or two."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

USER_CODE = textwrap.dedent("""
    import pandas as pd
    from pyspark.sql import SparkSession

    from mailgem import EmailGem, SmtpConnection, load_fabric
    from mailgem.connections import SecretRef

    gem = EmailGem({"connection": "c", "to": "ops@example.com", "subject": "s"}, load_fabric("fabric.yaml"))
    spark = SparkSession.builder.getOrCreate()
    reveal_type(gem.apply(pd.DataFrame({"a": [1]})))
    reveal_type(gem.apply(spark, pd.DataFrame({"a": [1]})))
    reveal_type(gem.apply(pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [1]})))
    reveal_type(gem.apply(None, pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [1]})))
    reveal_type(gem.apply(spark.range(3)))
    reveal_type(gem.apply(spark, spark.range(3)))
    reveal_type(gem.apply(spark, spark.range(3), spark.range(2)))
    reveal_type(gem.apply(spark.range(3), in1=spark.range(2)))
    reveal_type(SmtpConnection(name="c", host="h", port=587, username="a@example.com", password=SecretRef(secret="s")).port)
""")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_package_passes_the_type_checker():
    done = _run([sys.executable, "-m", "mypy"], cwd=ROOT)  # [tool.mypy] in pyproject.toml: packages = mailgem
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout


def test_mypy_follows_the_install_and_the_overloads(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)  # outside the checkout: only the install can resolve mailgem
    done = _run([sys.executable, "-m", "mypy", "--python-executable", sys.executable, "--no-incremental", "user.py"],
                cwd=tmp_path)
    assert done.returncode == 0, done.stdout  # reveal_type notes only: no error
    revealed = [line.split("Revealed type is ", 1)[1].strip('"') for line in done.stdout.splitlines()
                if "Revealed type is" in line]
    assert revealed == ["pandas.core.frame.DataFrame"] * 4 + ["pyspark.sql.dataframe.DataFrame"] * 4 + ["int"], \
        done.stdout


@pytest.mark.skipif(shutil.which("basedpyright", path=str(BIN)) is None, reason="basedpyright is not installed")
def test_pyright_follows_the_install_and_the_overloads(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)
    done = _run([str(BIN / "basedpyright"), "--pythonpath", sys.executable, "--outputjson", "user.py"], cwd=tmp_path)
    report = json.loads(done.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert not errors, errors  # an unresolved import (reportMissingImports) would be one
    revealed = [d["message"].rsplit(" is ", 1)[1].strip('"') for d in report["generalDiagnostics"]
                if d["severity"] == "information" and d["message"].startswith("Type of")]
    assert revealed == ["DataFrame"] * 8 + ["int"], revealed
    # Which DataFrame: pyright names the class only; hovering would name its module. Check the
    # Spark ones are not pandas' by asking for a method only Spark's has.
    (tmp_path / "user2.py").write_text(USER_CODE.split("reveal_type")[0]
                                       + "gem.apply(spark.range(3)).createOrReplaceTempView('r')\n"
                                       + "gem.apply(pd.DataFrame({'a': [1]})).to_csv('r.csv')\n")
    done = _run([str(BIN / "basedpyright"), "--pythonpath", sys.executable, "--outputjson", "user2.py"], cwd=tmp_path)
    assert json.loads(done.stdout)["summary"]["errorCount"] == 0, done.stdout
