"""mailgem for Dagster (``pip install 'mailgem[dagster]'``): a resource that emails a frame.

:class:`MailgemResource` holds the fabric and the connection (or ``local=True``: the embedded
local SMTP server, for development); its ``send(frame, **email_properties)`` returns the
delivery report and raises ``dagster.Failure`` when a message was not delivered.
:func:`report_metadata` turns the report into the asset's materialization metadata::

    from dagster import Definitions, MaterializeResult, asset
    from mailgem.dagster import MailgemResource, report_metadata

    @asset
    def delays_email(mailgem: MailgemResource) -> MaterializeResult:
        report = mailgem.send(frame, to="ops@example.com", subject="{{ row_count }} late flights")
        return MaterializeResult(metadata=report_metadata(report))

    defs = Definitions(assets=[delays_email], resources={"mailgem": MailgemResource(local=True)})

This package sits above the runner (design.md): it uses the gem and the fabric, and nothing in
mailgem imports it.
"""

from __future__ import annotations

from .outcome import FAILING, failure_description, report_metadata
from .resource import MailgemResource, ResourceConfigError

__all__ = ["MailgemResource", "ResourceConfigError", "report_metadata", "failure_description", "FAILING"]
