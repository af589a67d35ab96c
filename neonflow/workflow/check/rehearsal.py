"""The stages a check runs on its throw-away branch: the upgrade with per-revision statistics,
``alembic check``, the schema diff and the round trip (downgrade, then upgrade again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from neonflow.errors import MigrationError
from neonflow.workflow.check.report import CheckReport, DbError, Lock, RowCounts

if TYPE_CHECKING:
    from neonflow.migrations.runner import Runner


@dataclass
class Rehearsal:
    """The migrations from ``start`` (the base's revision) to head, rehearsed through ``runner``
    on the branch; ``diff()`` is the branch's schema diff against the base (``base_name``)."""

    report: CheckReport
    runner: Runner
    start: str | None
    base_name: str
    diff: Callable[[], str]
    progress: Callable[[str], None]

    def run(self) -> None:
        report = self.report
        with report.timed("upgrade"):
            upgraded = self._upgrade()
        report.stages["upgrade"] = "passed" if upgraded else "failed"
        if not upgraded:
            return  # the later stages need the branch at head
        self.progress("running alembic check at head")
        with report.timed("alembic_check"):
            self._alembic_check()
        with report.timed("schema_diff"):
            report.schema_diff = self.diff()
        report.stages["schema_diff"] = "done"
        with report.timed("round_trip"):
            self._round_trip()
        report.stages["round_trip"] = report.round_trip.status

    def _upgrade(self) -> bool:
        report = self.report
        if not report.revisions:
            self.progress("the base is already at head: no revision to apply")
            return True
        by_id = {r.revision: r for r in report.revisions}
        count = len(report.revisions)
        self.progress(
            f"upgrading {count} revision{'' if count == 1 else 's'} on the branch, "
            "one transaction each"
        )
        try:
            done = self.runner.upgrade("heads", stats=True)
        except MigrationError as exc:
            failed = by_id.get(exc.revision or "")
            error = DbError.of(exc)
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

    def _alembic_check(self) -> None:
        report = self.report
        try:
            drift = self.runner.check()
        except MigrationError as exc:
            report.add("drift", "error", f"alembic check could not run: {exc}")
            report.stages["alembic_check"] = "failed"
            return
        if drift is None:
            report.add(
                "drift",
                "warning",
                "alembic check skipped: env.py gives configure() no target_metadata, so there "
                "are no models to compare the migrations with",
            )
            report.stages["alembic_check"] = "no models"
            return
        report.drift = drift
        if report.drift:
            report.add(
                "drift",
                "error",
                "the models and the migrations differ at head (alembic check): generate a "
                "revision for the change (alembic revision --autogenerate) or fix the models",
                detail="\n".join(report.drift),
            )
        report.stages["alembic_check"] = "failed" if report.drift else "passed"

    def _round_trip(self) -> None:
        report, trip = self.report, self.report.round_trip
        if not report.revisions:
            return
        target = self.start or "base"
        trip.downgraded_to = target
        self.progress(f"round trip: downgrading to {target}, then upgrading to head again")
        try:
            self.runner.downgrade(target)
        except MigrationError as exc:
            self._irreversible(exc, f"{exc}: the revision cannot be rolled back")
            return
        trip.leftover_diff = self.diff()
        if trip.leftover_diff:
            report.add(
                "irreversible",
                "warning",
                f"after downgrading to {target} the schema differs from {self.base_name}'s: "
                "a downgrade leaves something behind (or changes column order)",
                detail=trip.leftover_diff,
            )
        try:
            self.runner.upgrade("heads")
        except MigrationError as exc:
            self._irreversible(
                exc,
                f"upgrading again after the downgrade failed: {exc} (a downgrade does not "
                "undo everything its upgrade did)",
            )
            return
        trip.status = "passed"

    def _irreversible(self, exc: MigrationError, message: str) -> None:
        report, trip = self.report, self.report.round_trip
        trip.status, trip.failed_revision = "failed", exc.revision
        rev = next((r for r in report.revisions if r.revision == exc.revision), None)
        report.add(
            "irreversible",
            "error",
            message,
            revision=exc.revision,
            file=rev.file if rev else None,
            detail=DbError.of(exc).statement,
        )
