"""Delivery status notifications (RFC 3461): what to ask the server for, as ESMTP parameters.

With a connection's ``dsn`` set and the server advertising ``DSN`` in its EHLO reply, ``MAIL
FROM`` carries ``RET`` (return the headers or the full message in a bounce) and ``ENVID`` (an
envelope identifier the bounce quotes back), and each ``RCPT TO`` carries ``NOTIFY`` (on which
events to report) and ``ORCPT`` (the recipient as given, so a bounce names it). ``ENVID`` is
derived from the job, run key and message key (:func:`envelope_id`), and the delivery report
has it in ``envelope_id``, so a bounce can be matched to its report row. A server without
``DSN`` gets none of them (the parameters would be refused); the transport warns once.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DsnOptions", "envelope_id", "xtext"]

# RFC 3461 §4.4: ENVID is at most 100 characters.
ENVID_MAX_CHARS = 100

Notify = Literal["success", "failure", "delay", "never"]


def xtext(value: str) -> str:
    """``value`` as RFC 3461 §4 xtext: ``+`` and ``=``, and every character outside ``!``..``~``,
    as ``+XX`` (the UTF-8 bytes, upper-case hex)."""
    out = []
    for byte in value.encode("utf-8"):
        out.append(chr(byte) if 33 <= byte <= 126 and byte not in (0x2B, 0x3D) else f"+{byte:02X}")
    return "".join(out)


def envelope_id(job: str, run_key: str, message_key: str) -> str:
    """The ``ENVID`` of one message: ``mg-`` and 32 hex digits of SHA-256 over the job, run key
    and message key (stable across re-runs of the same message; plain xtext; 35 characters)."""
    digest = hashlib.sha256("\0".join((job, run_key, message_key)).encode("utf-8")).hexdigest()
    return "mg-" + digest[:32]


class DsnOptions(BaseModel):
    """``dsn: {notify: [failure, delay] | never, ret: headers | full}`` on a connection.

    ``notify``: ``never``, or any of ``success``, ``failure``, ``delay`` (RFC 3461 §4.1);
    ``ret``: what a bounce carries, the headers or the full message (RFC 3461 §4.3).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    notify: tuple[Notify, ...] = Field(default=("failure", "delay"), description=(
        "When the destination reports back: never, or any of success, failure, delay (RFC 3461 §4.1)."))
    ret: Literal["headers", "full"] = Field(default="headers", description="What a bounce returns: the headers or the full message.")

    @field_validator("notify", mode="before")
    @classmethod
    def _never_alone(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            if not all(isinstance(v, str) for v in value):
                return value  # pydantic names the item that is not text
            items = [v.lower() for v in value]
            if "never" in items and len(items) > 1:
                raise ValueError("dsn.notify: never cannot be combined with success, failure or delay (RFC 3461 §4.1)")
            if not items:
                raise ValueError("dsn.notify: give never, or one or more of success, failure, delay")
            return tuple(dict.fromkeys(items))
        return value

    def mail_parameters(self, envid: str | None) -> list[str]:
        """``MAIL FROM`` parameters: ``RET`` and, when given, ``ENVID``."""
        out = [f"RET={'HDRS' if self.ret == 'headers' else 'FULL'}"]
        if envid:
            out.append(f"ENVID={xtext(envid)[:ENVID_MAX_CHARS]}")
        return out

    def rcpt_parameters(self, address: str) -> list[str]:
        """``RCPT TO`` parameters for ``address``: ``NOTIFY``, and ``ORCPT`` for an ASCII address
        (a UTF-8 one would need RFC 6533's utf-8-addr-xtext; it is left out)."""
        out = ["NOTIFY=" + ",".join(n.upper() for n in self.notify)]
        if address.isascii():
            out.append(f"ORCPT=rfc822;{xtext(address)}")
        return out
