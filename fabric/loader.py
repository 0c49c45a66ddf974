"""Load a fabric from YAML: ``${ENV_VAR}`` interpolation, paths relative to the file, errors that
name the file and the YAML path (``fabric.yaml: connections[0].port: ...``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mailgem.connections.model import format_validation_error

from .errors import FabricConfigError
from .model import Fabric

# The embedded local server's connection (fabric.local); a fabric file may not define its own.
LOCAL_CONNECTION = "local"

__all__ = ["load_fabric", "parse_fabric", "load_yaml", "interpolate"]

# ${NAME} or ${NAME:-default}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _path_str(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def interpolate(node: Any, source: str, path: tuple[str | int, ...] = ()) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a YAML tree.

    Raises:
        FabricConfigError: a variable without default is not set (names the YAML path).
    """
    if isinstance(node, dict):
        return {k: interpolate(v, source, (*path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, source, (*path, i)) for i, v in enumerate(node)]
    if isinstance(node, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is None:
                    raise FabricConfigError(
                        f"{source}: {_path_str(path)}: environment variable {name} is not set "
                        f"(set it, or write ${{{name}:-default}})")
                return default
            return value
        return _VAR.sub(replace, node)
    return node


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with ``${ENV}`` interpolation.

    Raises:
        FabricConfigError: missing file, YAML syntax error (with line), or not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FabricConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FabricConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict):
        raise FabricConfigError(f"{path}: the top level must be a mapping, got {type(doc).__name__}")
    interpolated: dict[str, Any] = interpolate(doc, str(path))
    return interpolated


def _relative_to(base: Path, value: Any) -> Any:
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base / value)
    return value


def load_fabric(path: str | Path) -> Fabric:
    """Load and validate a fabric YAML file.

    Relative paths (secret store path/key_file, connection ca_bundle) are relative to the file.

    Raises:
        FabricConfigError: anything wrong, with ``file: yaml.path: what to fix``.
    """
    path = Path(path)
    return parse_fabric(load_yaml(path), path)


def parse_fabric(doc: dict[str, Any], path: Path) -> Fabric:
    """Validate a fabric document read from ``path`` (relative paths start at its folder).

    Only what has the expected shape is prepared here (paths made absolute, the reserved
    connection name refused); anything else is left as it is for the model to report, with
    its YAML path.

    Raises:
        FabricConfigError: anything wrong, with ``file: yaml.path: what to fix``.
    """
    base = path.resolve().parent
    secrets = doc.get("secrets")
    if isinstance(secrets, dict):
        # ``path`` is a file only for these stores (a vault store's path is a KV path).
        file_keys = ("path", "key_file") if secrets.get("type") in ("directory", "encrypted_file") else ("ca_bundle",)
        for key in file_keys:
            if key in secrets:
                secrets[key] = _relative_to(base, secrets[key])
        auth = secrets.get("auth")
        if isinstance(auth, dict):  # a vault store's login files
            for key in ("token_file", "role_id_file", "secret_id_file", "jwt_file"):
                if key in auth:
                    auth[key] = _relative_to(base, auth[key])
    connections = doc.get("connections")
    for i, conn in enumerate(connections if isinstance(connections, list) else []):
        if not isinstance(conn, dict):
            continue
        if conn.get("name") == LOCAL_CONNECTION:
            raise FabricConfigError(f"{path}: connections[{i}].name: {LOCAL_CONNECTION!r} is reserved for the embedded "
                                    "local SMTP server (`mailgem run --local`); choose another name")
        if "ca_bundle" in conn:
            conn["ca_bundle"] = _relative_to(base, conn["ca_bundle"])
    try:
        fabric = Fabric.model_validate(doc)
    except ValidationError as exc:
        raise FabricConfigError(format_validation_error(exc, str(path), doc)) from None
    fabric._source = path
    return fabric
