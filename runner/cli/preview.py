"""``mailgem preview``: the first messages built exactly as ``run`` would build them, written as
``.eml`` and ``.html``; nothing is sent and no secret is read."""

from __future__ import annotations

import argparse
import webbrowser

from mailgem.gems.email.content.preview import write_previews

from .output import Output, UsageError
from .parser import EXIT_FAILED, EXIT_OK
from .steps import config_failure, make_gem, preflight, read_frames, start_spark, target

__all__ = ["cmd_preview"]


def cmd_preview(args: argparse.Namespace) -> int:
    """Write the previews; returns 1 when a message could not be built, else 0."""
    out = Output(False)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    pre = preflight(args, out, read_secrets=False)
    if not pre.ok:
        return config_failure(args, out, [str(f) for f in pre.errors], pre)
    assert pre.job is not None
    spark, log_file = start_spark(args, pre.job.name)
    frame, in1 = read_frames(args, pre, spark, log_file)
    first_html = None
    failed = 0
    with target(args, pre, out) as (fabric, _, connection):
        gem = make_gem(pre, fabric, connection, args.user)
        for b, html_path in write_previews(gem.build(frame, args.limit, in1), args.out):
            out.say(b.summary())
            if html_path is not None:
                out.say(f"  {html_path.with_suffix('.eml')}  {html_path}")
                first_html = first_html or html_path
            elif b.skipped is None:  # a message send_if skips (or a run skip_if skips) is no failure
                failed += 1
    out.say(f"Preview: nothing was sent; files in {args.out}/")
    if args.open and first_html is not None:
        webbrowser.open(first_html.resolve().as_uri())
    return EXIT_FAILED if failed else EXIT_OK
