"""Benchmarks: mailgem against the common patterns, measured in the same run (ratios count).

    python benchmarks/run.py [--rows 20000] [--report-rows 1000000] [--only per_row|report]

per_row: N rows, one ~2 KB message each, to Postfix's smtp-sink (a sink faster than any sender
here; its own ceiling is measured with smtp-source and printed):
  * common   - smtplib, build an EmailMessage and open a new connection per message
               (what Airflow's send_email does)
  * reused   - prebuilt messages pushed through one reused aiosmtplib connection
  * mailgem  - EmailGem mode per_row (pandas in), pooled connections; and the same on a Spark
               frame, built and sent on the executors (SparkSession start-up not timed)

report: 1,000,000 rows x 10 columns to one gzip CSV attachment; wall time and peak RSS:
  * pandas   - DataFrame.to_csv + gzip + EmailMessage + smtplib
  * mailgem  - EmailGem mode report (pandas in)
Each report case runs in its own process so peak RSS (ru_maxrss) is its own.

Without smtp-sink (Debian package postfix), an aiosmtpd sink in another process is used and
the output says so; compare ratios only.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOTE = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 24  # ~1.4 KB: messages of ~2 KB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """smtp-sink (or an aiosmtpd fallback) in a separate process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.kind = "smtp-sink" if shutil.which("smtp-sink") else "aiosmtpd (fallback: compare ratios only)"
        if shutil.which("smtp-sink"):
            cmd = ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "1000"]
        else:
            cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}", "-c", "aiosmtpd.handlers.Sink"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the sink did not start")

    def ceiling(self, n: int) -> float | None:
        """The sink's own ceiling, messages/s, from smtp-source (8 sessions, 2 KB messages)."""
        if not shutil.which("smtp-source"):
            return None
        start = time.perf_counter()
        subprocess.run(["smtp-source", "-s", "8", "-m", str(n), "-l", "2048", f"127.0.0.1:{self.port}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return n / (time.perf_counter() - start)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def rows(n: int):
    import pandas as pd

    return pd.DataFrame({"id": range(n), "email": [f"user{i}@example.com" for i in range(n)],
                         "name": [f"Customer {i}" for i in range(n)], "amount": [i * 1.25 for i in range(n)],
                         "note": [NOTE] * n})


def plain_message(r) -> EmailMessage:
    """One row's message, built the usual way (a new EmailMessage each time)."""
    msg = EmailMessage()
    msg["From"] = "bench@example.com"
    msg["To"] = r.email
    msg["Subject"] = f"Order {r.id} for {r.name}"
    msg.set_content(f"Dear {r.name}, amount {r.amount}. {r.note}")
    return msg


def common_pattern(port: int, frame) -> float:
    start = time.perf_counter()
    for r in frame.itertuples():
        msg = plain_message(r)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(msg)
    return len(frame) / (time.perf_counter() - start)


def reused_prebuilt(port: int, frame) -> float:
    import aiosmtplib

    messages = [(r.email, plain_message(r).as_bytes()) for r in frame.itertuples()]

    async def go() -> float:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        start = time.perf_counter()
        for to, data in messages:
            await smtp.sendmail("bench@example.com", [to], data)
        elapsed = time.perf_counter() - start
        await smtp.quit()
        return len(messages) / elapsed

    return asyncio.run(go())


def sink_fabric(port: int, **conn):
    from connections import SmtpConnection
    from fabric import Fabric, Team, current_user

    connection = SmtpConnection(name="sink", host="127.0.0.1", port=port, security="none", anonymous=True,
                                sender_address="bench@example.com", **conn)
    return Fabric(name="bench", teams=[Team(name="bench", members=[current_user()])], connections=[connection])


def per_row_gem(port: int, name: str):
    from gems.email import EmailGem

    return EmailGem({"connection": "sink", "mode": "per_row", "key_columns": ["id"], "to_column": "email",
                     "subject": "Order {{ row.id }} for {{ row.name }}",
                     "text_body": "Dear {{ row.name }}, amount {{ row.amount }}. {{ row.note }}",
                     "table": {"enabled": False}},
                    sink_fabric(port, pool_size=4, max_messages_per_connection=100_000), name=name)


def mailgem_per_row(port: int, frame) -> float:
    gem = per_row_gem(port, "bench")
    start = time.perf_counter()
    report = gem.apply(None, frame)
    elapsed = time.perf_counter() - start
    assert (report["status"] == "sent").all(), report["status"].value_counts()
    return len(frame) / elapsed


def mailgem_per_row_spark(port: int, frame) -> float:
    """The same gem on a Spark frame: messages built and sent on the executors (2 Python workers)."""
    from gems.spark import local_spark

    spark = local_spark("local[2]", app_name="mailgem-bench")
    sdf = spark.createDataFrame(frame).repartition(2).cache()
    sdf.count()  # materialise outside the timing
    gem = per_row_gem(port, "bench-spark")
    start = time.perf_counter()
    report = gem.apply(spark, sdf)
    elapsed = time.perf_counter() - start
    assert report.filter("status != 'sent'").count() == 0
    spark.stop()  # so the JVM does not share the cores with the report cases
    return len(frame) / elapsed


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
        from gems.email import EmailGem

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--report-rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["per_row", "report"])
    parser.add_argument("--report-case")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.report_case:
        print(json.dumps(report_case(args.report_case, args.port, args.report_rows)))
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    sink = Sink()
    try:
        ceiling = sink.ceiling(args.rows)
        print(f"sink: {sink.kind} on 127.0.0.1:{sink.port}; cores: {os.cpu_count()}")
        if ceiling:
            print(f"sink ceiling (smtp-source, 8 sessions, 2 KB): {ceiling:,.0f} messages/s")
        if args.only in (None, "per_row"):
            frame = rows(args.rows)
            print(f"\nper_row: {args.rows:,} messages of ~2 KB")
            common = common_pattern(sink.port, frame)
            reused = reused_prebuilt(sink.port, frame)
            ours = mailgem_per_row(sink.port, frame)
            ours_spark = mailgem_per_row_spark(sink.port, frame)
            for name, rate in (("common (smtplib, new connection each)", common),
                               ("prebuilt, one reused aiosmtplib connection", reused),
                               ("mailgem per_row, pandas (pool of 4)", ours),
                               ("mailgem per_row, Spark local[2] executors", ours_spark)):
                print(f"  {name:45s} {rate:8,.0f} messages/s   {rate / common:5.2f}x common")
        if args.only in (None, "report"):
            print(f"\nreport: {args.report_rows:,} rows x 10 columns, gzip CSV attachment")
            base = run_report_case("pandas", sink.port, args.report_rows)
            ours = run_report_case("mailgem", sink.port, args.report_rows)
            for name, r in (("pandas to_csv + gzip + EmailMessage + smtplib", base), ("mailgem report", ours)):
                print(f"  {name:47s} {r['wall_s']:7.2f} s ({r['wall_s'] / base['wall_s']:.2f}x)   "
                      f"peak RSS {r['peak_rss_mb']:7.0f} MB ({r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x)")
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
