"""``neonflow check``: rehearse a change's migrations on a throw-away branch of the base's data.

The stages, in order:

1. refuse what cannot be checked: a history with several heads, a base whose revision is not in
   the history (the base moved on), a base at several revisions;
2. create a throw-away branch of the base (``check-<git branch or PR>-<6 hex>``) and, while
   Neon makes it, lint the SQL of base → head with squawk, each finding mapped to its revision;
3. wait until the branch is ready;
4. the rehearsal (:mod:`.rehearsal`): upgrade it from the base's revision to head, each
   revision in a transaction of its own, with per-revision statistics; ``alembic check`` at
   head; the schema diff against the base (:mod:`.schema_diff`); the round trip;
5. delete the branch, whatever happened (an error, Ctrl-C), unless ``keep``.

Nothing here prints: :meth:`Check.run` returns a :class:`~.report.CheckReport`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from neonflow.config import Settings
from neonflow.errors import NeonflowError, RevisionLoadError
from neonflow.times import rfc3339_or_none
from neonflow.workflow import lint as squawk_lint
from neonflow.workflow import names
from neonflow.workflow.branches import Branches
from neonflow.workflow.check.rehearsal import Rehearsal
from neonflow.workflow.check.report import BaseInfo, BranchInfo, CheckReport, RevisionReport, since
from neonflow.workflow.check.schema_diff import without_bookkeeping

if TYPE_CHECKING:
    from neonflow.migrations import Project
    from neonflow.migrations.history import History, Revision
    from neonflow.migrations.runner import Runner
    from neonflow.neon import Branch, NeonClient

Progress = Callable[[str], None]

PREFIX = "check"


def _quiet(message: str) -> None:
    return None


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
        report.timings["total"] = since(started)
        return report

    def _run(self, report: CheckReport, base: str | None, keep: bool) -> None:
        from neonflow.migrations.probe import read_heads

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
            base_rev = read_heads(
                self.branches.url(base_branch),
                history.version_table,
                history.version_table_schema,
                timeout=10,
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
            with report.timed("lint"):
                self._lint(report, start, squawk, offline)
            self.client.wait_for_operations(created.operations)
            url = self.branches.created_url(created) or self.branches.url(branch)
            report.timings["create_branch"] = since(clock)
            report.stages["create_branch"] = "passed"
            runner.target(url, f"the throw-away branch {name}")
            Rehearsal(
                report, runner, start, base.name, lambda: self._diff(branch, base), self.progress
            ).run()
        finally:
            if keep:
                info.kept = True
                report.stages["teardown"] = "kept"
                self.progress(
                    f"keeping branch {name} (--keep); when done: "
                    f"neonflow branch delete {name} --yes"
                )
            else:
                with report.timed("teardown"):
                    self._teardown(report, branch)

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
