"""The CLI's two jobs beside parsing, each without a server: rendering a check report (text,
Markdown, JSON) and mapping errors to one line on stderr, a JSON document and an exit code."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from neonflow import errors
from neonflow.cli import common
from neonflow.cli import report as render
from neonflow.workflow.check import (
    CheckReport,
    DbError,
    Finding,
    Lock,
    RevisionReport,
    RowCounts,
)
from neonflow.workflow.check.report import BaseInfo, BranchInfo


def failed_report() -> CheckReport:
    report = CheckReport(
        base=BaseInfo("main", "br-main-1", ["0001"]),
        head="0003",
        branch=BranchInfo("check-feature-abc123", "br-check-1", deleted=True),
    )
    report.revisions = [
        RevisionReport(
            "0002",
            "0001",
            "migrations/versions/0002_index.py",
            "index names",
            status="applied",
            seconds=0.012,
            locks=[Lock("items", "AccessExclusiveLock", "reads and writes", True)],
            rows=[RowCounts("items", 0, 3, 0)],
        ),
        RevisionReport(
            "0003",
            "0002",
            "migrations/versions/0003_price.py",
            "add price",
            status="failed",
            error=DbError(
                'column "price" contains null values',
                statement="ALTER TABLE items ADD COLUMN price integer NOT NULL",
            ),
        ),
    ]
    report.stages.update(create_branch="passed", upgrade="failed", teardown="deleted")
    report.add("migration", "error", "revision 0003 upgrade failed", revision="0003")
    report.add("lint", "warning", "prefer-robust-stmts: add IF NOT EXISTS", revision="0002")
    return report


def test_text_names_the_verdict_the_failing_revision_and_its_statement() -> None:
    text = render.text(failed_report())

    assert "✗ check failed (exit 10): revision 0003 upgrade failed" in text
    assert "items AccessExclusiveLock (blocks reads and writes)" in text
    assert "statement: ALTER TABLE items ADD COLUMN price integer NOT NULL" in text
    assert "prefer-robust-stmts" in text


def test_markdown_is_a_pull_request_comment() -> None:
    md = render.markdown(failed_report())

    assert md.startswith("### ❌ neonflow check failed")
    assert "**revision 0003 upgrade failed**" in md
    assert "`check-feature-abc123` (deleted afterwards)" in md
    assert "| ❌ | `0003` | migrations/versions/0003_price.py | failed |" in md
    assert "```sql\nALTER TABLE items ADD COLUMN price integer NOT NULL\n```" in md
    assert "- **round trip**: skipped (the upgrade failed)" in md


def test_json_carries_the_verdict_and_summary_first_then_the_whole_report() -> None:
    data = json.loads(render.render(failed_report(), "json"))

    assert list(data)[:4] == ["passed", "exit_code", "failure", "summary"]
    assert (data["passed"], data["exit_code"], data["failure"]) == (False, 10, "migration")
    assert data["revisions"][1]["error"]["statement"].startswith("ALTER TABLE items")


def test_summary_counts_the_other_errors_and_warnings() -> None:
    report = CheckReport()
    assert render.summary(report) == "the check passed"
    report.findings.append(Finding("irreversible", "warning", "leftover"))
    assert render.summary(report) == "the check passed with 1 warning"
    report.findings.append(Finding("lint", "error", "a lint error"))
    report.findings.append(Finding("drift", "error", "models differ"))
    assert render.summary(report) == "models differ (and 1 more error)"
    assert "✗ check failed (exit 11)" in render.text(report)


# -- the error mapping ----------------------------------------------------------------------------


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


PUBLIC = sorted(
    (c for c in _subclasses(errors.NeonflowError) if c.__module__ == "neonflow.errors"),
    key=lambda c: c.__name__,
)


def run_raising(exc: BaseException, *args: str) -> typer.testing.Result:
    app = typer.Typer()

    @app.command()
    @common.handle_errors
    def fail(json: bool = False) -> None:
        raise exc

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_each_error_is_one_line_and_its_exit_code(cls: type[errors.NeonflowError]) -> None:
    secret = "postgresql://u:hunter2@host/db"
    result = run_raising(cls(f"it broke at {secret}"), "--json")

    assert result.exit_code == cls.exit_code
    assert result.stderr == "error: it broke at postgresql://u:****@host/db\n"
    doc = json.loads(result.stdout)["error"]
    assert doc == {
        "kind": common.error_kind(cls("x")),
        "message": "it broke at postgresql://u:****@host/db",
        "exit_code": cls.exit_code,
    }
    assert "hunter2" not in result.output


def test_kinds_are_snake_case_names_of_the_classes() -> None:
    assert common.error_kind(errors.NotFoundError("x")) == "not_found"
    assert common.error_kind(errors.EnvPyError("x")) == "env_py"
    assert common.error_kind(errors.WrongTargetError("x")) == "wrong_target"
    # a connection that failed before any revision ran is the network error it is
    assert common.error_kind(errors.Unreachable("x")) == "network"
    assert errors.Unreachable.exit_code == errors.NetworkError.exit_code == 7


def test_ctrl_c_and_a_bug_have_their_own_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEONFLOW_DEBUG", raising=False)
    interrupted = run_raising(KeyboardInterrupt())
    assert interrupted.exit_code == common.EXIT_INTERRUPTED
    assert interrupted.stderr == "error: interrupted\n"

    bug = run_raising(RuntimeError("boom"))
    assert bug.exit_code == 1
    assert bug.stderr.startswith("error: unexpected RuntimeError: boom (a bug")
