"""The README's benchmark tables, made from ``run.py --json`` files: each figure as the range over
the runs given (ratios are taken within each run first, then ranged).

    python benchmarks/table.py benchmarks/results/*.json            # print the tables (Markdown)
    python benchmarks/table.py --write README.md benchmarks/results/*.json

``--write`` replaces what is between the README's ``<!-- benchmark tables -->`` and
``<!-- end of benchmark tables -->`` lines; tests/test_benchmark_table.py checks that the README
holds exactly what the committed results give.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

START, END = "<!-- benchmark tables -->", "<!-- end of benchmark tables -->"

Run = dict[str, Any]


def _span(values: Sequence[float], fmt: str) -> str:
    """``a–b`` (en dash) over the runs, or one value when they agree at this precision."""
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}–{high}"


def _figure(runs: list[Run], fmt: str, value: Callable[[Run], float | None], suffix: str = "") -> str:
    values = [v for v in (value(r) for r in runs) if v is not None]
    return _span(values, fmt) + suffix if values else "not measured"


def _ratio(key: str, base: str) -> Callable[[Run], float | None]:
    def of(run: Run) -> float | None:
        a, b = run.get(key), run.get(base)
        return a / b if a is not None and b else None
    return of


def _cpu(key: str) -> Callable[[Run], float | None]:
    return lambda run: (run.get(f"per_row_cpu.{key}") or {}).get("us_per_msg")


def _rates(runs: list[Run], section: str, base: str, fmt: str, cases: Sequence[tuple[str, str]]) -> list[str]:
    """A table row per case of ``section``: its rate (``fmt``) and its ratio to ``base``'s."""
    return [f"| {name} | {_figure(runs, fmt, lambda r, full=f'{section}.{key}': r.get(full))} "
            f"| {_figure(runs, '.2f', _ratio(f'{section}.{key}', f'{section}.{base}'), 'x')} |" for key, name in cases]


def tables(runs: list[Run], names: list[str]) -> str:
    """The Markdown tables for ``runs`` (``--json`` figures), named ``names`` (their files)."""
    lines = [f"From {len(runs)} full runs of `python benchmarks/run.py --json` on this 2-core machine "
             f"({', '.join(names)}; ranges over the runs, each ratio taken within its run):", ""]
    lines += ["| per_row, 20,000 messages of ~2 KB | messages/s | vs common | vs ceiling | CPU a message |",
              "| --- | ---: | ---: | ---: | ---: |"]
    cases = (("common", "common pattern: smtplib, new EmailMessage and connection per message"),
             ("reused", "prebuilt messages, one reused aiosmtplib connection"),
             ("ceiling", "ceiling: pipelined prebuilt bytes, 4 connections"),
             ("mailgem_pandas", "mailgem per_row, pandas in (pool of 4; target ≥ 0.5x the ceiling)"),
             ("mailgem_spark", "mailgem per_row, Spark local[2] executors (target ≥ 0.7x the ceiling)"),
             ("nodemailer", "nodemailer, pooled transport (4 connections)"))
    for key, name in cases:
        full = f"per_row.{key}"
        lines.append(f"| {name} | {_figure(runs, ',.0f', lambda r: r.get(full))} "
                     f"| {_figure(runs, '.2f', _ratio(full, 'per_row.common'), 'x')} "
                     f"| {_figure(runs, '.2f', _ratio(full, 'per_row.ceiling'), 'x')} "
                     f"| {_figure(runs, ',.0f', _cpu(key), ' µs')} |")
    lines += ["", "| per_row at a 10 ms round trip, 300 messages | messages/s | vs common |", "| --- | ---: | ---: |"]
    lines += _rates(runs, "latency", "common", ",.1f", (
        ("common", "common pattern"), ("reused", "prebuilt, one reused aiosmtplib connection"),
        ("mailgem_pandas", "mailgem per_row, pandas in (pool of 4)"),
        ("nodemailer", "nodemailer, pooled transport (4 connections)")))
    lines += ["", "| mailgem against nodemailer (issue 27: above 1.00x in both) | mailgem pandas / nodemailer |",
              "| --- | ---: |",
              f"| loopback | {_figure(runs, '.2f', _ratio('per_row.mailgem_pandas', 'per_row.nodemailer'), 'x')} |",
              f"| 10 ms round trip | {_figure(runs, '.2f', _ratio('latency.mailgem_pandas', 'latency.nodemailer'), 'x')} |"]
    lines += ["", "| ledger, 10,000 per_row messages from pandas, a first run (best of 2 rounds) | messages/s | vs no ledger |",
              "| --- | ---: | ---: |"]
    lines += _rates(runs, "ledger", "none", ",.0f", (
        ("none", "no ledger"), ("sqlite", "SQLite (target ≥ 0.95x)"),
        ("postgres_1ms", "PostgreSQL, durable, behind a 1 ms round trip (target ≥ 0.90x)")))
    lines += ["", "| report, 1,000,000 rows x 10 columns, gzip CSV attachment | wall time | peak RSS |",
              "| --- | ---: | ---: |",
              f"| pandas `to_csv` + `gzip` + `EmailMessage` + smtplib | {_figure(runs, '.2f', lambda r: r.get('report.pandas_s'), ' s')} "
              f"| {_figure(runs, ',.0f', lambda r: r.get('report.pandas_rss_mb'), ' MB')} |",
              f"| mailgem report | {_figure(runs, '.2f', lambda r: r.get('report.mailgem_s'), ' s')} "
              f"({_figure(runs, '.2f', _ratio('report.mailgem_s', 'report.pandas_s'), 'x')}) "
              f"| {_figure(runs, ',.0f', lambda r: r.get('report.mailgem_rss_mb'), ' MB')} "
              f"({_figure(runs, '.2f', _ratio('report.mailgem_rss_mb', 'report.pandas_rss_mb'), 'x')}) |"]
    return "\n".join(lines) + "\n"


def replaced(readme: str, block: str) -> str:
    """``readme`` with what is between its START and END lines replaced by ``block``.

    Raises:
        ValueError: the README lacks either line.
    """
    head, start, rest = readme.partition(START + "\n")
    _, end, tail = rest.partition(END + "\n")
    if not start or not end:
        raise ValueError(f"the README has no {START!r} ... {END!r} lines to write the tables between")
    return head + start + block + end + tail


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="run.py --json files")
    parser.add_argument("--write", type=Path, help="the README to write the tables into")
    args = parser.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in args.results]
    block = tables(runs, [p.stem for p in args.results])
    if args.write is None:
        sys.stdout.write(block)
        return
    args.write.write_text(replaced(args.write.read_text(), block))
    print(f"tables from {len(runs)} runs written to {args.write}")


if __name__ == "__main__":
    main()
