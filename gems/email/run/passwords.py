"""The passwords of protected attachments (``protect: {password: {secret: NAME}}``), read from the
fabric's secret store on the driver when a run starts, with the user's access checked as for the
connection, and handed to the composer (on Spark executors they travel inside the
:class:`~.distributed.PartitionSender`, as :class:`pydantic.SecretStr`, like the connection's own
password in its transport)."""

from __future__ import annotations

from pydantic import SecretStr

from mailgem.fabric.model import Fabric

from ..content.protect import protect_refs
from ..properties import EmailProperties

__all__ = ["protect_passwords"]


def protect_passwords(props: EmailProperties, fabric: Fabric, user: str | None) -> dict[str, SecretStr]:
    """``{secret name: password}`` of every ``protect`` in ``props`` (empty when none).

    Raises:
        AccessDeniedError: ``user`` may not use the fabric.
        SecretNotFoundError, SecretStoreError: a password cannot be read (the message names the
            secret and the store, never a value).
    """
    names = dict.fromkeys(name for _, name in protect_refs(props))
    return {name: fabric.secret(name, user) for name in names}
