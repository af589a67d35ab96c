"""The local Neon's error answers: :class:`ApiError`, Neon's ``{code, message}`` body."""

from __future__ import annotations

FEATURE_NOT_SUPPORTED = "FEATURE_NOT_SUPPORTED"  # a 400: what the local Neon cannot do
BRANCH_EXISTS = "BRANCH_EXISTS"  # 409s: the name is taken
DATABASE_EXISTS = "DATABASE_EXISTS"
ROLE_EXISTS = "ROLE_EXISTS"


class ApiError(Exception):
    """An error answer: Neon's ``{code, message}`` body with an HTTP status."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", "RESOURCE_NOT_FOUND")
