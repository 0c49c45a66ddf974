"""``mailgem connection test``: connect, negotiate TLS, authenticate and check the sender, sending
nothing; one fact a line."""

from __future__ import annotations

import argparse

from mailgem.connections.sync import run_sync
from mailgem.fabric.errors import FabricConfigError
from mailgem.fabric.loader import load_fabric
from mailgem.fabric.model import Fabric

from .parser import EXIT_OK, EXIT_UNREACHABLE, FABRIC_ENV

__all__ = ["cmd_connection_test", "fabric_of"]


def fabric_of(args: argparse.Namespace) -> Fabric:
    """The fabric ``--fabric`` (or ``$MAILGEM_FABRIC``) names.

    Raises:
        FabricConfigError: none given, or it cannot be loaded.
    """
    if args.fabric is None:
        raise FabricConfigError(f"no fabric: pass --fabric FABRIC.yaml or set {FABRIC_ENV}")
    return load_fabric(args.fabric)


def cmd_connection_test(args: argparse.Namespace) -> int:
    """Test the connection; returns 0 when it can send, else 3."""
    transport = fabric_of(args).transport(args.name, args.user)
    report = run_sync(transport.check())
    print("\n".join(report.lines()))
    return EXIT_OK if report.ok else EXIT_UNREACHABLE
