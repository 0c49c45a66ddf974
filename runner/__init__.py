"""How a job file becomes a run: job files, sources, the checks made before Spark starts, the
Spark session, and the ``mailgem`` command (:mod:`mailgem.runner.cli`).

The runner sits above the gems (``runner → gems → fabric → connections``): it reads a job,
resolves its fabric and connection, reads the source with Spark and hands the frame to the Email
gem. Nothing below imports it.
"""

from __future__ import annotations

__all__: list[str] = []
