"""The job page's live preview on the demo job, measured as the page asks for it: the POST
``/job/preview`` the browser sends after an edit (the form applied to the file's version, the job
validated, the kept frame previewed, the preview's HTML rendered), through the app in process.

    python benchmarks/ui_preview.py [--job examples/flights_delay_report.yaml] [--renders 10]

Prints, in seconds: the first preview (Spark start-up, the source, the transform, collected and
kept), then the median and max of ``--renders`` previews after editing ``email.subject`` (the
kept frame reused), and one after editing the transform (the source read again by the warm
Spark session). A browser adds the page's debounce (150 ms) and the rendering; the end-to-end
figure is tests/test_ui_browser.py's (test-artifacts/ui/timings.json).
Needs the demo data: python examples/prepare_flights.py data/flights.parquet
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from mailgem.ui.app import UiConfig, create_app
from mailgem.ui.forms import form_fields
from mailgem.ui.job_views import job_schema
from mailgem.ui.security import CSRF_HEADER, derive
from mailgem.ui.yamlfile import YamlFile

TOKEN = "benchmark-token-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=Path(__file__).resolve().parents[1] / "examples" /
                        "flights_delay_report.yaml")
    parser.add_argument("--renders", type=int, default=10)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's note on its test client's HTTP library
        from starlette.testclient import TestClient

    version = YamlFile.load(args.job)
    form = {f.path: f.value for f in form_fields(job_schema(), version.doc)}
    form.update({"_digest": version.digest, "_mode": "form"})
    with tempfile.TemporaryDirectory() as outbox:
        config = UiConfig(fabric=None, job=args.job, local=True, outbox=Path(outbox), user="bench", token=TOKEN,
                          hosts=frozenset({"testserver"}))
        with TestClient(create_app(config), base_url="http://testserver", follow_redirects=False) as client:
            client.get(f"/job?token={TOKEN}")
            client.headers[CSRF_HEADER] = derive(TOKEN, "csrf")
            client.get("/job")  # the page: its version remembered

            def preview(values: dict[str, str], expect: str) -> float:
                started = time.perf_counter()
                answer = client.post("/job/preview", data=values).json()
                elapsed = time.perf_counter() - started
                assert expect in answer.get("html", ""), answer.get("general") or answer.get("fields")
                return elapsed

            print(f"first preview: {preview(form, 'Delays'):.2f} s (Spark start-up, source, transform, kept)")
            times = []
            for i in range(args.renders):
                times.append(preview({**form, "email.subject": f"Edit {i}: late flights"}, f"Edit {i}: late flights"))
            print(f"after editing email.subject ({args.renders}x): median {statistics.median(times):.3f} s, "
                  f"min {min(times):.3f} s, max {max(times):.3f} s")
            transform = form["transform"].replace("dep_delay >= 15", "dep_delay >= 30")
            print(f"after editing the transform (read again): {preview({**form, 'transform': transform}, 'Delays'):.2f} s")


if __name__ == "__main__":
    main()
