"""Database URLs: masking passwords and telling whether two URLs reach the same database."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_password(url: str) -> str:
    """``postgresql://user:****@host/db``: safe to show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}{port}"))


def same_database(a: str | None, b: str | None) -> bool:
    """Same host, port and database name (scheme, credentials and options aside)."""
    if not a or not b:
        return False
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.hostname, pa.port, pa.path) == (pb.hostname, pb.port, pb.path)
