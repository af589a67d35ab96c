"""``neonflow check``: rehearse a change's migrations on a throw-away branch of the base's data.

The stages, in order:

1. refuse what cannot be checked: a history with several heads, a base whose revision is not in
   the history (the base moved on), a base at several revisions;
2. create a throw-away branch of the base (``check-<git branch or PR>-<6 hex>``) and, while
   Neon makes it, lint the SQL of base → head with squawk, each finding mapped to its revision;
3. wait until the branch is ready;
4. upgrade it from the base's revision to head, each revision in a transaction of its own, and
   record per revision: its time, the locks it holds at commit, the tables it rewrites, the rows
   it writes (``pg_locks``, ``pg_class.relfilenode``, ``pg_stat_xact_user_tables``);
5. ``alembic check`` at head (drift between the models and the migrations);
6. the schema diff of the branch against the base, without Alembic's ``alembic_version``;
7. the round trip: downgrade to the base's revision (a schema that then differs from the base's
   is a warning), then upgrade to head again;
8. delete the branch, whatever happened (an error, Ctrl-C), unless ``keep``.

Nothing here prints: :meth:`Check.run` returns a :class:`CheckReport`, and
:meth:`CheckReport.raise_for_status` raises the :class:`~neonflow.errors.CheckFailed` kind of the
first failing stage, whose ``exit_code`` the CLI exits with::

    CheckFailed (neonflow.errors)     exit code
    ├── CheckRefused                      2   several heads; the base is not in the history
    ├── MigrationFailed                  10   a revision failed on the branch
    ├── DriftDetected                    11   alembic check: the models differ from the migrations
    ├── NotReversible                    12   a downgrade failed, or the upgrade after it
    └── LintFailed                       13   squawk found a rule listed in ``[check] fail_on``

Errors that stop the check itself (the Neon API, the network, the configuration) propagate as
the usual :mod:`neonflow.errors`, after the branch is deleted.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neonflow.config import Settings
from neonflow.errors import (
    CheckFailed,
    CheckRefused,
    DriftDetected,
    LintFailed,
    MigrationError,
    MigrationFailed,
    NeonflowError,
    NotReversible,
    RevisionLoadError,
)
from neonflow.times import rfc3339_or_none
from neonflow.workflow import lint as squawk_lint
from neonflow.workflow import names
from neonflow.workflow.branches import (
    Branches,
)

if TYPE_CHECKING:
    from neonflow.migrations import Project
    from neonflow.migrations.history import History, Revision
    from neonflow.migrations.runner import Runner
    from neonflow.neon import Branch, NeonClient

Progress = Callable[[str], None]

PREFIX = "check"
BOOKKEEPING = "alembic_version"


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
# "failed" or "skipped" (the schema diff "done"; the teardown "deleted", "kept" or "failed").
STAGES = (
    "create_branch",
    "lint",
    "upgrade",
    "alembic_check",
    "schema_diff",
    "round_trip",
    "teardown",
)


# -- the report ----------------------------------------------------------------------------------


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
    lint: list[squawk_lint.LintFinding] = field(default_factory=list)
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

    @property
    def summary(self) -> str:
        """One line: the verdict and the first error."""
        errors = self.errors
        if not errors:
            warned = f" with {plural(len(self.warnings), 'warning')}" if self.warnings else ""
            return f"the check passed{warned}"
        first = next(f for f in errors if f.kind == self.failure)
        more = f" (and {plural(len(errors) - 1, 'more error')})" if len(errors) > 1 else ""
        return f"{first.message}{more}"

    def raise_for_status(self) -> CheckReport:
        """Raise the CheckFailed kind of the first failing stage; return self when it passed."""
        failure = self.failure
        if failure is not None:
            error = FAILURES[failure](f"check failed: {self.summary}")
            error.exit_code = self.exit_code
            raise error
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data = {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "failure": self.failure,
            "summary": self.summary,
            **data,
        }
        return data

    def add(self, kind: str, severity: str, message: str, **extra: Any) -> Finding:
        finding = Finding(kind, severity, message, **extra)
        self.findings.append(finding)
        return finding


# -- the use case --------------------------------------------------------------------------------


def _quiet(message: str) -> None:
    return None


def plural(count: int, noun: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check_branch_name(root: Path) -> str:
    """``check-<PR head branch or git branch>-<6 hex>`` (the git name as it is, cut to fit);
    ``check-<6 hex>`` without one."""
    ref = os.environ.get("GITHUB_HEAD_REF") or names.git_branch(root) or ""
    suffix = secrets.token_hex(3)
    stem = f"{PREFIX}-{ref}"[: names.MAX_NAME - len(suffix) - 1] if ref.strip() else PREFIX
    try:
        return names.check_name(f"{stem}-{suffix}")
    except NeonflowError:  # a control character in GITHUB_HEAD_REF
        return f"{PREFIX}-{suffix}"


class Check:
    """The pre-merge check over one Neon client and the project's settings."""

    def __init__(self, settings: Settings, client: NeonClient, progress: Progress = _quiet) -> None:
        self.settings = settings
        self.client = client
        self.progress = progress
        self.branches = Branches(settings, client, progress)

    @property
    def project(self) -> Project:
        return self.branches.project

    def run(self, base: str | None = None, keep: bool = False) -> CheckReport:
        """Run every stage and return the report; the throw-away branch is gone afterwards.

        Whatever stops the check (env.py, the network, the API) is in the report as an
        ``error`` finding with its exit code, so every format carries the full story.
        """
        started = time.monotonic()
        report = CheckReport()
        try:
            self._run(report, base, keep)
        except NeonflowError as exc:
            report.add("error", "error", str(exc), exit_code=exc.exit_code)
        report.timings["total"] = _since(started)
        return report

    def _run(self, report: CheckReport, base: str | None, keep: bool) -> None:
        from neonflow.migrations import database

        # Both Alembic processes warm up (imports) while neonflow reads the base and Neon
        # makes the branch: one renders offline (the history, the SQL to lint), one migrates.
        with self.branches.runner() as offline, self.branches.runner() as runner:
            offline.offline()
            try:
                history = offline.history()
            except RevisionLoadError as exc:
                report.add("migration", "error", str(exc), revision=exc.revision)
                return
            base_branch = self.branches.require(base or self.settings.neon.parent, literal=True)
            base_rev = database.current(
                self.branches.url(base_branch),
                history.version_table,
                history.version_table_schema,
            )
            report.base = BaseInfo(base_branch.name, base_branch.id, list(base_rev))
            report.head = ", ".join(history.heads) or None
            if self._refuse(report, history, base_rev, base_branch):
                return
            start = base_rev[0] if base_rev else None
            report.revisions = [self._revision_report(r) for r in history.path(start)]
            squawk = self._squawk() if report.revisions else None
            self._on_branch(report, base_branch, start, keep, squawk, runner, offline)

    # -- refusals --------------------------------------------------------------------------

    def _refuse(
        self, report: CheckReport, history: History, base_rev: tuple[str, ...], base: Branch
    ) -> bool:
        from neonflow.migrations import multiple_heads

        heads = history.heads
        if not heads:
            report.add("refused", "error", f"{self.project.ini} has no migration: nothing to check")
        elif len(heads) > 1:
            report.add("refused", "error", str(multiple_heads(heads)))
        elif len(base_rev) > 1:
            report.add(
                "refused",
                "error",
                f"{base.name} is at several revisions ({', '.join(base_rev)}); "
                "neonflow check needs a base at one revision",
            )
        elif base_rev and not history.knows(base_rev[0]):
            report.add(
                "refused",
                "error",
                f"{base.name} is at revision {base_rev[0]}, which is not in this branch's "
                "migration history (the base moved on): merge or rebase onto the base's code, "
                "re-point your first new revision's down_revision at its head "
                "(or run alembic merge heads), then check again",
                revision=base_rev[0],
            )
        return bool(report.findings)

    # -- lint --------------------------------------------------------------------------------

    def _squawk(self) -> Path:
        """squawk, with ``[check] fail_on`` and ``ignore`` checked against its rules."""
        exe = squawk_lint.squawk_executable()
        squawk_lint.validate_rules([*self.settings.check.fail_on, *self.settings.check.ignore], exe)
        return exe

    def _lint(
        self, report: CheckReport, start: str | None, exe: Path | None, runner: Runner
    ) -> None:
        if not report.revisions or exe is None:
            return
        settings = self.settings.check
        self.progress("linting the migrations' SQL with squawk (while Neon makes the branch)")
        try:
            sql = runner.sql(start, "heads")
        except NeonflowError as exc:  # a revision that needs a live database cannot render
            report.add(
                "lint",
                "warning",
                f"lint could not run: Alembic could not render the SQL offline ({exc}); "
                "the revisions were rehearsed on the branch all the same",
            )
            report.stages["lint"] = "not rendered"
            return
        files = {r.revision: r.file for r in report.revisions}
        report.lint = squawk_lint.lint(sql, settings.fail_on, settings.ignore, files, exe)
        failed = any(item.severity == "error" for item in report.lint)
        report.stages["lint"] = "failed" if failed else "passed"
        for item in report.lint:
            report.add(
                "lint",
                item.severity,
                f"{item.rule}: {item.message}",
                revision=item.revision,
                file=item.file,
                rule=item.rule,
                detail=item.sql,
            )

    # -- the branch ------------------------------------------------------------------------

    def _on_branch(
        self,
        report: CheckReport,
        base: Branch,
        start: str | None,
        keep: bool,
        squawk: Path | None,
        runner: Runner,
        offline: Runner,
    ) -> None:
        name = check_branch_name(self.settings.root)
        report.branch = info = BranchInfo(name)
        self.progress(f"creating branch {name}, a throw-away copy of {base.name}")
        clock = time.monotonic()
        created = self.branches.create_throwaway(
            name, base, "check", self.branches.expires_at(throwaway=not keep)
        )
        branch = created.branch
        info.id = branch.id
        info.expires_at = rfc3339_or_none(branch.expires_at)
        try:
            # Linting needs no database: do it while Neon creates the branch.
            with self._timed(report, "lint"):
                self._lint(report, start, squawk, offline)
            self.client.wait_for_operations(created.operations)
            url = self.branches.created_url(created) or self.branches.url(branch)
            report.timings["create_branch"] = _since(clock)
            report.stages["create_branch"] = "passed"
            runner.target(url, f"the throw-away branch {name}")
            self._rehearse(report, base, branch, runner, start)
        finally:
            if keep:
                info.kept = True
                report.stages["teardown"] = "kept"
                self.progress(
                    f"keeping branch {name} (--keep); when done: "
                    f"neonflow branch delete {name} --yes"
                )
            else:
                with self._timed(report, "teardown"):
                    self._teardown(report, branch)

    def _rehearse(
        self, report: CheckReport, base: Branch, branch: Branch, runner: Runner, start: str | None
    ) -> None:
        with self._timed(report, "upgrade"):
            upgraded = self._upgrade(report, runner)
        report.stages["upgrade"] = "passed" if upgraded else "failed"
        if not upgraded:
            return  # the later stages need the branch at head
        self.progress("running alembic check at head")
        with self._timed(report, "alembic_check"):
            try:
                report.drift = runner.check()
            except MigrationError as exc:
                report.add("drift", "error", f"alembic check could not run: {exc}")
                report.stages["alembic_check"] = "failed"
        if report.drift:
            report.add(
                "drift",
                "error",
                "the models and the migrations differ at head (alembic check): generate a "
                "revision for the change (alembic revision --autogenerate) or fix the models",
                detail="\n".join(report.drift),
            )
        if report.stages["alembic_check"] != "failed":
            report.stages["alembic_check"] = "failed" if report.drift else "passed"
        with self._timed(report, "schema_diff"):
            report.schema_diff = self._diff(branch, base)
        report.stages["schema_diff"] = "done"
        with self._timed(report, "round_trip"):
            self._round_trip(report, base, branch, runner, start)
        report.stages["round_trip"] = report.round_trip.status

    def _upgrade(self, report: CheckReport, runner: Runner) -> bool:
        if not report.revisions:
            self.progress("the base is already at head: no revision to apply")
            return True
        by_id = {r.revision: r for r in report.revisions}
        self.progress(
            f"upgrading {plural(len(report.revisions), 'revision')} on the branch, "
            "one transaction each"
        )
        try:
            done = runner.upgrade("heads", stats=True)
        except MigrationError as exc:
            failed = by_id.get(exc.revision or "")
            error = _db_error(exc)
            if failed is not None:
                failed.status, failed.error = "failed", error
            for rev in report.revisions:
                if rev.status == "pending":
                    rev.status = "skipped"
            report.add(
                "migration",
                "error",
                str(exc),
                revision=exc.revision,
                file=failed.file if failed else None,
                detail=error.statement,
            )
            return False
        for revision, stats in done.stats.items():
            applied = by_id.get(revision)
            if applied is None:
                continue
            applied.status = "applied"
            applied.seconds = stats["seconds"]
            applied.locks = [Lock(**lock) for lock in stats["locks"]]
            applied.rows = [RowCounts(**row) for row in stats["rows"]]
            applied.rewritten = list(stats["rewritten"])
        for rev in report.revisions:
            if rev.status == "pending":
                rev.status = "applied"  # verified at head on neonflow's own connection
        return True

    def _round_trip(
        self, report: CheckReport, base: Branch, branch: Branch, runner: Runner, start: str | None
    ) -> None:
        trip = report.round_trip
        if not report.revisions:
            return
        target = start or "base"
        trip.downgraded_to = target
        self.progress(f"round trip: downgrading to {target}, then upgrading to head again")
        try:
            runner.downgrade(target)
        except MigrationError as exc:
            trip.status, trip.failed_revision = "failed", exc.revision
            rev = next((r for r in report.revisions if r.revision == exc.revision), None)
            report.add(
                "irreversible",
                "error",
                f"{exc}: the revision cannot be rolled back",
                revision=exc.revision,
                file=rev.file if rev else None,
                detail=_db_error(exc).statement,
            )
            return
        trip.leftover_diff = self._diff(branch, base)
        if trip.leftover_diff:
            report.add(
                "irreversible",
                "warning",
                f"after downgrading to {target} the schema differs from {base.name}'s: "
                "a downgrade leaves something behind (or changes column order)",
                detail=trip.leftover_diff,
            )
        try:
            runner.upgrade("heads")
        except MigrationError as exc:
            trip.status, trip.failed_revision = "failed", exc.revision
            rev = next((r for r in report.revisions if r.revision == exc.revision), None)
            report.add(
                "irreversible",
                "error",
                f"upgrading again after the downgrade failed: {exc} (a downgrade does not "
                "undo everything its upgrade did)",
                revision=exc.revision,
                file=rev.file if rev else None,
                detail=_db_error(exc).statement,
            )
            return
        trip.status = "passed"

    def _diff(self, branch: Branch, base: Branch) -> str:
        database = self.settings.neon.database
        diff = self.client.compare_schema(branch.id, database, base_branch_id=base.id)
        return without_bookkeeping(diff)

    def _teardown(self, report: CheckReport, branch: Branch) -> None:
        info = report.branch
        assert info is not None
        self.progress(f"deleting branch {branch.name}")
        try:
            self.client.wait_for_operations(self.client.delete_branch(branch.id))
        except NeonflowError as exc:
            message = (
                f"could not delete the throw-away branch {branch.name}: {exc}; delete it with "
                f"`neonflow branch delete {branch.name} --yes`"
                + (f" (it expires at {info.expires_at})" if info.expires_at else "")
            )
            self.progress(message)
            report.add("teardown", "warning", message)
            report.stages["teardown"] = "failed"
            return
        info.deleted = True
        report.stages["teardown"] = "deleted"

    # -- helpers ---------------------------------------------------------------------------

    def _revision_report(self, revision: Revision) -> RevisionReport:
        return RevisionReport(
            revision=revision.revision,
            down_revision=revision.down_revision,
            file=self._relative(Path(revision.path)),
            message=revision.doc,
        )

    def _relative(self, path: Path) -> str:
        for root in (self.settings.root, Path.cwd(), self.project.ini.parent):
            try:
                return str(path.resolve().relative_to(root.resolve()))
            except ValueError:
                continue
        return str(path)

    @contextmanager
    def _timed(self, report: CheckReport, stage: str) -> Iterator[None]:
        clock = time.monotonic()
        try:
            yield
        finally:
            report.timings[stage] = _since(clock)


# -- small helpers -------------------------------------------------------------------------------


def without_bookkeeping(diff: str) -> str:
    """A unified diff of two pg_dump schemas without the changes to Alembic's version table.

    Each hunk's lines are grouped into pg_dump's blocks (``--`` / ``-- Name: …`` headers); the
    added and removed lines of blocks about ``alembic_version`` are dropped, hunks left with no
    change but pg_dump's session settings (``SET …;``), comments and blank lines are dropped,
    and a diff left with no hunk is empty.
    """
    if not diff.strip():
        return ""
    lines = diff.splitlines(keepends=True)
    header: list[str] = []
    hunks: list[list[str]] = []
    for line in lines:
        if line.startswith("@@"):
            hunks.append([line])
        elif hunks:
            hunks[-1].append(line)
        else:
            header.append(line)
    kept = [h for h in (_filter_hunk(hunk) for hunk in hunks) if h]
    return "".join(header + [line for hunk in kept for line in hunk]) if kept else ""


def _filter_hunk(hunk: list[str]) -> list[str]:
    body = hunk[1:]
    blocks: list[list[str]] = [[]]
    for i, line in enumerate(body):
        text = line[1:].rstrip("\n")
        nxt = body[i + 1][1:] if i + 1 < len(body) else ""
        if text == "--" and nxt.startswith("-- Name:") and blocks[-1]:
            blocks.append([])
        blocks[-1].append(line)
    out: list[str] = []
    for block in blocks:
        names_line = next((ln for ln in block if ln[1:].startswith("-- Name:")), None)
        about = names_line if names_line is not None else "".join(block)
        bookkeeping = BOOKKEEPING in about
        for line in block:
            changed = line[:1] in ("+", "-")
            if changed and (bookkeeping or BOOKKEEPING in line):
                continue
            out.append(line)
    if not any(_significant(line) for line in out):
        return []
    old = sum(1 for line in out if line[:1] in (" ", "-"))
    new = sum(1 for line in out if line[:1] in (" ", "+"))
    starts = hunk[0].split(" ")
    old_start = starts[1].split(",")[0]
    new_start = starts[2].split(",")[0]
    return [f"@@ {old_start},{old} {new_start},{new} @@\n", *out]


def _significant(line: str) -> bool:
    """A changed line of a schema diff that is about the schema (not pg_dump's preamble)."""
    if line[:1] not in ("+", "-"):
        return False
    text = line[1:].strip()
    return bool(text) and not text.startswith(("SET ", "--", "SELECT pg_catalog.set_config"))


def _db_error(exc: MigrationError) -> DbError:
    """PostgreSQL's error behind a MigrationError: the statement, SQLSTATE, detail and hint."""
    found = exc.database_error or {}
    return DbError(
        message=str(found.get("message") or exc),
        statement=found.get("statement"),
        sqlstate=found.get("sqlstate"),
        detail=found.get("detail"),
        hint=found.get("hint"),
    )


def _one_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _since(clock: float) -> float:
    return round(time.monotonic() - clock, 3)
