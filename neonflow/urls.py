"""Database URLs: masking passwords and telling whether two URLs reach the same database."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def mask_password(url: str) -> str:
    """``postgresql://user:****@host/db``: safe to show (also ``password=`` in a DSN or query)."""
    masked = _KEYWORD_PASSWORD.sub(r"\1****", url)
    try:
        parts = urlsplit(masked)
        if parts.password is None:
            return masked
        user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(an unreadable URL)"
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def same_database(a: str | None, b: str | None) -> bool:
    """Same host, port and database name (scheme, credentials and options aside)."""
    if not a or not b:
        return False
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.hostname, pa.port, pa.path) == (pb.hostname, pb.port, pb.path)
    except ValueError:  # a malformed URL (a bad port, a broken IPv6 host) reaches nothing of ours
        return False
