"""What failed in the Alembic process, classified for neonflow: the interlock, a revision
(loading or running, with PostgreSQL's error), Alembic itself, env.py, or the network."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any


class Failure(Exception):
    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind, self.message, self.extra = kind, message, extra


class NetworkFailure(Exception):
    pass


def classified(
    exc: BaseException, dirs: list[Path], way: str, applied: list[str] | None = None
) -> Failure:
    """What failed: the interlock, a revision (loading or running), Alembic, or env.py."""
    from neonflow.migrations import hook

    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, hook.WrongTarget):
        return Failure("target", str(exc))
    if isinstance(exc, NetworkFailure):
        return Failure("env_network", str(exc))
    frames = traceback.extract_tb(exc.__traceback__)
    revision_frame = _revision_frame(exc, frames, dirs)
    if revision_frame is not None:
        path, line, function = revision_frame
        from neonflow.migrations.project import revision_id

        rev = revision_id(Path(path))
        name = Path(path).name
        if function == "<module>" or way == "load":
            return Failure(
                "load",
                f"revision {rev or '?'} ({name}) could not be loaded: {reason(exc)}, line {line}",
                revision=rev,
            )
        verb = "upgrade" if way == "up" else "downgrade"
        return Failure(
            "migration",
            f"revision {rev} ({name}) {verb} failed: {reason(exc)}",
            revision=rev,
            database_error=_database_error(exc),
        )
    from alembic.util import CommandError

    if isinstance(exc, CommandError):
        return Failure("command", f"alembic: {reason(exc)}")
    if applied:
        # Something failed after revisions ran but outside any of them (a commit, a lost
        # connection): name the first revision that did not complete.
        return Failure("migration", f"migration failed: {reason(exc)}")
    where = _env_py_line(frames)
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({Path(exc.filename).name}, line {exc.lineno})"
    kind = "env_network" if _is_network(exc) else "env"
    return Failure(kind, f"env.py failed: {reason(exc)}{where}")


def _revision_frame(
    exc: BaseException, frames: traceback.StackSummary, dirs: list[Path]
) -> tuple[str, int, str] | None:
    """The revision file (and line, function) the error came from, if it came from one."""
    if isinstance(exc, SyntaxError) and exc.filename and _is_revision_file(exc.filename, dirs):
        return exc.filename, exc.lineno or 0, "<module>"
    found = None
    for frame in frames:
        if _is_revision_file(frame.filename, dirs):
            found = (frame.filename, frame.lineno or 0, frame.name)
    return found


def _is_revision_file(filename: str, dirs: list[Path]) -> bool:
    path = Path(filename)
    if path.name == "env.py" or path.suffix != ".py":
        return False
    resolved = path.resolve()
    return any(resolved.is_relative_to(d) for d in dirs)


def _env_py_line(frames: traceback.StackSummary) -> str:
    for frame in reversed(frames):
        if Path(frame.filename).name == "env.py":
            return f" (env.py line {frame.lineno})"
    return ""


# What PostgreSQL answers to credentials it refuses: a configuration problem, not the network.
_REFUSED = ("password authentication failed", "authentication failed", "no pg_hba.conf entry")


def _is_network(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError

    if any(words in str(exc) for words in _REFUSED):
        return False
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError | TimeoutError | OSError) and not isinstance(
            seen, FileNotFoundError | PermissionError
        ):
            return True
        if isinstance(seen, OperationalError) or (
            isinstance(seen, DBAPIError) and seen.connection_invalidated
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _database_error(exc: BaseException) -> dict[str, str | None] | None:
    """PostgreSQL's error behind a failed revision: the statement, SQLSTATE, detail and hint."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        statement = getattr(cause, "statement", None)
        orig = getattr(cause, "orig", None)
        if isinstance(statement, str) and orig is not None:
            diag = getattr(orig, "diag", None)
            primary = getattr(diag, "message_primary", None) or _first_line(orig)
            return {
                "message": str(primary),
                "statement": statement.strip(),
                "sqlstate": getattr(orig, "sqlstate", None),
                "detail": getattr(diag, "message_detail", None),
                "hint": getattr(diag, "message_hint", None),
            }
        cause = cause.__cause__ or cause.__context__
    return None


def reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = _first_line(cause)
    name = type(cause).__name__
    if isinstance(cause, SyntaxError):
        return f"SyntaxError: {cause.msg}"
    return text if text.startswith(name) or getattr(exc, "orig", None) else f"{name}: {text}"


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
