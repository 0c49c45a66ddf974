"""mailgem in Apache Airflow (extra ``airflow``; Airflow 2.10+ and 3.x): ``MailgemOperator`` runs a
job file in the task's process, as ``mailgem run`` does, and its exit code becomes the task's
state (:mod:`.operator`). A fabric's ``secrets: {type: airflow}`` store reads Airflow's Variables
or Connections (:mod:`mailgem.fabric.secrets.airflow`).

Above the runner: it calls :func:`mailgem.runner.cli.call.run_job_file`; nothing imports it.
"""

from __future__ import annotations

try:
    import airflow  # noqa: F401
except ImportError:
    raise ImportError("mailgem.airflow needs Apache Airflow: pip install 'mailgem[airflow]'") from None

from .operator import MailgemOperator

__all__ = ["MailgemOperator"]
