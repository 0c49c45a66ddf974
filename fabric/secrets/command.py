"""Secrets printed by a command: ``vault``, ``aws``, ``gcloud``, ``op``, ``pass`` or any script.

The command runs without a shell (its argv as configured), with the secret's name substituted
for ``{name}`` in its arguments and/or put in an environment variable; its standard output is
the value (one trailing newline removed, nothing else). Standard output is never logged and
never put in an error message: errors name the store, the secret and what to check.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Sequence

from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .remote import RemoteSecretStore

__all__ = ["CommandSecretStore", "NAME_PLACEHOLDER"]

log = logging.getLogger("mailgem.fabric")

NAME_PLACEHOLDER = "{name}"
_STDERR_SHOWN = 200  # characters of the first stderr line an error quotes


class CommandSecretStore(RemoteSecretStore):
    """Secret ``name`` is what ``argv`` prints on stdout, ``{name}`` replaced by the name.

    Args:
        argv: the command and its arguments; each ``{name}`` in an item becomes the secret's name.
        name_env: an environment variable the command gets the secret's name in (instead of or
            as well as ``{name}``).
        list_argv: a command printing the store's secret names, one per line (for
            ``mailgem secrets list``); without it the store cannot list.
        timeout_s: seconds a command may run before it is killed (with its children).

    Each value is fetched once per store object: a second ``get`` of the same name returns the
    value read the first time (the run reads each secret once, when it starts).

    Raises (from get/names):
        SecretNotFoundError: the command succeeded but printed nothing (no such secret).
        SecretStoreError: the command is not found or not executable, exits non-zero (its first
            stderr line is quoted), times out, or prints something that is not UTF-8.
    """

    kind = "command"

    def __init__(self, argv: Sequence[str], *, name_env: str | None = None,
                 list_argv: Sequence[str] | None = None, timeout_s: float = 10.0) -> None:
        if not argv:
            raise SecretStoreError("the command secret store needs an argv: the command and its arguments")
        self.argv = tuple(argv)
        self.name_env = name_env
        self.list_argv = tuple(list_argv) if list_argv else None
        self.timeout_s = timeout_s
        super().__init__()

    def __repr__(self) -> str:
        return (f"CommandSecretStore(argv={list(self.argv)!r}, name_env={self.name_env!r}, "
                f"list_argv={list(self.list_argv) if self.list_argv else None!r}, timeout_s={self.timeout_s!r})")

    def _read(self, name: str) -> SecretStr:
        self.check_name(name)
        argv = [item.replace(NAME_PLACEHOLDER, name) for item in self.argv]
        env = {**os.environ, self.name_env: name} if self.name_env else None
        where = f"command secret store: secret {name!r} (`{shlex.join(argv)}`)"
        out = self._run(argv, env, where)
        # Only the line end the command adds: spaces or a second newline may belong to the value.
        text = out[:-2] if out.endswith("\r\n") else out[:-1] if out.endswith("\n") else out
        if not text.strip():
            raise SecretNotFoundError(
                f"{where}: the command succeeded but printed nothing: check that the secret exists under "
                "that name and that the command prints the value itself (e.g. vault's -field=, aws' --query "
                "SecretString --output text)")
        log.debug("command secret store: read secret %r", name)
        return SecretStr(text)

    def names(self) -> list[str]:
        if self.list_argv is None:
            raise SecretStoreError("the command secret store cannot list its secrets: give it list_argv, a "
                                   "command printing one name per line")
        where = f"command secret store: listing (`{shlex.join(self.list_argv)}`)"
        out = self._run(list(self.list_argv), None, where)
        return sorted({line.strip() for line in out.splitlines() if line.strip()})

    def _run(self, argv: list[str], env: dict[str, str] | None, where: str) -> str:
        """The command's stdout, decoded; every failure as a :class:`SecretStoreError` naming ``where``."""
        try:
            # A session of its own, so a timeout kills the command's children too (a wrapper
            # script's `sleep` would otherwise keep running, and keep the pipe open).
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, start_new_session=True)
        except FileNotFoundError:
            raise SecretStoreError(f"{where}: command {argv[0]!r} not found: install it or give its full path "
                                   "in the store's argv") from None
        except PermissionError:
            raise SecretStoreError(f"{where}: command {argv[0]!r} is not executable: check its permissions") from None
        except (OSError, ValueError) as exc:  # not a program, a NUL in an argument: the system's words
            raise SecretStoreError(f"{where}: cannot run command {argv[0]!r}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise SecretStoreError(f"{where}: no answer within {self.timeout_s:g} s (timeout_s): check that the "
                                   "command does not wait for a login or a prompt, and that its server is "
                                   "reachable") from None
        if proc.returncode != 0:
            raise SecretStoreError(f"{where}: exit code {proc.returncode}: {_first_line(err, out)}: check the "
                                   "secret's name, the command's login (token, profile) and its permission")
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretStoreError(f"{where}: the command printed something that is not UTF-8 text") from None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc``'s process group and reap it (the pipes are dropped unread)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()


def _first_line(err: bytes, out: bytes) -> str:
    """The first non-blank line of ``err``, shortened, for an error message. A command that
    echoes what it printed on stdout into stderr must not put the value in the message, so any
    stdout text found in it is masked."""
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return "nothing on stderr"
    line = lines[0][:_STDERR_SHOWN]
    value = out.decode("utf-8", "replace").strip()
    return line.replace(value, "***") if value else line
