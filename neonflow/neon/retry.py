"""What the client retries, and how long it waits in between.

Neon's spec: 423 and 503 are always safe to retry, and 429 asks for backoff. A connect error means
the request never reached the server, so it is safe for every method too. A read timeout or a
dropped connection may come after the server applied the request: only GET, HEAD and DELETE (204
when already gone) are retried then.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

__all__ = [
    "IDEMPOTENT_METHODS",
    "MAX_RETRY_AFTER",
    "MAYBE_SENT_ERRORS",
    "NOT_SENT_ERRORS",
    "RETRY_STATUSES",
    "backoff_delay",
    "retry_after",
]

RETRY_STATUSES = frozenset({423, 429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "DELETE"})

# The request never left the machine.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The request may have reached the server, and may have been applied.
MAYBE_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
)

MAX_RETRY_AFTER = 60.0
"""A ``Retry-After`` longer than this (seconds) is not waited for: the error is raised instead."""


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (0-based)."""
    return rand() * min(cap, base * 2.0**attempt)


def retry_after(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or HTTP-date), or None when absent or invalid."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
