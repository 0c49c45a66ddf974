"""README screenshots: the demo job's email as a recipient sees it, on a desktop and on a phone.

Runs ``mailgem run examples/flights_delay_report.yaml --local`` (the embedded local SMTP server,
which saves each received message as an ``.eml`` file in an outbox folder), takes the received
message's HTML part with its inline chart (``cid:`` URLs replaced by ``data:`` URLs of the related
parts), renders it in headless Chromium (Playwright) at 1000 and 390 CSS px, and writes
``report-desktop.png`` and ``report-phone.png``.

Usage::

    make screenshots                                   # docs/img/report-{desktop,phone}.png
    python examples/screenshot.py --out docs/img       # the same (needs data/flights.parquet)
    python examples/screenshot.py --message outbox/X.eml --out /tmp/shots   # an existing message

The browser: $MAILGEM_CHROMIUM, else Debian's ``chromium-headless-shell`` (Playwright's own
browser download is not needed). tests/test_report_render.py runs :func:`render_screenshots`.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "examples" / "flights_delay_report.yaml"
SHOTS = (("desktop", 1000, 800), ("phone", 390, 844))  # name, CSS px wide, tall
RUN_TIMEOUT_S = 600  # the demo reads 336,776 flights with Spark: well under a minute on a laptop
PAGE_TIMEOUT_S = 30
_BROWSERS = ("chromium-headless-shell", "/usr/lib/chromium/chromium-headless-shell", "chromium")


def run_demo(outbox: Path, job: Path = JOB, mailgem: str | None = None) -> EmailMessage:
    """Run ``job`` on the embedded local server with ``outbox`` as its folder (``mailgem``: the
    command to run, e.g. ``.venv/bin/mailgem`` where PySpark is installed; default this Python's
    ``-m mailgem``); the message it received."""
    command = [*([mailgem] if mailgem else [sys.executable, "-m", "mailgem"]), "run", str(job), "--local",
               "--outbox", str(outbox)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    received = sorted(outbox.glob("*.eml"))
    if done.returncode != 0 or not received:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode} with {len(received)} message(s):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return read_message(received[0])


def read_message(path: Path) -> EmailMessage:
    """A message file (``.eml``) parsed with the stdlib."""
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def html_with_images(message: EmailMessage) -> str:
    """The HTML part, its ``cid:`` URLs (RFC 2392) replaced by ``data:`` URLs of the related parts."""
    part = message.get_body(("html",))
    if part is None:
        raise SystemExit("the message has no HTML part")
    images = {}
    for related in message.walk():
        cid = related.get("Content-ID")
        if cid and not related.is_multipart():
            payload = related.get_payload(decode=True)
            if isinstance(payload, bytes):
                data = base64.b64encode(payload).decode("ascii")
                images[str(cid).strip().strip("<>")] = f"data:{related.get_content_type()};base64,{data}"
    return re.sub(r"cid:([^\"'\s)>]+)", lambda m: images.get(unquote(m.group(1)), m.group(0)), part.get_content())


def render_screenshots(message: EmailMessage, out_dir: Path, browser: Any) -> list[Path]:
    """Render ``message``'s HTML part in ``browser`` (a Playwright ``Browser``) at each width of
    :data:`SHOTS` (2x pixel density, full page) and write ``report-<name>.png`` into ``out_dir``."""
    html = html_with_images(message)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, width, height in SHOTS:
        context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=2)
        try:
            context.set_default_timeout(PAGE_TIMEOUT_S * 1000)
            page = context.new_page()
            page.set_content(html, wait_until="load", timeout=PAGE_TIMEOUT_S * 1000)
            path = out_dir / f"report-{name}.png"
            page.screenshot(path=str(path), full_page=True, timeout=PAGE_TIMEOUT_S * 1000)
            written.append(path)
        finally:
            context.close()
    return written


def find_chromium() -> str:
    """$MAILGEM_CHROMIUM, else the first headless Chromium found."""
    for candidate in filter(None, (os.environ.get("MAILGEM_CHROMIUM"), *_BROWSERS)):
        found = shutil.which(candidate)
        if found:
            return found
    raise SystemExit("no headless Chromium: apt-get install chromium-headless-shell, or set MAILGEM_CHROMIUM")


def main(argv: list[str] | None = None) -> int:
    """Run the demo (or read ``--message``), render it, and print where the images went."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNG files")
    parser.add_argument("--message", type=Path, help="render this .eml instead of running the demo")
    parser.add_argument("--mailgem", help="the mailgem command that runs the demo (needs PySpark; default: this Python's)")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("playwright is not installed: `make screenshots` runs this in .venv-browser") from None
    executable = find_chromium()
    if args.message is not None:
        message = read_message(args.message)
    else:
        with tempfile.TemporaryDirectory(prefix="mailgem-screenshots-") as outbox:
            message = run_demo(Path(outbox), mailgem=args.mailgem)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, timeout=60_000)
        try:
            written = render_screenshots(message, args.out, browser)
        finally:
            browser.close()
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
