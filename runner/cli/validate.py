"""``mailgem validate``: every problem of a job at once, before Spark (or, with
``--schema-from-data``, after Spark analysed the transform); exit 0 only when the run would start."""

from __future__ import annotations

import argparse

from mailgem.gems.email.validate import validate
from mailgem.runner.preflight import Finding, special_domains

from .output import Output
from .parser import EXIT_CONFIG, EXIT_OK
from .steps import SparkJobError, preflight, read_frames, start_spark

__all__ = ["cmd_validate"]


def cmd_validate(args: argparse.Namespace) -> int:
    """Check the job; returns 0 when the run would start, else 2."""
    out = Output(args.json)
    pre = preflight(args, out, read_secrets=True)
    findings = list(pre.findings)
    if pre.ok and args.schema_from_data:
        assert pre.job is not None
        spark, log_file = start_spark(args, pre.job.name)
        try:
            frame, in1 = read_frames(args, pre, spark, log_file)
        except SparkJobError as exc:
            findings.append(Finding("error", str(exc)))
        else:
            columns, in1_columns = ({f.name: f.dataType.simpleString() for f in f_.schema.fields} if f_ is not None
                                    else None for f_ in (frame, in1))
            for d in validate(pre.job.email, columns, job=pre.job.name, params=pre.job.params,
                              special_domains=special_domains(pre), in1_columns=in1_columns, has_in1=in1 is not None):
                finding = Finding(d.severity, f"{args.job}: email.{d.path}: {d.message}")
                if finding not in findings:
                    out.note(f"mailgem: {finding}")
                    findings.append(finding)
    errors = [f for f in findings if f.severity == "error"]
    if args.json:
        out.json_line({"job": str(args.job), "exit_code": EXIT_CONFIG if errors else EXIT_OK,
                       "errors": [str(f) for f in errors],
                       "warnings": [str(f) for f in findings if f.severity == "warning"]})
    else:
        out.say(f"{args.job}: {len(errors)} error(s); the run would not start" if errors else
                f"{args.job}: OK, the run would start" + (f" ({len(findings)} warning(s))" if findings else ""))
    return EXIT_CONFIG if errors else EXIT_OK
