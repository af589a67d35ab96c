"""What ``neonflow check`` found: the report, its findings and the exit code they decide.

Nothing here runs anything: :class:`CheckReport` is filled by :mod:`.run` and
:mod:`.rehearsal`, rendered by ``neonflow.cli.report``, and read by Python callers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from neonflow.errors import (
    CheckFailed,
    CheckRefused,
    DriftDetected,
    LintFailed,
    MigrationError,
    MigrationFailed,
    NotReversible,
)
from neonflow.workflow.lint import LintFinding

# The kinds of finding that fail the check, in the order the stages run: the first one found
# decides the exit code.
FAILURES: dict[str, type[CheckFailed]] = {
    "refused": CheckRefused,
    "error": CheckFailed,  # what stopped the check (env.py, the network…): its own exit code
    "migration": MigrationFailed,
    "drift": DriftDetected,
    "irreversible": NotReversible,
    "lint": LintFailed,
}

# The stages in the order they run (lint while Neon creates the branch); each ends "passed",
# "failed" or "skipped" (lint "not rendered"; alembic check "no models" without target_metadata;
# the schema diff "done"; the teardown "deleted", "kept" or "failed").
STAGES = (
    "create_branch",
    "lint",
    "upgrade",
    "alembic_check",
    "schema_diff",
    "round_trip",
    "teardown",
)


@dataclass
class Finding:
    """One thing the check found; ``severity`` "error" fails the check, "warning" does not."""

    kind: str  # refused, error, migration, drift, irreversible, lint, schema, teardown
    severity: str
    message: str
    revision: str | None = None
    file: str | None = None
    rule: str | None = None
    detail: str | None = None  # the failing statement, the linted SQL, a diff
    exit_code: int | None = None  # for an "error": the exit code of what stopped the check


@dataclass
class Lock:
    relation: str
    mode: str  # the strongest lock mode the revision holds on it at commit
    blocks: str  # what it blocks while held
    existing: bool  # the relation exists on the base (a new one blocks nobody)


@dataclass
class RowCounts:
    table: str
    inserted: int
    updated: int
    deleted: int


@dataclass
class DbError:
    message: str
    statement: str | None = None
    sqlstate: str | None = None
    detail: str | None = None
    hint: str | None = None

    @classmethod
    def of(cls, exc: MigrationError) -> DbError:
        """PostgreSQL's error behind a MigrationError: the statement, SQLSTATE, detail, hint."""
        found = exc.database_error or {}
        return cls(
            message=str(found.get("message") or exc),
            statement=found.get("statement"),
            sqlstate=found.get("sqlstate"),
            detail=found.get("detail"),
            hint=found.get("hint"),
        )


@dataclass
class RevisionReport:
    revision: str
    down_revision: str | None
    file: str
    message: str
    status: str = "pending"  # applied, failed, skipped
    seconds: float | None = None
    locks: list[Lock] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    rows: list[RowCounts] = field(default_factory=list)
    error: DbError | None = None


@dataclass
class RoundTrip:
    status: str = "skipped"  # passed, failed, skipped
    downgraded_to: str | None = None
    failed_revision: str | None = None
    leftover_diff: str = ""


@dataclass
class BranchInfo:
    name: str
    id: str | None = None
    deleted: bool = False
    kept: bool = False
    expires_at: str | None = None


@dataclass
class BaseInfo:
    name: str
    id: str
    revision: list[str]


@dataclass
class CheckReport:
    """Everything ``neonflow check`` found; :meth:`to_json` is the JSON report."""

    base: BaseInfo | None = None
    head: str | None = None  # several, comma-separated, when the check refuses them
    branch: BranchInfo | None = None
    revisions: list[RevisionReport] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    round_trip: RoundTrip = field(default_factory=RoundTrip)
    lint: list[LintFinding] = field(default_factory=list)
    schema_diff: str = ""
    findings: list[Finding] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=lambda: dict.fromkeys(STAGES, "skipped"))
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "error"]

    @property
    def failure(self) -> str | None:
        """The kind of the first failing stage, or None when the check passes."""
        kinds = {f.kind for f in self.errors}
        return next((kind for kind in FAILURES if kind in kinds), None)

    @property
    def passed(self) -> bool:
        return self.failure is None

    @property
    def exit_code(self) -> int:
        failure = self.failure
        if failure == "error":
            first = next(f for f in self.errors if f.kind == "error")
            return first.exit_code or CheckFailed.exit_code
        return FAILURES[failure].exit_code if failure else 0

    def raise_for_status(self) -> CheckReport:
        """Raise the CheckFailed kind of the first failing stage; return self when it passed."""
        failure = self.failure
        if failure is not None:
            first = next(f for f in self.errors if f.kind == failure)
            error = FAILURES[failure](f"check failed: {first.message}")
            error.exit_code = self.exit_code
            raise error
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "failure": self.failure,
            **asdict(self),
        }

    def add(self, kind: str, severity: str, message: str, **extra: Any) -> Finding:
        finding = Finding(kind, severity, message, **extra)
        self.findings.append(finding)
        return finding

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the wall time of the block as ``timings[stage]``, in seconds."""
        clock = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = since(clock)


def since(clock: float) -> float:
    """Seconds since ``clock`` (a ``time.monotonic()``), to the millisecond."""
    return round(time.monotonic() - clock, 3)
