"""A round-trip YAML document as the loaders read a file: plain values, ``${ENV}`` interpolated,
then the fabric or the job it describes (the loaders' own rules, not copied)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mailgem.fabric.loader import interpolate, parse_fabric
from mailgem.fabric.model import Fabric
from mailgem.runner.job import JobSpec, parse_job

__all__ = ["fabric_from", "field_errors", "job_from", "plain"]


def plain(doc: Any) -> Any:
    """A round-trip document as plain dicts, lists and scalars (what the loaders validate)."""
    if isinstance(doc, Mapping):
        return {str(k): plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [plain(v) for v in doc]
    if isinstance(doc, str):
        return str(doc)  # ruamel's scalar string types
    if isinstance(doc, bool) or doc is None:
        return doc
    if isinstance(doc, int):
        return int(doc)
    if isinstance(doc, float):
        return float(doc)
    return doc


def field_errors(model: type[BaseModel], doc: Any, path: Path) -> None:
    """Validate ``doc`` against ``model`` (``Fabric``, ``JobSpec``) for its field errors.

    Raises:
        ValidationError: a field is wrong, with its location (for the form's inputs).
        FabricConfigError: an environment variable without default is not set.
    """
    model.model_validate(interpolate(plain(doc), str(path)))


def fabric_from(doc: Any, path: Path) -> Fabric:
    """The fabric ``doc`` (the file at ``path`` as edited) describes, as the loader reads it.

    Raises:
        FabricConfigError: what the loader says (the file, the field, the fix).
    """
    return parse_fabric(interpolate(plain(doc), str(path)), path)


def job_from(doc: Any, path: Path) -> JobSpec:
    """The job ``doc`` (the file at ``path`` as edited) describes: paths from the job's folder.

    Raises:
        FabricConfigError: what the loader says (the file, the field, the fix).
    """
    return parse_job(interpolate(plain(doc), str(path)), path)
