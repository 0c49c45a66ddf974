"""Daily sales emails from Airflow: mailgem's job file daily_sales.yaml, run for each logical date."""

from datetime import datetime, timedelta
from pathlib import Path

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.10
    from airflow import DAG

from mailgem.airflow import MailgemOperator

HERE = Path(__file__).parent

with DAG(
    dag_id="daily_sales_email",
    schedule="@daily",
    start_date=datetime(2026, 12, 1),
    catchup=False,
    # A connection failure (exit 3) is retried; a configuration error (exit 2) is not.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
) as dag:
    MailgemOperator(
        task_id="email_sales",
        job=str(HERE / "daily_sales.yaml"),
        fabric="{{ var.value.mailgem_fabric }}",  # the fabric file's path, kept in an Airflow Variable
        params={"report_date": "{{ ds }}"},  # the job's params.report_date, and so its run key
        report_out=str(HERE / "reports" / "sales-{{ ds }}.csv"),
        owner="alice",  # checked against the fabric's teams
    )
