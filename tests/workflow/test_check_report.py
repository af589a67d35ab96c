"""The check's pieces that need no server: its report and exit code, the schema diff filter,
lint findings mapped to revisions, the throw-away branch's name; and one check run through the
workflow alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from neonflow.config import load_settings
from neonflow.errors import DriftDetected
from neonflow.local.service import LocalNeonInfo
from neonflow.neon import NeonClient
from neonflow.workflow import lint
from neonflow.workflow.check import (
    Check,
    CheckReport,
    Finding,
    check_branch_name,
    without_bookkeeping,
)
from tests.conftest import sql_of

SETS = Path(__file__).parents[1] / "migration_sets"


def test_a_check_through_the_workflow_returns_the_whole_report(
    project: Path, neon_client: NeonClient, local_neon: LocalNeonInfo
) -> None:
    settings = load_settings(config_file=project / "neonflow.toml")
    stages: list[str] = []

    report = Check(settings, neon_client, progress=stages.append).run()

    assert report.passed and report.exit_code == 0, report.findings
    assert [r.status for r in report.revisions] == ["applied"] * len(report.revisions)
    assert report.revisions and all(r.seconds is not None for r in report.revisions)
    assert report.round_trip.status == "passed" and report.drift == []
    assert report.branch is not None and report.branch.deleted
    assert report.branch.name not in [b.name for b in neon_client.list_branches()]
    assert any("deleting branch" in stage for stage in stages)


# -- the pieces, without a server -----------------------------------------------------------------

# "~" stands for a blank context line (a lone space)
DIFF = "\n".join(
    " " if line == "~" else line
    for line in """--- a/neondb
+++ b/neondb
@@ -16,6 +16,20 @@
 SET client_min_messages = warning;
 SET row_security = off;
~
+SET default_tablespace = '';
+
+SET default_table_access_method = heap;
+
+--
+-- Name: alembic_version; Type: TABLE; Schema: public; Owner: -
+--
+
+CREATE TABLE public.alembic_version (
+    version_num character varying(32) NOT NULL
+);
+
+
 --
 -- PostgreSQL database dump complete
 --
@@ -40,6 +54,13 @@
 CREATE TABLE public.items (
     id bigint NOT NULL
 );
~
+--
+-- Name: alembic_version alembic_version_pkc; Type: CONSTRAINT; Schema: public; Owner: -
+--
+
+ALTER TABLE ONLY public.alembic_version
+    ADD CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num);
+
+--
+-- Name: items note; Type: COLUMN
+--
+ALTER TABLE public.items ADD COLUMN note text;
 --
""".split("\n")
)


def test_schema_diff_without_alembic_bookkeeping() -> None:
    cleaned = without_bookkeeping(DIFF)

    assert "alembic_version" not in cleaned
    assert "SET default_tablespace" not in cleaned  # that hunk had nothing else
    assert cleaned.startswith("--- a/neondb\n+++ b/neondb\n@@ -40,")
    assert "+ALTER TABLE public.items ADD COLUMN note text;" in cleaned
    assert without_bookkeeping(DIFF.split("@@ -40")[0]) == ""
    assert without_bookkeeping("") == ""


def test_lint_findings_map_to_revisions() -> None:
    sql = sql_of(SETS / "busy" / "alembic.ini", "0001", "heads")
    owners = lint.revision_of_lines(sql)
    assert owners[0] is None  # BEGIN comes before the first revision
    assert owners[-1] == "0002"

    findings = lint.lint(sql, fail_on=["require-concurrent-index-creation"], files={"0002": "f.py"})

    assert all("alembic_version" not in f.sql for f in findings)
    [index] = [f for f in findings if f.rule == "require-concurrent-index-creation"]
    assert (index.severity, index.revision, index.file) == ("error", "0002", "f.py")
    assert sql.splitlines()[index.line - 1].startswith("CREATE INDEX ix_items_name")


def test_exit_code_is_the_first_failing_stage() -> None:
    report = CheckReport()
    assert report.exit_code == 0 and report.raise_for_status() is report
    report.findings.append(Finding("lint", "error", "a lint error"))
    report.findings.append(Finding("irreversible", "warning", "only a warning"))
    assert report.exit_code == 13
    report.findings.append(Finding("drift", "error", "models differ"))
    assert report.exit_code == 11 and report.failure == "drift"
    with pytest.raises(DriftDetected, match="check failed: models differ"):
        report.raise_for_status()


def test_check_branch_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GITHUB_HEAD_REF", "dependabot/pip/alembic-1.20")
    name = check_branch_name(tmp_path)
    assert name.startswith("check-dependabot/pip/alembic-1.20-") and len(name.split("-")[-1]) == 6
    monkeypatch.setenv("GITHUB_HEAD_REF", "é" * 300)  # cut to Neon's 256 characters
    assert len(check_branch_name(tmp_path)) == 256
    monkeypatch.delenv("GITHUB_HEAD_REF")
    assert len(check_branch_name(tmp_path)) == len("check-") + 6  # not a git checkout
