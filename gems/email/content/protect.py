"""Password-protected attachments (``protect: {password: {secret: NAME}}``): the file inside a ZIP
encrypted with AES-256 (WinZip AES), written by pyzipper. 7-Zip, WinZip, WinRAR, Keka and The
Unarchiver open it with the password; the legacy ZipCrypto, which every built-in unzipper reads,
is not used (broken by known-plaintext attacks).

The passwords are read from the fabric's store on the driver when the run starts
(:func:`mailgem.gems.email.run.passwords.protect_passwords`) and reach the composer, on the
driver or a Spark executor, as :class:`pydantic.SecretStr` (their repr is ``'**********'``);
a password's text is taken out of it only to write a ZIP (as UTF-8, which 7-Zip reads too), and
is never in a message, log or report.
"""

from __future__ import annotations

import datetime as dt
import io
import secrets
from collections.abc import Mapping

from pydantic import SecretStr

from ..properties import EmailProperties, Protection
from .attachments import Attachment
from .checks import MessageBuildError

__all__ = ["Protector", "protect_refs", "zip_encrypted"]

# Types whose bytes are compressed already: stored in the ZIP as they are (deflate would only cost time).
_COMPRESSED = {("application", "zip"), ("application", "gzip"), ("application", "vnd.apache.parquet"),
               ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")}


def protect_refs(props: EmailProperties) -> list[tuple[str, str]]:
    """``(YAML path, secret name)`` of every password the properties need, in order
    (``("attachments[0].protect.password.secret", "payroll-zip")``)."""
    out = [(f"attachments[{i}].protect.password.secret", a.protect.password.secret)
           for i, a in enumerate(props.attachments) if a.protect is not None]
    out += [(f"files[{i}].protect.password.secret", f.protect.password.secret)
            for i, f in enumerate(props.files) if f.protect is not None]
    return out


def zip_encrypted(attachment: Attachment, password: SecretStr, date_time: tuple[int, int, int, int, int, int]) -> Attachment:
    """``attachment`` inside an AES-256 encrypted ZIP, as ``<file_name>.zip`` (a name ending in
    ``.zip`` already keeps it, the file inside without it), ``application/zip``.

    ``date_time`` is the file's time in the archive (the run's, UTC). Each call draws a new
    salt, so the bytes differ from run to run; the content is the same.
    """
    inner = attachment.file_name.removesuffix(".zip")
    out = io.BytesIO()
    import pyzipper  # here: it loads PyCryptodome (~50 ms), which only protected files need

    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(password.get_secret_value().encode("utf-8"))
        zf.setencryption(pyzipper.WZ_AES, nbits=256)
        info = zf.zipinfo_cls(inner, date_time=date_time)
        info.compress_type = (pyzipper.ZIP_STORED if (attachment.maintype, attachment.subtype) in _COMPRESSED
                              else pyzipper.ZIP_DEFLATED)
        info.external_attr = 0o644 << 16  # a plain readable file when unpacked on Unix
        zf.writestr(info, attachment.data)
    return Attachment(inner + ".zip", out.getvalue(), "application", "zip", notes=attachment.notes)


class Protector:
    """Wraps a run's protected attachments in encrypted ZIPs.

    Args:
        passwords: ``{secret name: password}`` read for this run; ``None`` for a preview or a dry
            run, which read no secret: each protected file is then encrypted with a throwaway
            password (the same size and structure as the real one), and its notes say so.
        run_ts: the run's timestamp (the file's time in the archive).
    """

    def __init__(self, passwords: Mapping[str, SecretStr] | None, run_ts: dt.datetime) -> None:
        self._passwords = passwords
        self._preview = SecretStr(secrets.token_urlsafe(24)) if passwords is None else None
        stamp = max(run_ts, dt.datetime(1980, 1, 1, tzinfo=dt.UTC)) if run_ts.tzinfo else run_ts
        self._date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)

    def __repr__(self) -> str:
        names = "preview" if self._passwords is None else sorted(self._passwords)
        return f"Protector(secrets={names!r})"  # names only, never a value

    def __call__(self, attachment: Attachment, protection: Protection, where: str) -> Attachment:
        """``attachment`` encrypted with ``protection``'s password (``where``: ``attachments[0]``).

        Raises:
            MessageBuildError: the run holds no password for that secret (names it, never a value).
        """
        name = protection.password.secret
        if self._passwords is None:
            assert self._preview is not None
            zipped = zip_encrypted(attachment, self._preview, self._date_time)
            note = f"{where}: encrypted with a preview-only password (a run uses secret {name!r})"
            return Attachment(zipped.file_name, zipped.data, zipped.maintype, zipped.subtype,
                              notes="; ".join(n for n in (zipped.notes, note) if n))
        password = self._passwords.get(name)
        if password is None:
            raise MessageBuildError(f"{where}.protect.password: secret {name!r} was not read for this run; "
                                    "pass the fabric's passwords to the composer")
        return zip_encrypted(attachment, password, self._date_time)
