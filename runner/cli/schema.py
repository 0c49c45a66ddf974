"""``mailgem schema``: the JSON Schema of a job file, a fabric file or the Email gem's properties."""

from __future__ import annotations

import argparse
import json

from .parser import EXIT_OK

__all__ = ["cmd_schema"]


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the schema ``args.what`` names; returns 0."""
    from pydantic import BaseModel

    from mailgem.fabric.model import Fabric
    from mailgem.gems.email.gem import EmailGem
    from mailgem.runner.job import JobSpec

    models: dict[str, type[BaseModel]] = {"job": JobSpec, "fabric": Fabric}
    model = models.get(args.what)
    schema = model.model_json_schema() if model is not None else EmailGem.schema()
    print(json.dumps(schema, indent=2))
    return EXIT_OK
