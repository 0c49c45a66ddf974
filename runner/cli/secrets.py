"""``mailgem secrets``: set, delete and list a fabric's secrets (values never on the command line
or in the output), and make keys for an encrypted store."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from mailgem.connections.errors import MailgemError

from .connection import fabric_of
from .output import UsageError
from .parser import EXIT_OK

__all__ = ["cmd_secrets"]


def _read_secret_value(name: str) -> SecretStr:
    if sys.stdin.isatty():
        value = getpass.getpass(f"Value for secret {name!r}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise MailgemError(f"no value given for secret {name!r}: pipe it on stdin or type it at the prompt")
    return SecretStr(value)


def _keygen(key_file: Path | None) -> int:
    from mailgem.fabric.secrets import generate_key

    key = generate_key()
    if key_file is None:
        print(key)
        return EXIT_OK
    if not key_file.parent.is_dir():
        raise UsageError(f"--key-file {key_file}: folder {key_file.parent} does not exist; create it first")
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"--key-file {key_file} already exists; it may hold the key of an existing store, so it is "
                         "never overwritten: choose a new file name, or delete the old one knowingly") from None
    except OSError as exc:
        raise UsageError(f"--key-file {key_file}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    print(f"wrote a new 256-bit key to {key_file} (mode 0600); point the store's key_file at it")
    return EXIT_OK


def cmd_secrets(args: argparse.Namespace) -> int:
    """Run ``secrets set|delete|list|keygen``; returns 0 (errors are raised as MailgemError)."""
    if args.action == "keygen":
        return _keygen(args.key_file)
    store = fabric_of(args).store()
    if args.action == "set":
        store.set(args.name, _read_secret_value(args.name))
        print(f"stored secret {args.name!r} in {store!r}")
    elif args.action == "delete":
        store.delete(args.name)
        print(f"deleted secret {args.name!r} from {store!r}")
    else:
        for name in store.names():
            print(name)
    return EXIT_OK
