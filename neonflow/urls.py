"""Database URLs: masking passwords and telling whether two URLs reach the same database."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", re.DOTALL)
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def mask_password(url: str) -> str:
    """``postgresql://user:****@host/db``: safe to show (also ``password=`` in a DSN or query).

    The user part is found as libpq finds it (up to the ``/`` after the host), not as urlsplit
    does: a password holding ``#`` or ``?`` must not slip through.
    """
    masked = _KEYWORD_PASSWORD.sub(r"\1****", url)
    match = _SCHEME.match(masked)
    if match is None:
        return masked
    scheme, rest = match.groups()
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not at or not colon:
        return masked
    return f"{scheme}{user}:****@{host}{slash}{tail}"


def same_database(a: str | None, b: str | None) -> bool:
    """Same host, port and database name (scheme, credentials and options aside; no port is
    PostgreSQL's 5432)."""
    if not a or not b:
        return False
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.hostname, pa.port or 5432, unquote(pa.path)) == (
            pb.hostname,
            pb.port or 5432,
            unquote(pb.path),
        )
    except ValueError:  # a malformed URL (a bad port, a broken IPv6 host) reaches nothing of ours
        return False
