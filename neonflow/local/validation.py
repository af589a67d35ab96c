"""Checks of the values a request brings, as Neon makes them; each refusal is a 400 ApiError."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from neonflow.local.errors import FEATURE_NOT_SUPPORTED, ApiError

# The spec's pattern of project, branch and endpoint ids.
ID_PATTERN = re.compile(r"^[a-z0-9-]{1,60}$")
MAX_EXPIRY = timedelta(days=30)
# The spec bounds an annotation to 50 string properties (AnnotationValueData.maxProperties) and
# states no string lengths; the lengths are the local Neon's own, roomy for what clients store
# (git refs, a commit message) and small enough that a branch's metadata stays small.
MAX_ANNOTATIONS = 50
MAX_ANNOTATION_KEY = 256
MAX_ANNOTATION_VALUE = 4096


def refuse_point_in_time(values: Mapping[str, Any], *names: str) -> None:
    """A 400 when any of ``names`` is given: one cluster keeps no history to go back to."""
    given = [n for n in names if values.get(n)]
    if given:
        raise ApiError(
            400,
            f"point-in-time ({', '.join(given)}) is not available on the local Neon",
            FEATURE_NOT_SUPPORTED,
        )


def parse_time(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp with a time zone, or a 400."""
    if not isinstance(value, str):
        raise ApiError(400, f"{field} must be an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{field} is not a valid RFC 3339 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, f"{field} must include a time zone")
    return parsed.astimezone(UTC)


def check_bool(spec: Mapping[str, Any], field: str) -> None:
    if field in spec and not isinstance(spec[field], bool):
        raise ApiError(400, f"{field} must be a boolean")


def check_branch_name(name: Any) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 256:
        raise ApiError(400, "branch name must be a string of 1 to 256 characters")


def check_annotation(value: Any) -> None:
    if not isinstance(value, dict) or len(value) > MAX_ANNOTATIONS:
        raise ApiError(
            400, f"annotation_value must be an object of at most {MAX_ANNOTATIONS} strings"
        )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ApiError(400, "annotation_value keys and values must be strings")
    for key, text in value.items():
        if not 1 <= len(key) <= MAX_ANNOTATION_KEY:
            raise ApiError(
                400, f"annotation_value keys must be 1 to {MAX_ANNOTATION_KEY} characters"
            )
        if len(text) > MAX_ANNOTATION_VALUE:
            raise ApiError(
                400,
                f"annotation_value[{key[:40]!r}] is longer than {MAX_ANNOTATION_VALUE} characters",
            )


def check_expiry(value: Any, protected: Any) -> datetime | None:
    """The branch's ``expires_at`` as Neon bounds it (future, 30 days at most, not protected)."""
    if value is None:
        return None
    moment = parse_time(value, "expires_at")
    current = datetime.now(UTC)
    if moment <= current:
        raise ApiError(400, "expires_at must be in the future")
    if moment - current > MAX_EXPIRY:
        raise ApiError(400, "expires_at must be at most 30 days in the future")
    if protected:
        raise ApiError(400, "a protected branch cannot have an expiration")
    return moment
