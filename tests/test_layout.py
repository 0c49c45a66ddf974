"""Layouts give byte for byte what the stdlib gives for the same message (differential test)."""

from __future__ import annotations

import random

import pytest
from pydantic import SecretStr

from mailgem.connections import SmtpConnection, SmtpTransport
from mailgem.connections.headers import prefolded
from mailgem.gems.email.content.layout import Layout
from mailgem.gems.email.content.message import build_message

TRANSPORT = SmtpTransport(SmtpConnection(name="t", host="h", port=587, username="reports@example.com",
                                         password={"secret": "s"}, sender_name="Répört Bot"), SecretStr("x"))
HEADERS = [prefolded("Date", "Sun, 29 Nov 2026 10:00:00 +0000"), prefolded("X-Job", "nightly")]

TEXTS = [
    "short ascii",
    "",
    "two\nlines\r\nand a CR\rend",
    "long line " * 30,                       # > 78 characters: quoted-printable
    "ünïcödé text with ß",                   # 8bit
    "日本語のテキスト " * 20,                   # long non-Latin: base64
    "trailing newline\n",
    ".leading dot\nFrom here\n",
]
SUBJECTS = ["Order 1", "Ärger im Büro — Bericht", "a very long subject " * 8, "x"]
TOS = [["a@example.com"], ["Ann Example <ann@example.com>", "b@example.com"], ['"Doe, J" <j@example.com>'],
       ["Zoë Ölçer <zoe@example.com>"]]


def _stdlib(to, cc, subject, mid, text, html, boundary, charset="utf-8"):
    msg = build_message(to=to, cc=cc, subject=subject, headers=HEADERS, text=text, html=html, attachments=[],
                        charset=charset)
    msg["Message-ID"] = mid
    if boundary:
        msg.set_boundary(boundary)
    return TRANSPORT.flatten(msg)


@pytest.mark.parametrize("has_text, has_html", [(True, False), (True, True), (False, True)])
@pytest.mark.parametrize("has_cc", [False, True])
def test_layout_bytes_equal_the_stdlib(has_text, has_html, has_cc):
    layout = Layout.build(headers=HEADERS, charset="utf-8", has_cc=has_cc, has_text=has_text, has_html=has_html)
    rng = random.Random(7)
    for i in range(60):  # bounded
        to, subject = rng.choice(TOS), rng.choice(SUBJECTS)
        cc = rng.choice(TOS) if has_cc else []
        text = rng.choice(TEXTS) if has_text else None
        html = f"<p>{rng.choice(TEXTS)}</p>" if has_html else None
        mid = f"<{i:032x}.mailgem@example.com>" if i % 2 else f"<other-{i}@example.com>"  # ours, and any
        filled = layout.fill(to=to, cc=cc, subject=subject, message_id=mid, text=text, html=html)
        assert filled is not None
        assert filled.bytes_for(TRANSPORT.identity) == _stdlib(to, cc, subject, mid, text, html, layout.boundary)


def test_boundary_in_a_body_falls_back():
    layout = Layout.build(headers=HEADERS, charset="utf-8", has_cc=False, has_text=True, has_html=True)
    assert layout.fill(to=["a@example.com"], cc=[], subject="s", message_id="<1@example.com>",
                       text=f"--{layout.boundary}", html="<p>x</p>") is None


def test_other_charsets_equal_the_stdlib():
    layout = Layout.build(headers=HEADERS, charset="iso-8859-1", has_cc=False, has_text=True, has_html=True)
    for i, text in enumerate(["plain", "Grüße aus Köln", "long ü line " * 20]):  # bounded
        mid = f"<{i:032x}.mailgem@example.com>"
        filled = layout.fill(to=["a@example.com"], cc=[], subject="Grüße", message_id=mid, text=text, html=f"<b>{text}</b>")
        assert filled.bytes_for(TRANSPORT.identity) == _stdlib(["a@example.com"], [], "Grüße", mid, text, f"<b>{text}</b>",
                                                      layout.boundary, charset="iso-8859-1")


def test_public_fallback_encodes_like_the_stdlib_helper():
    from mailgem.gems.email.content import layout

    for text in ["plain", "ünïcödé", "long line " * 30, "日本語 " * 40]:  # bounded
        assert layout._stdlib_encode_text(text, "utf-8") == layout._encode_text(text, "utf-8", None, layout._POLICY)


def test_verbatim_headers_equal_the_stdlib_fold():
    from email import policy

    import email

    from mailgem.connections.headers import fold_text
    from mailgem.gems.email.content.layout import _fold

    rng = random.Random(11)
    text = [chr(c) for c in range(32, 127)] + [" "] * 8 + ["=?", "ü"]
    local, domain = "abcXYZ019_%+-", "abcxyz09-"

    def atom(alphabet, k):
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, k)))

    for _ in range(3000):  # bounded
        subject = "".join(rng.choice(text) for _ in range(rng.randint(1, 90)))
        address = ".".join(atom(local, 8) for _ in range(rng.randint(1, 3))) + "@" + \
            ".".join(atom(domain, 12) for _ in range(rng.randint(2, 4)))
        for name, value in (("Subject", subject), ("To", address), ("Cc", address)):
            if name == "Subject":
                # The stdlib's own fold, unless it would change the text (connections.headers.fold_text):
                # what every message writes, and what a reader decodes back to the subject exactly.
                expected = fold_text(name, value, policy.SMTP).encode("ascii", "surrogateescape")
                decoded = email.message_from_bytes(expected + b"\r\n", policy=policy.default)["Subject"]
                assert str(decoded).strip() == str(policy.SMTP.header_factory(name, value)).strip(), value
            else:
                expected = policy.SMTP.header_factory(name, value).fold(policy=policy.SMTP).encode("ascii", "surrogateescape")
            assert _fold(name, value) == expected, (name, value)


def _same_boundaries(msg) -> None:
    for i, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"==boundary-{i}==")


@pytest.mark.parametrize("utf8", [False, True])
def test_spliced_attachments_equal_the_stdlib(utf8):
    import dataclasses
    import os

    from mailgem.gems.email.content.attachments import Attachment
    from mailgem.gems.email.content.spliced import SPLICE_MIN_BYTES, SplicedMessage, placeholder

    rng = random.Random(11)
    for extra in (0, 1, 56, 57, 58, 3 * 1024 * 1024 + 5):  # bounded; around the 57-byte base64 group
        big = [Attachment("report.csv.gz", os.urandom(SPLICE_MIN_BYTES + extra), "application", "gzip"),
               Attachment("more.parquet", os.urandom(SPLICE_MIN_BYTES + 57 - extra % 57), "application",
                          "vnd.apache.parquet")]
        small = [Attachment("small.csv", b"a,b\r\n1,2\r\n", "text", "csv", (("charset", "utf-8"),)),
                 Attachment("chart.png", os.urandom(3000), "image", "png", content_id="chart.1@mailgem")]
        attachments = [small[1], big[0], small[0], big[1]]
        marks = {id(a): placeholder() for a in big}
        stand_ins = [dataclasses.replace(a, data=marks[id(a)]) if id(a) in marks else a for a in attachments]
        kwargs = dict(to=["Zoë <z@example.com>"], cc=[], subject=rng.choice(SUBJECTS), headers=HEADERS,
                      text=rng.choice(TEXTS), html=f"<p>{rng.choice(TEXTS)}</p>", charset="utf-8")
        whole = build_message(attachments=attachments, **kwargs)
        skeleton = build_message(attachments=stand_ins, **kwargs)
        for msg in (whole, skeleton):
            msg["Message-ID"] = "<1.mailgem@example.com>"
            _same_boundaries(msg)
        spliced = SplicedMessage(skeleton, [(marks[id(a)], a.data) for a in big])
        assert spliced.bytes_for(TRANSPORT.identity, utf8=utf8) == TRANSPORT.flatten(whole, utf8=utf8)


def test_a_placeholder_that_is_not_found_is_an_error_not_a_message_without_its_attachment():
    from mailgem.gems.email.content.spliced import SplicedMessage, placeholder

    msg = build_message(to=["a@example.com"], cc=[], subject="x", headers=HEADERS, text="t", html=None,
                        attachments=[], charset="utf-8")
    with pytest.raises(RuntimeError, match="placeholder"):
        SplicedMessage(msg, [(placeholder(), b"data")]).bytes_for(TRANSPORT.identity)
