"""The run side: which messages a frame makes, sending them (locally or on Spark executors),
the ledger that makes re-runs safe, progress, and the delivery report."""
