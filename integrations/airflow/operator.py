"""``MailgemOperator``: an Airflow task that runs a mailgem job file, as ``mailgem run`` does, in
the task's own process.

How the run's exit becomes the task's state:

==========================================  =======================================================
mailgem run                                 the task
==========================================  =======================================================
0, messages sent (or already sent)          success; the run's summary is the XCom ``return_value``
0, the frame was empty (``on_empty: skip``) skipped (``AirflowSkipException``)
0, the job's ``skip_if`` held               skipped (``AirflowSkipException``)
1, some messages failed or were refused     failed (retried when the task has retries: with a
                                            ledger, a retry sends only what was not accepted); the
                                            failed messages' error lines are in the task's log
2, configuration error                      failed at once, never retried (``AirflowFailException``):
                                            a retry would find the same mistake
3, the connection failed, nothing sent      failed, retried by Airflow's ``retries``
130/143, stopped by a signal                failed
==========================================  =======================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mailgem.runner.cli import EXIT_CONFIG, EXIT_OK, EXIT_UNREACHABLE
from mailgem.runner.cli.call import RunOutcome, run_job_file

try:  # Airflow 3: the Task SDK (a worker may have it without Airflow's core)
    from airflow.sdk import BaseOperator
    from airflow.sdk.configuration import conf
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
except ImportError:  # Airflow 2.10
    from airflow.configuration import conf
    from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
    from airflow.models import BaseOperator

__all__ = ["MailgemOperator"]

# At most this many error lines in the task's log (the report file has every row).
_LOGGED_ERRORS = 50


class MailgemOperator(BaseOperator):
    """Run the mailgem job file ``job`` against ``fabric``, in this task's process.

    Args:
        job: the job YAML file (templated), e.g. ``"jobs/daily.yaml"``; relative to the current
            directory of the worker: give an absolute path, or one built from the DAG file's folder.
        fabric: the fabric YAML file (templated); ``None``: ``$MAILGEM_FABRIC`` (or no fabric, for
            a job on the embedded ``local`` connection).
        params: values for the job's ``params`` (each replaces the job file's value of that name).
            They are Airflow's task ``params``, merged with the DAG's and a triggered run's
            ``conf`` as Airflow merges them, and each string is rendered as a template at run
            time, so ``{"report_date": "{{ ds }}"}`` gives the job the run's logical date (and
            with it, the ledger's ``run_key`` when the job's ``run_key`` uses it).
        report_out: write the delivery report here (templated): ``.csv``, ``.json``/``.jsonl``
            or ``.parquet``.
        user: who runs the job, checked against the fabric's teams. Default: the task's
            ``owner``, except Airflow's default owner (``[operators] default_owner``, "airflow"),
            which names no person: then mailgem's own default (``$MAILGEM_USER``, else the login).
        master: a local Spark session's master (default ``local[2]``, or
            ``$MAILGEM_SPARK_MASTER``).
        remote: a Spark Connect URL (``sc://host:15002``) instead of a local session (extra
            ``connect``). Not templated: it may carry a token, and rendered fields are shown in
            Airflow's UI.
        local: send through the embedded local SMTP server (a try-out; never for a schedule).
        outbox: with ``local``: where that server saves what it receives.

    Returns (from :meth:`execute`, pushed as the XCom ``return_value``): the run's summary, the
    fields of ``mailgem run --json``: ``job``, ``exit_code``, ``messages``, ``counts`` (by status),
    ``connection``, ``dry_run``, ``duration_s``, ``report`` (the report file or ``None``).

    Raises (from :meth:`execute`): see the module's table.
    """

    template_fields: Sequence[str] = ("job", "fabric", "report_out")
    ui_color = "#e8f1fb"

    def __init__(self, *, job: str, fabric: str | None = None, params: Mapping[str, Any] | None = None,
                 report_out: str | None = None, user: str | None = None, master: str | None = None,
                 remote: str | None = None, local: bool = False, outbox: str | None = None, **kwargs: Any) -> None:
        # ``params`` is Airflow's own argument: passed on, Airflow merges it with the DAG's params
        # (and a triggered run's conf) and hands the result to execute() in the context.
        super().__init__(params=dict(params) if params is not None else None, **kwargs)
        if master is not None and remote is not None:
            raise ValueError("MailgemOperator: give master (a local Spark session) or remote (Spark Connect), not both")
        self.job, self.fabric, self.report_out = job, fabric, report_out
        self.user, self.master, self.remote, self.local, self.outbox = user, master, remote, local, outbox

    def mailgem_user(self) -> str | None:
        """The user the run is checked as (see the class's ``user``)."""
        if self.user:
            return self.user
        owner = str(self.owner or "")
        default_owner = conf.get("operators", "default_owner", fallback="airflow")
        return owner if owner and owner != default_owner else None

    def job_params(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The run's ``params`` (Airflow's, as merged for this run) with every template rendered."""
        params = {str(k): v for k, v in dict(context.get("params") or {}).items()}
        rendered: dict[str, Any] = self.render_template(params, context)
        return rendered

    def execute(self, context: Any) -> dict[str, Any]:
        outcome = run_job_file(self.job, fabric=self.fabric, params=self.job_params(context), user=self.mailgem_user(),
                               master=self.master, remote=self.remote, report_out=self.report_out, local=self.local,
                               outbox=self.outbox)
        return self.settle(outcome)

    def settle(self, outcome: RunOutcome) -> dict[str, Any]:
        """The task's end for ``outcome``: its summary, or the exception of the module's table."""
        code, summary = outcome.exit_code, outcome.summary
        if outcome.skipped_by == "skip_if":
            raise AirflowSkipException(f"mailgem: the job's skip_if held for this run: nothing sent "
                                       f"(job {summary.get('job')!r})")
        if outcome.skipped:
            raise AirflowSkipException(f"mailgem: the job's frame is empty and its on_empty is skip: nothing to send "
                                       f"(job {summary.get('job')!r})")
        if code == EXIT_OK:
            self.log.info("mailgem: %s message(s): %s", summary.get("messages"), summary.get("counts"))
            return summary
        self._log_errors(outcome)
        what = f"mailgem run of {summary.get('job')!r} ended with exit code {code}"
        if code == EXIT_CONFIG:
            raise AirflowFailException(f"{what}: a configuration error, not retried (a retry would find it again); "
                                       f"{_first(outcome)}")
        if code == EXIT_UNREACHABLE:
            raise AirflowException(f"{what}: the connection failed before anything was sent; Airflow's retries "
                                   f"apply; {_first(outcome)}")
        counts = summary.get("counts") or {}
        raise AirflowException(f"{what}: {counts or 'see the errors above'}; with a ledger, a retry sends only the "
                               "messages not accepted")

    def _log_errors(self, outcome: RunOutcome) -> None:
        for line in outcome.errors[:_LOGGED_ERRORS]:
            self.log.error("mailgem: %s", line)
        if len(outcome.errors) > _LOGGED_ERRORS:
            self.log.error("mailgem: ... and %d more (the delivery report has every row)",
                           len(outcome.errors) - _LOGGED_ERRORS)


def _first(outcome: RunOutcome) -> str:
    if not outcome.errors:
        return "see the task's log"
    more = f" (and {len(outcome.errors) - 1} more in the log)" if len(outcome.errors) > 1 else ""
    return outcome.errors[0] + more

