"""An asset that emails a small pandas frame through mailgem.

    pip install 'mailgem[dagster]' dagster-webserver
    dagster dev -f examples/dagster/definitions.py        # embedded local server: mail in ./outbox
    DAGSTER_DEPLOYMENT=prod MAILGEM_FABRIC=fabric.yaml dagster dev -f examples/dagster/definitions.py
"""

import os

import pandas as pd
from dagster import Definitions, EnvVar, MaterializeResult, asset

from mailgem.dagster import MailgemResource, report_metadata


@asset
def late_flights_email(mailgem: MailgemResource) -> MaterializeResult:
    """Yesterday's late flights by carrier, emailed to operations."""
    late = pd.DataFrame({"carrier": ["UA", "AA", "DL"], "flights": [120, 95, 80],
                         "avg_delay_min": [41.5, 38.2, 35.0]})
    report = mailgem.send(late, to="ops@example.com", subject="{{ row_count }} carriers with late flights",
                          text_body="{{ table_text }}", html_body="<p>Late flights by carrier:</p>{{ table }}")
    return MaterializeResult(metadata=report_metadata(report))  # counts by status, duration_s, errors


# Development sends through the embedded local SMTP server (nothing leaves the machine);
# production through the fabric's connection, as the user Dagster runs as ($MAILGEM_USER).
RESOURCES = {
    "local": {"mailgem": MailgemResource(local=True)},
    "prod": {"mailgem": MailgemResource(fabric=EnvVar("MAILGEM_FABRIC"), connection="reports-smtp")},
}

defs = Definitions(assets=[late_flights_email], resources=RESOURCES[os.getenv("DAGSTER_DEPLOYMENT", "local")])
