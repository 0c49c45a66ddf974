"""The UI's live preview on the demo job: how long the first load takes, and a re-render after an
edit of the email's subject (the frame kept by FrameCache, the gem rebuilt from the edited job).

    python benchmarks/ui_preview.py [--job examples/flights_delay_report.yaml] [--renders 10]

Prints, in seconds: the first load (Spark start-up, the source, the transform, collected to
pandas) with the first preview, then the median and max of ``--renders`` re-renders, each a new
JobSpec (parse_job of the edited document) previewed with build_previews (3 messages at most;
the demo job makes one). Needs the demo data: python examples/prepare_flights.py data/flights.parquet
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

from mailgem.fabric.loader import load_yaml
from mailgem.runner.job import parse_job
from mailgem.ui.frames import FrameCache
from mailgem.ui.previews import build_previews, local_preview_fabric

USER = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=Path(__file__).resolve().parents[1] / "examples" /
                        "flights_delay_report.yaml")
    parser.add_argument("--renders", type=int, default=10)
    args = parser.parse_args()

    doc = load_yaml(args.job)
    fabric = local_preview_fabric(USER)
    cache = FrameCache()
    try:
        started = time.perf_counter()
        job = parse_job(doc, args.job)
        frame, note = cache.frame(job)
        loaded = time.perf_counter() - started
        first = build_previews(job, frame, fabric, "local", USER)
        first_s = time.perf_counter() - started
        print(f"frame: {note}")
        print(f"first load: {loaded:.2f} s (frame), {first_s:.2f} s with the first preview "
              f"({len(first)} message(s), {first[0].size_bytes:,} bytes)")
        times = []
        for i in range(args.renders):
            edited = copy.deepcopy(doc)
            edited["email"]["subject"] = f"Edit {i}: {doc['email']['subject']}"
            started = time.perf_counter()
            job = parse_job(edited, args.job)
            frame, _ = cache.frame(job)
            previews = build_previews(job, frame, fabric, "local", USER)
            times.append(time.perf_counter() - started)
            assert dict(previews[0].headers)["Subject"].startswith(f"Edit {i}: ")
        print(f"re-render after editing email.subject ({args.renders}x): median {statistics.median(times):.3f} s, "
              f"max {max(times):.3f} s")
    finally:
        cache.close()


if __name__ == "__main__":
    main()
