"""mailgem: an Email gem and the SMTP connection it uses, for Spark/ETL fabrics.

One import name for the whole distribution, four packages, each using only those below it:
:mod:`mailgem.runner` (job files, sources, pre-Spark checks, the Spark session, the ``mailgem``
command) → :mod:`mailgem.gems` (the Email gem: what it does with a frame) → :mod:`mailgem.fabric`
(teams, secret stores, the connections a team may use) → :mod:`mailgem.connections` (how to
reach an SMTP server). In the repository they are the top-level folders ``runner/``, ``gems/``,
``fabric/`` and ``connections/``; this root package lives in ``src/mailgem/`` (linking to them),
so a checkout's root never shadows an installed mailgem, and they never clash with the unrelated
PyPI packages named ``gems``, ``connections`` or ``fabric``.

The names most users need are here (imported on first use, so ``mailgem --version`` stays
cheap)::

    from mailgem import EmailGem, load_fabric, SmtpConnection

PySpark is optional (``mailgem[spark]``) and imported only when a Spark frame or the runner needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# The front door: name -> the module that defines it.
_PUBLIC = {
    "EmailGem": "mailgem.gems.email.gem",
    "EmailProperties": "mailgem.gems.email.properties",
    "DeliveryError": "mailgem.gems.email.errors",
    "DeliveryStatus": "mailgem.gems.email.run.status",
    "Fabric": "mailgem.fabric.model",
    "load_fabric": "mailgem.fabric.loader",
    "SmtpConnection": "mailgem.connections.model",
    "SmtpTransport": "mailgem.connections.transport",
    "MailgemError": "mailgem.connections.errors",
}

__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:
    from mailgem.connections.errors import MailgemError
    from mailgem.connections.model import SmtpConnection
    from mailgem.connections.transport import SmtpTransport
    from mailgem.fabric.loader import load_fabric
    from mailgem.fabric.model import Fabric
    from mailgem.gems.email.errors import DeliveryError
    from mailgem.gems.email.gem import EmailGem
    from mailgem.gems.email.properties import EmailProperties
    from mailgem.gems.email.run.status import DeliveryStatus


def __getattr__(name: str) -> Any:
    # PEP 562: the front door's names load on first use; `import mailgem` imports nothing else.
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mailgem' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
