"""Benchmarks: mailgem against the common patterns, measured in the same run (ratios count).

    python benchmarks/run.py [--rows 20000] [--report-rows 1000000] [--latency-rows 300]
                             [--only per_row|latency|report] [--json PATH]
    python benchmarks/run.py --scale [--scale-rows 1000000] [--json PATH]

per_row: N rows, one ~2 KB message each, to Postfix's smtp-sink (a sink faster than any sender
here; its own ceiling is measured with smtp-source and printed):
  * common   - smtplib, build an EmailMessage and open a new connection per message
               (what Airflow's send_email does)
  * reused   - prebuilt messages pushed through one reused aiosmtplib connection
  * mailgem  - EmailGem mode per_row (pandas in), pooled connections; and the same on a Spark
               frame, built and sent on the executors (start-up of the SparkSession and of its
               Python workers not timed; mailgem's imports in the workers are)
  * ceiling  - what this machine can push: a minimal pipelined client (RFC 2920) sending the
               prebuilt bytes over 4 connections, each message's MAIL/RCPT/DATA in one write
               and the next group right after the final dot
  * nodemailer - the peer: Node's most used mail library, pooled transport of 4 connections,
               every message handed to it at once (benchmarks/peers.py; skipped, saying why,
               without node 20+ or, for its first install, npm)

latency: the same common, reused and mailgem per_row runs through a proxy that delays every
chunk 5 ms each way (a 10 ms round trip, as to a mail server in the same region), and
nodemailer through the same proxy.

report: 1,000,000 rows x 10 columns to one gzip CSV attachment; wall time and peak RSS:
  * pandas   - DataFrame.to_csv + gzip + EmailMessage + smtplib
  * mailgem  - EmailGem mode report (pandas in)
Each report case runs in its own process so peak RSS (ru_maxrss) is its own.

Beside each per_row rate, the CPU it took (psutil): the cores the sending side kept busy (this
process with its threads; for Spark, the JVM and its Python workers too), its CPU microseconds
a message, and the sink's share of a core. On 2 cores a sender at 1.00 core is bound by its own
per-message CPU, one well below it by round trips; the sink's share shows it was not the limit.
(The ceiling's client keeps one message in flight a connection: it is round-trip bound, near
two thirds of a core, so "ceiling" is the issue's yardstick, not the most the sink can take.)

Without smtp-sink (Debian package postfix), an aiosmtpd sink in another process is used and
the output says so; compare ratios only. ``--json PATH`` writes every figure (keys in
:data:`JSON_KEYS`), which the README's table is made from.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import resource
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from harness import DelayProxy, Metered, Sink, plain_message, rows, sink_fabric
from peers import nodemailer_or_skip
from scale import SCALE_KEYS, run_scale

JSON_KEYS = ("per_row.common", "per_row.reused", "per_row.ceiling", "per_row.mailgem_pandas", "per_row.mailgem_spark",
             "per_row.nodemailer", "latency.rtt_ms", "latency.rtt_measured_ms", "latency.common", "latency.reused", "latency.mailgem_pandas",
             "latency.nodemailer", "report.pandas_s", "report.mailgem_s", "report.pandas_rss_mb", "report.mailgem_rss_mb", "sink",
             "per_row_cpu.common", "per_row_cpu.reused", "per_row_cpu.ceiling", "per_row_cpu.mailgem_pandas",
             "per_row_cpu.mailgem_spark", "per_row_cpu.nodemailer", "nodemailer",
             "ledger.none", "ledger.sqlite", "ledger.postgres_1ms", "ledger.pg_rtt_measured_ms",
             "ledger_cpu.none", "ledger_cpu.sqlite", "ledger_cpu.postgres_1ms")
JSON_KEYS += SCALE_KEYS  # --scale only (benchmarks/scale.py)


def common_pattern(port: int, frame) -> Metered:
    with Metered(len(frame)) as span:
        for r in frame.itertuples():
            msg = plain_message(r)
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                smtp.send_message(msg)
    return span


def reused_prebuilt(port: int, frame) -> Metered:
    import aiosmtplib

    messages = [(r.email, plain_message(r).as_bytes()) for r in frame.itertuples()]

    async def go() -> Metered:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        with Metered(len(messages)) as span:
            for to, data in messages:
                await smtp.sendmail("bench@example.com", [to], data)
        await smtp.quit()
        return span

    return asyncio.run(go())


async def _replies(reader: asyncio.StreamReader, count: int) -> None:
    """Read ``count`` SMTP replies (a reply ends with a line whose 4th character is a space)."""
    for _ in range(count):
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("the sink closed the connection")
            if line[:1] in b"45":
                raise RuntimeError(f"the sink refused: {line!r}")
            if line[3:4] != b"-":
                break


def pipelined_ceiling(port: int, frame, connections: int = 4) -> Metered:
    """Prebuilt messages through ``connections`` minimal pipelining clients (RFC 2920 §3.1): each
    message's MAIL, RCPT and DATA in one write, its content and the next message's group in the
    next, every reply read in order. No TLS, no checks: the machine's ceiling, not a client."""
    messages = [(r.email, plain_message(r).as_bytes(policy=__import__("email").policy.SMTP)) for r in frame.itertuples()]

    def stuffed(data: bytes) -> bytes:
        data = data.replace(b"\r\n.", b"\r\n..")
        return (b"." + data if data.startswith(b".") else data) + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n"

    prepared = [(f"MAIL FROM:<bench@example.com>\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode(), stuffed(data))
                for to, data in messages]

    async def one(share: list[tuple[bytes, bytes]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _replies(reader, 1)  # greeting
        writer.write(b"EHLO bench.example.com\r\n")
        await _replies(reader, 1)
        pending = 0  # replies owed for content already sent (the final dot's 250)
        for group, content in share:
            writer.write(group)
            await _replies(reader, pending + 3)  # previous message's 250, then 250 250 354
            writer.write(content)
            pending = 1
        writer.write(b"QUIT\r\n")
        await _replies(reader, pending + 1)
        writer.close()

    async def go() -> Metered:
        with Metered(len(prepared)) as span:
            await asyncio.gather(*(one(prepared[i::connections]) for i in range(connections)))
        return span

    return asyncio.run(go())


def per_row_gem(port: int, name: str):
    from mailgem.gems.email import EmailGem

    return EmailGem({"connection": "sink", "mode": "per_row", "key_columns": ["id"], "to_column": "email",
                     "subject": "Order {{ row.id }} for {{ row.name }}",
                     "text_body": "Dear {{ row.name }}, amount {{ row.amount }}. {{ row.note }}",
                     "table": {"enabled": False}},
                    sink_fabric(port, pool_size=4, max_messages_per_connection=100_000), name=name)


def mailgem_per_row(port: int, frame) -> Metered:
    gem = per_row_gem(port, "bench")
    with Metered(len(frame)) as span:
        report = gem.apply(None, frame)
    assert (report["status"] == "sent").all(), report["status"].value_counts()
    return span


def mailgem_per_row_spark(port: int, frame) -> Metered:
    """The same gem on a Spark frame: messages built and sent on the executors (2 Python workers).
    Like the SparkSession, PySpark's Python workers are started before the timing (a job that
    imports nothing of mailgem); mailgem's own imports in the workers are timed."""
    from mailgem.runner.spark import local_spark

    spark = local_spark("local[2]", app_name="mailgem-bench")
    sdf = spark.createDataFrame(frame).repartition(2).cache()
    sdf.count()  # materialise outside the timing

    def python_workers_up(batches):  # nested: pickled by value, so it needs nothing of this file
        import pandas as pd

        for batch in batches:
            yield pd.DataFrame({"n": [len(batch)]})

    start = time.perf_counter()
    sdf.mapInPandas(python_workers_up, "n long").toPandas()
    print(f"  (PySpark's Python workers started in {time.perf_counter() - start:.2f} s, not timed)")
    gem = per_row_gem(port, "bench-spark")
    with Metered(len(frame)) as span:  # the JVM and its Python workers are this process's children
        report = gem.apply(spark, sdf)
    assert report.filter("status != 'sent'").count() == 0
    spark.stop()  # so the JVM does not share the cores with the report cases
    return span


def report_frame(n: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "id": np.arange(n), "a": rng.random(n), "b": rng.random(n) * 1000, "c": rng.integers(0, 10**6, n),
        "d": rng.integers(0, 100, n), "e": rng.choice(["alpha", "bravo", "charlie", "delta"], n),
        "f": pd.date_range("2024-01-01", periods=n, freq="s"), "g": rng.random(n), "h": rng.choice(["x", "yy", "zzz"], n),
        "i": rng.integers(-5000, 5000, n)})


def report_case(case: str, port: int, n: int) -> dict[str, float]:
    """One report-mode run in this (fresh) process; returns wall seconds and peak RSS."""
    frame = report_frame(n)
    start = time.perf_counter()
    if case == "pandas":
        data = gzip.compress(frame.to_csv(index=False).encode())
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "bench@example.com", "boss@example.com", "report"
        msg.set_content(f"{n} rows attached")
        msg.add_attachment(data, maintype="application", subtype="gzip", filename="report.csv.gz")
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(msg)
    else:
        from mailgem.gems.email import EmailGem

        gem = EmailGem({"connection": "sink", "to": "boss@example.com", "subject": "report",
                        "attachments": [{"file_name": "report.csv", "compression": "gzip"}]},
                       sink_fabric(port, max_message_bytes=500 * 1024 * 1024), name="bench")
        report = gem.apply(None, frame)
        assert report.iloc[0].status == "sent", report.iloc[0].error
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_report_case(case: str, port: int, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--report-case", case, "--port", str(port), "--report-rows", str(n)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ledger_section(port: int, n: int, figures: dict[str, object]) -> None:
    """The ledger cases (:mod:`ledger_cases`), printed and added to ``figures``."""
    from ledger_cases import ledger_cases

    spans, rtt_ms = ledger_cases(port, rows(n))
    figures["ledger.pg_rtt_measured_ms"] = round(rtt_ms, 2)
    figures.update({f"ledger.{k}": round(v.rate, 1) for k, v in spans.items()})
    figures.update({f"ledger_cpu.{k}": v.cpu() for k, v in spans.items()})
    print(f"\nledger: {n:,} per_row messages from pandas, a first run, best of 2 rounds "
          f"(PostgreSQL durable, 1 ms round trip through a proxy; {rtt_ms:.2f} ms measured)")
    none = spans["none"].rate
    for key, name in (("none", "no ledger"), ("sqlite", "SQLite ledger (target >= 0.95x)"),
                      ("postgres_1ms", "PostgreSQL ledger, 1 ms away (target >= 0.90x)")):
        span = spans[key]
        print(f"  {name:50s} {span.rate:8,.0f} messages/s   {span.rate / none:5.2f}x no ledger   "
              f"{span.cores:4.2f} cores {span.us_per_msg:5.0f} µs/msg   {span.sink_cores:4.2f} cores")


def latency_case(sink: Sink, n: int, figures: dict[str, object]) -> None:
    """The per_row cases through a DelayProxy (10 ms round trip): rates printed and put in ``figures``."""
    proxy = DelayProxy(sink.port)
    try:
        frame = rows(n)
        rtt_ms = proxy.round_trip_ms()
        print(f"\nlatency: {n:,} messages through a proxy adding 5 ms each way "
              f"(10 ms round trip; {rtt_ms:.1f} ms measured)")
        results = {"common": common_pattern(proxy.port, frame).rate, "reused": reused_prebuilt(proxy.port, frame).rate,
                   "mailgem_pandas": mailgem_per_row(proxy.port, frame).rate}
        if peer := nodemailer_or_skip(proxy.port, frame, sink.proc.pid, figures):
            results["nodemailer"] = peer.rate
    finally:
        proxy.stop()
    figures["latency.rtt_ms"] = 10
    figures["latency.rtt_measured_ms"] = round(rtt_ms, 2)
    figures.update({f"latency.{k}": round(v, 1) for k, v in results.items()})
    for key, name in (("common", "common (smtplib, new connection each)"),
                      ("reused", "prebuilt, one reused aiosmtplib connection"),
                      ("mailgem_pandas", "mailgem per_row, pandas (pool of 4)"),
                      ("nodemailer", "nodemailer, pooled transport (4 connections)")):
        if key in results:
            print(f"  {name:50s} {results[key]:8,.0f} messages/s   {results[key] / results['common']:5.2f}x common")
    if "nodemailer" in results:
        print(f"  mailgem pandas / nodemailer: {results['mailgem_pandas'] / results['nodemailer']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--report-rows", type=int, default=1_000_000)
    parser.add_argument("--latency-rows", type=int, default=300)
    parser.add_argument("--ledger-rows", type=int, default=10_000)
    parser.add_argument("--only", choices=["per_row", "latency", "ledger", "report"])
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--scale", action="store_true", help="run only the scale case (long: see benchmarks/scale.py)")
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--report-case")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.report_case:
        print(json.dumps(report_case(args.report_case, args.port, args.report_rows)))
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.scale:  # alone: a million messages take a long while (issue 27 §4)
        figures = run_scale(args.scale_rows, per_row_gem)
        if args.json is not None:
            args.json.write_text(json.dumps({k: figures[k] for k in JSON_KEYS if k in figures}, indent=2) + "\n")
            print(f"\nfigures written to {args.json}")
        return
    figures: dict[str, object] = {}
    sink = Sink()
    Metered.sink_pid = sink.proc.pid
    figures["sink"] = sink.kind
    try:
        ceiling = sink.ceiling(args.rows)
        print(f"sink: {sink.kind} on 127.0.0.1:{sink.port}; cores: {os.cpu_count()}")
        if ceiling:
            print(f"sink ceiling (smtp-source, 8 sessions, 2 KB): {ceiling:,.0f} messages/s")
        if args.only in (None, "per_row"):
            frame = rows(args.rows)
            print(f"\nper_row: {args.rows:,} messages of ~2 KB")
            spans = {"common": common_pattern(sink.port, frame), "reused": reused_prebuilt(sink.port, frame),
                     "ceiling": pipelined_ceiling(sink.port, frame),
                     "mailgem_pandas": mailgem_per_row(sink.port, frame)}
            if peer := nodemailer_or_skip(sink.port, frame, sink.proc.pid, figures):
                spans["nodemailer"] = peer
            spans["mailgem_spark"] = mailgem_per_row_spark(sink.port, frame)
            figures.update({f"per_row.{k}": round(v.rate, 1) for k, v in spans.items()})
            figures.update({f"per_row_cpu.{k}": v.cpu() for k, v in spans.items()})
            common, ceiling_rate = spans["common"].rate, spans["ceiling"].rate
            print(f"  {'':50s} {'':19s}   {'':12s}   {'':12s}   sender CPU        sink CPU")
            for key, name in (("common", "common (smtplib, new connection each)"),
                              ("reused", "prebuilt, one reused aiosmtplib connection"),
                              ("ceiling", "ceiling: pipelined prebuilt bytes, 4 connections"),
                              ("mailgem_pandas", "mailgem per_row, pandas (pool of 4)"),
                              ("mailgem_spark", "mailgem per_row, Spark local[2] executors"),
                              ("nodemailer", "nodemailer, pooled transport (4 connections)")):
                if key not in spans:
                    continue
                span = spans[key]
                print(f"  {name:50s} {span.rate:8,.0f} messages/s   {span.rate / common:5.2f}x common   "
                      f"{span.rate / ceiling_rate:4.2f}x ceiling   {span.cores:4.2f} cores {span.us_per_msg:5.0f} µs/msg   "
                      f"{span.sink_cores:4.2f} cores")
            if peer:
                print(f"  mailgem pandas / nodemailer: {spans['mailgem_pandas'].rate / peer.rate:.2f}x")
        if args.only in (None, "latency"):
            latency_case(sink, args.latency_rows, figures)
        if args.only in (None, "ledger"):
            ledger_section(sink.port, args.ledger_rows, figures)
        if args.only in (None, "report"):
            print(f"\nreport: {args.report_rows:,} rows x 10 columns, gzip CSV attachment")
            base = run_report_case("pandas", sink.port, args.report_rows)
            ours = run_report_case("mailgem", sink.port, args.report_rows)
            figures.update({"report.pandas_s": round(base["wall_s"], 3), "report.mailgem_s": round(ours["wall_s"], 3),
                            "report.pandas_rss_mb": round(base["peak_rss_mb"]), "report.mailgem_rss_mb": round(ours["peak_rss_mb"])})
            for name, r in (("pandas to_csv + gzip + EmailMessage + smtplib", base), ("mailgem report", ours)):
                print(f"  {name:47s} {r['wall_s']:7.2f} s ({r['wall_s'] / base['wall_s']:.2f}x)   "
                      f"peak RSS {r['peak_rss_mb']:7.0f} MB ({r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x)")
    finally:
        sink.stop()
    if args.json is not None:
        args.json.write_text(json.dumps({k: figures[k] for k in JSON_KEYS if k in figures}, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
