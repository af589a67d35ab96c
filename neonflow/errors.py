"""neonflow's exceptions, one tree.

::

    NeonflowError                 exit code
    ├── ConfigError                   2   broken neonflow.toml, bad key or value, not a Neon API
    │   └── EnvPyError                2   the project's env.py failed (not a revision)
    ├── UsageError                    2   bad input: an invalid branch name, a refused operation
    │   └── RefusedError              3   the default or a protected branch, a branch with children
    ├── NeonAPIError                  4   the Neon API answered with an error
    │   ├── AuthError                 5   401 / 403: the key is missing, wrong or lacks access
    │   ├── NotFoundError             6   404, or the branch was deleted or reset meanwhile
    │   ├── ConflictError             4   409 / 412 / 422
    │   ├── LockedError               4   423, after retries
    │   ├── RateLimitError            4   429, after retries
    │   ├── ServerError               4   5xx, after retries
    │   └── OperationFailedError      4   an operation ended failed / error / cancelled
    ├── NetworkError                  7   the API could not be reached, or not within [neon] timeout
    │   └── Unreachable               7   a connection failed before any revision ran (kind network)
    ├── MigrationError                8   an Alembic revision failed
    │   └── RevisionLoadError         8   a revision file could not be loaded
    ├── LocalNeonError                9   the local Neon could not start or answer
    ├── WrongTargetError             14   env.py reached another database than the one meant
    └── CheckFailed                       ``neonflow check`` found problems (details in the report)
        ├── CheckRefused              2   several heads, or the base is not in the history
        ├── MigrationFailed          10   a revision failed on the throw-away branch
        ├── DriftDetected            11   ``alembic check``: the models and migrations differ
        ├── NotReversible            12   a downgrade failed, or the upgrade after it
        └── LintFailed               13   squawk found a rule listed in ``[check] fail_on``

Exit codes live in :data:`EXIT_CODES` and the README; the CLI maps errors to text in one place.
"""

from __future__ import annotations


class NeonflowError(Exception):
    """Base of every error neonflow raises on purpose; its message is one line for the user."""

    exit_code = 1


class ConfigError(NeonflowError):
    """A broken neonflow.toml, a bad key or value, or an API host that is not a Neon API."""

    exit_code = 2


class EnvPyError(ConfigError):
    """The project's ``env.py`` failed before any revision ran (import, settings, app context)."""


class UsageError(NeonflowError):
    """Bad input: an invalid branch name, a missing argument, an unconfirmed destructive verb."""

    exit_code = 2


class RefusedError(UsageError):
    """Refused: the default or a protected branch, or a branch with children."""

    exit_code = 3


class NeonAPIError(NeonflowError):
    """An error answer of the Neon API, with Neon's ``message`` and ``request_id``."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        request_id: str = "",
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.method = method
        self.path = path

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status}")
            if self.request_id:
                parts[-1] += f", request {self.request_id}"
            parts[-1] += ")"
        return " ".join(parts)


class AuthError(NeonAPIError):
    """401 / 403: the API key is missing, wrong or lacks access."""

    exit_code = 5


class NotFoundError(NeonAPIError):
    """404, or the branch was deleted or reset meanwhile."""

    exit_code = 6


class ConflictError(NeonAPIError):
    """409 / 412 / 422: the request conflicts with the project's state."""


class LockedError(NeonAPIError):
    """423 after retries: the project is busy with another operation."""


class RateLimitError(NeonAPIError):
    """429 after retries."""


class ServerError(NeonAPIError):
    """A 5xx answer, after retries."""


class OperationFailedError(NeonAPIError):
    """A Neon operation ended in ``failed``, ``error`` or ``cancelled``."""


class NetworkError(NeonflowError):
    """The API could not be reached, or did not answer within ``[neon] timeout``."""

    exit_code = 7


class Unreachable(NetworkError):
    """A connection failed before any revision ran (env.py's, or neonflow's own to the
    target): nothing ran anywhere. Reported as the NetworkError it is (exit 7, kind
    ``network``): it is a class of its own so that ``branch start`` can tell it from a
    connection lost during a migration."""

    kind = "network"


class MigrationError(NeonflowError):
    """An Alembic revision failed; ``revision`` names it when known."""

    exit_code = 8

    def __init__(
        self,
        message: str,
        *,
        revision: str | None = None,
        database_error: dict[str, str | None] | None = None,
    ) -> None:
        super().__init__(message)
        self.revision = revision
        # PostgreSQL's error behind it: message, statement, sqlstate, detail, hint.
        self.database_error = database_error


class RevisionLoadError(MigrationError):
    """A revision file cannot be imported (SyntaxError, ImportError): nothing was run."""


class WrongTargetError(NeonflowError):
    """The interlock: env.py's connection does not reach the database neonflow means."""

    exit_code = 14


class LocalNeonError(NeonflowError):
    """The local Neon could not start or answer."""

    exit_code = 9


class CheckFailed(NeonflowError):
    """``neonflow check`` found problems; the report has the details."""

    exit_code = 10


class CheckRefused(CheckFailed):
    """The migrations cannot be checked: several heads, or a base outside the history."""

    exit_code = 2


class MigrationFailed(CheckFailed):
    """A revision failed on the throw-away branch."""

    exit_code = 10


class DriftDetected(CheckFailed):
    """``alembic check`` at head: the models and the migrations differ."""

    exit_code = 11


class NotReversible(CheckFailed):
    """A revision's downgrade failed, or the upgrade after the downgrade did."""

    exit_code = 12


class LintFailed(CheckFailed):
    """squawk found a rule listed in ``[check] fail_on``."""

    exit_code = 13


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected error (a bug: please report it)",
    2: "bad configuration or bad input",
    3: "refused: the default branch, a protected branch or a branch with children",
    4: "the Neon API answered with an error",
    5: "authentication: NEON_API_KEY missing, wrong or without access",
    6: "not found: the branch (or project) does not exist, or was deleted or reset meanwhile",
    7: "network: the API could not be reached, or did not answer within [neon] timeout",
    8: "a migration failed",
    9: "the local Neon could not start or answer",
    10: "neonflow check: a migration failed on the throw-away branch",
    11: "neonflow check: the models and the migrations differ (alembic check)",
    12: "neonflow check: a downgrade failed, or the upgrade after it",
    13: "neonflow check: squawk found a rule listed in [check] fail_on",
    14: "env.py connects to another database than the branch meant; nothing was run",
    130: "interrupted (Ctrl-C)",
    141: "stdout was closed: its reader (`head`, say) stopped reading",
}
