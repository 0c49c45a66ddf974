"""mailgem: an Email gem and the SMTP connection it uses, for Spark/ETL fabrics.

One import name for the whole distribution: :mod:`mailgem.gems` (the Email gem, the job runner
and the ``mailgem`` command), :mod:`mailgem.connections` (SMTP connections, sessions, delivery)
and :mod:`mailgem.fabric` (teams, secret stores, connections). In the repository they are the
top-level folders ``gems/``, ``connections/`` and ``fabric/``, mapped under ``mailgem`` by the
build configuration (``pyproject.toml``: ``package-dir``), so they never clash with the
unrelated PyPI packages named ``gems``, ``connections`` or ``fabric`` (the SSH tool).

PySpark is optional (``mailgem[spark]``) and imported only when a Spark frame or the job runner
needs it.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
