"""The ``mailgem`` command. ``mailgem --help`` and ``mailgem COMMAND --help`` describe each one.

One module per command (``run``, ``validate``, ``preview``, ``connection``, ``secrets``,
``schema``), imported only when it runs; :mod:`.parser` holds the arguments and exit codes,
:mod:`.signals` how SIGTERM and SIGINT stop a run, :mod:`.app` the entry point. Every command
that takes a job checks everything it can before Spark starts (see :mod:`mailgem.runner.preflight`),
and ``run`` also opens one session through the job's connection then. A job runs against its
fabric; the embedded local SMTP server is used only when the job names the ``local`` connection
or ``--local`` is given.
"""

from __future__ import annotations

from .app import main
from .parser import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_UNREACHABLE
from .parser import parser as _parser  # noqa: F401 - the name tests and older callers know

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_CONFIG", "EXIT_UNREACHABLE", "EXIT_SIGINT", "EXIT_SIGTERM"]
