"""The local Neon's error answers: :class:`ApiError`, and the ``code`` of Neon's body for each case.

Neon answers an error with ``{code, message, request_id}`` (the spec's GeneralError). The spec's
``ErrorCode`` is a bare string with no list of values, and Neon cloud leaves it empty for many
errors; the local Neon always names the case (never an empty code), so that a client can tell the
cases apart without parsing the message.
"""

from __future__ import annotations

# The code of an answer that has no more precise one: the name of its HTTP status.
STATUS_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "REQUEST_TOO_LARGE",
    422: "UNPROCESSABLE_ENTITY",
    423: "LOCKED",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}
# The more precise codes.
FEATURE_NOT_SUPPORTED = "FEATURE_NOT_SUPPORTED"  # a 400: what the local Neon cannot do
BRANCH_EXISTS = "BRANCH_EXISTS"  # 409s: the name is taken
DATABASE_EXISTS = "DATABASE_EXISTS"
ROLE_EXISTS = "ROLE_EXISTS"


def code_for(status: int) -> str:
    """The code of an answer with ``status`` (one not in the table: by its class)."""
    return STATUS_CODES.get(status) or ("INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")


class ApiError(Exception):
    """An error answer: Neon's ``{code, message}`` body with an HTTP status.

    ``code`` defaults to the status's own (``BAD_REQUEST`` for a 400, and so on).
    """

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or code_for(status)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")
