"""Attachment file names that every mail client and file system accepts, whatever the data held.

A name rendered from data (``{{ group.region }}.xlsx``) is cleaned the way Windows, the strictest
common file system, needs it, and without the characters that make a name read differently from
what it is:

- Unicode bidi controls (U+200E, U+200F, U+061C, U+202A–U+202E, U+2066–U+2069) and zero-width
  characters (U+200B–U+200D, U+2060, U+FEFF) are removed, as from the subject
  (``invoice\\u202efdp.exe`` would show as ``invoiceexe.pdf``);
- characters Windows refuses in names (``< > : " / \\ | ? *``), control characters (C0, DEL, C1)
  and line or paragraph separators become ``_`` (a run of them one ``_``);
- a Windows reserved device name as the part before the first dot (CON, PRN, AUX, NUL,
  COM1–COM9, LPT1–LPT9, any case: ``nul.csv`` too) gets a leading ``_``;
- leading and trailing spaces and trailing dots are dropped (Windows drops them silently);
- the stem is cut to :data:`MAX_FILE_NAME_CHARS` characters, the extension kept.

An empty stem (a null value rendered as nothing: ``.csv``) becomes ``data``; :func:`file_name_or_default`
says when that happened, so the caller can note it.

:func:`ascii_file_name` is the name's ASCII form for the legacy ``name=`` parameter of
Content-Type, which clients that do not read RFC 2231 (``filename*=``) show instead.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["safe_file_name", "file_name_or_default", "ascii_file_name", "MAX_FILE_NAME_CHARS", "DEFAULT_STEM"]

# Long enough for any report's name, short enough for every mail client and file system (255).
MAX_FILE_NAME_CHARS = 150
# The stem of a name that rendered empty.
DEFAULT_STEM = "data"
# Characters that change how a name reads without being seen: bidi controls (Unicode UAX #9) and
# zero-width characters. Removed.
_INVISIBLE = re.compile("[\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2060\ufeff]")
# What Windows refuses in a file name (Microsoft, "Naming Files, Paths, and Namespaces"), C0 and C1
# controls (no header may hold them, RFC 5322 §3.2), and line and paragraph separators. Become "_".
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f\u2028\u2029]+')
# Device names Windows reserves, with or without an extension (same source).
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                       *(f"LPT{i}" for i in range(1, 10))})
_MAX_EXTENSION_CHARS = 10


def file_name_or_default(name: str) -> tuple[str, bool]:
    """``name`` made safe (see the module docstring), and whether its stem was empty so that it
    became :data:`DEFAULT_STEM` (``".xlsx"`` → ``("data.xlsx", True)``)."""
    name = _UNSAFE.sub("_", _INVISIBLE.sub("", name)).strip(" ")
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > _MAX_EXTENSION_CHARS or not extension.strip(" ."):
        stem, extension = name, ""
    extension = extension.rstrip(" .")
    stem = stem.strip(" .")
    fell_back = not stem
    stem = (stem or DEFAULT_STEM)[:MAX_FILE_NAME_CHARS].rstrip(" .") or DEFAULT_STEM
    if stem.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        stem = "_" + stem
    return stem + (f".{extension}" if extension else ""), fell_back


def safe_file_name(name: str) -> str:
    """``name`` made safe (see the module docstring); ``data`` (extension kept) when its stem is empty."""
    return file_name_or_default(name)[0]


def ascii_file_name(name: str) -> str:
    """``name`` in ASCII for Content-Type's legacy ``name=`` parameter: accents dropped (NFKD:
    ``Umsätze-März.csv`` → ``Umsatze-Marz.csv``), any other non-ASCII character as ``_``. A name
    from :func:`safe_file_name` stays safe."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch if ch.isascii() else "_" for ch in decomposed if not unicodedata.combining(ch))
