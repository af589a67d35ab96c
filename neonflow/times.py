"""Timestamps as Neon writes them: RFC 3339, UTC, second precision (``2026-05-01T12:00:00Z``)."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(value: datetime) -> str:
    """``value`` (naive means UTC) in Neon's format."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_or_none(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def now() -> str:
    return rfc3339(datetime.now(UTC))
