"""``neonflow check`` end to end against the local Neon, with migration sets written to fail.

The sets live in ``tests/migration_sets/`` (see its README). Bases with data are branches of the
session server's ``main`` made by the test (``main`` itself is never changed), and every test
ends with no ``check-*`` branch left, whatever the check did.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from neonflow.cli.main import app
from neonflow.errors import (
    CheckRefused,
    DriftDetected,
    LintFailed,
    MigrationFailed,
    NeonAPIError,
    NotReversible,
)
from neonflow.local.service import LocalNeonInfo
from neonflow.migrations.runner import Runner
from neonflow.neon import NeonClient
from tests.conftest import upgrade_to

SETS = Path(__file__).parents[1] / "migration_sets"

MakeBase = Callable[..., str]


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def nf_json(*args: str) -> tuple[Result, dict[str, Any]]:
    result = nf("check", "--format", "json", *args)
    assert result.stdout.strip(), result.stderr
    return result, json.loads(result.stdout)


def check_branches(client: NeonClient) -> list[str]:
    return [b.name for b in client.list_branches() if b.name.startswith("check-")]


def use_set(project: Path, info: LocalNeonInfo, name: str, extra: str = "") -> Path:
    """Point the project at a migration set (``extra`` is more neonflow.toml)."""
    ini = SETS / name / "alembic.ini"
    (project / "neonflow.toml").write_text(
        f"""
[app]
env_file = ".env"

[migrations]
alembic_ini = "{ini}"

[local]
state_dir = "{info.state_dir}"
{extra}
"""
    )
    return ini


@pytest.fixture(autouse=True)
def no_check_branch_left(neon_client: NeonClient) -> Iterator[None]:
    yield
    assert check_branches(neon_client) == []


@pytest.fixture
def make_base(neon_client: NeonClient) -> Iterator[MakeBase]:
    """Branches of ``main`` to check against, migrated and seeded as the test says."""
    made: list[str] = []

    def make(
        ini: Path | None = None,
        revision: str | None = None,
        rows: int = 0,
        stamp: str | None = None,
    ) -> str:
        name = f"base-{uuid.uuid4().hex[:8]}"
        main = neon_client.find_branch("main")
        assert main is not None
        created = neon_client.create_branch(name, parent_id=main.id)
        made.append(created.branch.id)
        neon_client.wait_for_operations(created.operations)
        deadline = time.monotonic() + 30
        while neon_client.get_branch(created.branch.id).current_state != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        url = neon_client.connection_uri(created.branch.id, "neondb", "neondb_owner")
        if ini is not None and revision is not None:
            upgrade_to(ini, url, revision)
        with psycopg.connect(url) as conn:
            for i in range(rows):
                conn.execute("INSERT INTO items (name, qty) VALUES (%s, %s)", (f"item {i}", i))
            if stamp is not None:
                conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
                conn.execute("INSERT INTO alembic_version VALUES (%s)", (stamp,))
        return name

    yield make
    for branch_id in made:
        neon_client.wait_for_operations(neon_client.delete_branch(branch_id))


# -- a clean history passes ----------------------------------------------------------------------


def test_sample_app_passes(
    project: Path, neon_client: NeonClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "step-summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    result, report = nf_json()

    assert result.exit_code == 0, result.stderr
    assert report["passed"] is True and report["exit_code"] == 0 and report["failure"] is None
    assert [r["revision"] for r in report["revisions"]] == ["0001", "0002"]
    assert all(r["status"] == "applied" and r["seconds"] is not None for r in report["revisions"])
    assert report["revisions"][1]["file"].endswith("0002_create_notes.py")
    assert report["head"] == "0002"
    assert report["base"]["name"] == "main"
    assert report["drift"] == []
    assert report["round_trip"]["status"] == "passed"
    assert report["branch"]["deleted"] is True and report["branch"]["name"].startswith("check-")
    assert "CREATE TABLE public.notes" in report["schema_diff"]
    assert "alembic_version" not in report["schema_diff"]
    assert report["lint"] and all(f["severity"] == "warning" for f in report["lint"])
    assert {f["revision"] for f in report["lint"]} <= {"0001", "0002"}
    assert all(f["severity"] == "warning" for f in report["findings"])
    # people get the summary on stderr, CI gets Markdown appended to the step summary
    assert "0001" in result.stderr and "0002" in result.stderr
    assert "✓ check passed" in result.stderr
    text = summary.read_text()
    assert text.startswith("# earlier step\n")
    assert "✅ neonflow check passed" in text and "`0002`" in text


def test_markdown_report_to_a_file(project: Path) -> None:
    result = nf("check", "--format", "markdown", "--output", "report.md")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    text = (project / "report.md").read_text()
    assert text.startswith("### ✅ neonflow check passed")
    assert "| ✅ | `0001` |" in text and "| ✅ | `0002` |" in text
    assert "Schema diff against the base" in text


def test_base_already_at_head_still_checks_drift(
    project: Path, local_neon: LocalNeonInfo, make_base: MakeBase
) -> None:
    ini = use_set(project, local_neon, "drift")
    base = make_base(ini, "0001")

    result, report = nf_json("--base", base)

    assert result.exit_code == DriftDetected.exit_code == 11, result.stderr
    assert report["revisions"] == []
    assert "sku" in "\n".join(report["drift"])


# -- each kind of failure, with its exit code -----------------------------------------------------


def test_not_null_column_on_a_table_with_rows_fails_on_the_branch(
    project: Path, local_neon: LocalNeonInfo, make_base: MakeBase
) -> None:
    ini = use_set(project, local_neon, "notnull")
    base = make_base(ini, "0001", rows=3)

    result, report = nf_json("--base", base)

    assert result.exit_code == MigrationFailed.exit_code == 10, result.stderr
    assert report["failure"] == "migration"
    assert report["base"]["revision"] == ["0001"]
    [rev] = report["revisions"]
    assert rev["revision"] == "0002" and rev["status"] == "failed"
    assert rev["file"].endswith("0002_add_price.py")
    assert "contains null values" in rev["error"]["message"]
    assert rev["error"]["sqlstate"] == "23502"
    assert "ALTER TABLE items ADD COLUMN price" in rev["error"]["statement"]
    assert report["round_trip"]["status"] == "skipped"
    failed = [f for f in report["findings"] if f["kind"] == "migration"]
    assert failed[0]["revision"] == "0002" and failed[0]["file"].endswith("0002_add_price.py")
    # squawk saw it coming as well: adding-required-field is in the default fail_on
    assert any(
        f["rule"] == "adding-required-field" and f["severity"] == "error" for f in report["lint"]
    )
    assert "0002" in result.stderr and "contains null values" in result.stderr
    assert "ALTER TABLE items ADD COLUMN price" in result.stderr


def test_drifted_models_fail_alembic_check(project: Path, local_neon: LocalNeonInfo) -> None:
    use_set(project, local_neon, "drift")

    result, report = nf_json()

    assert result.exit_code == 11, result.stderr
    assert report["failure"] == "drift"
    assert report["revisions"][0]["status"] == "applied"
    assert any("sku" in line for line in report["drift"])
    assert "alembic check" in result.stderr


def test_irreversible_downgrade_is_reported(project: Path, local_neon: LocalNeonInfo) -> None:
    use_set(project, local_neon, "irreversible")

    result, report = nf_json()

    assert result.exit_code == NotReversible.exit_code == 12, result.stderr
    assert report["failure"] == "irreversible"
    assert report["round_trip"]["status"] == "failed"
    assert report["round_trip"]["failed_revision"] == "0002"
    [finding] = [f for f in report["findings"] if f["kind"] == "irreversible"]
    assert finding["revision"] == "0002" and finding["file"].endswith("0002_add_note.py")
    assert (
        "NotImplementedError" in finding["message"] or "cannot be taken back" in finding["message"]
    )


def test_two_heads_are_refused(
    project: Path, local_neon: LocalNeonInfo, neon_client: NeonClient
) -> None:
    use_set(project, local_neon, "two_heads")
    before = {b.id for b in neon_client.list_branches()}

    result, report = nf_json()

    assert result.exit_code == CheckRefused.exit_code == 2, result.stderr
    assert report["failure"] == "refused"
    assert "2 heads" in report["summary"] and "merge" in report["summary"]
    assert report["branch"] is None
    assert {b.id for b in neon_client.list_branches()} == before
    assert "2 heads" in result.stderr


def test_base_that_moved_on_is_refused(
    project: Path, local_neon: LocalNeonInfo, make_base: MakeBase
) -> None:
    use_set(project, local_neon, "notnull")
    base = make_base(stamp="9999")

    result, report = nf_json("--base", base)

    assert result.exit_code == 2, result.stderr
    assert "9999" in report["summary"] and "moved on" in report["summary"]
    assert "rebase" in report["summary"]


# -- what each revision does ----------------------------------------------------------------------


def test_locks_rewrites_and_rows_are_recorded(
    project: Path, local_neon: LocalNeonInfo, make_base: MakeBase
) -> None:
    ini = use_set(project, local_neon, "busy")
    base = make_base(ini, "0001", rows=4)

    result, report = nf_json("--base", base)

    assert result.exit_code == 0, result.stderr
    [rev] = report["revisions"]
    assert rev["revision"] == "0002" and rev["status"] == "applied"
    assert {
        "relation": "items",
        "mode": "AccessExclusiveLock",
        "blocks": "reads and writes",
        "existing": True,
    } in rev["locks"]
    assert rev["rewritten"] == ["items"]
    [rows] = rev["rows"]
    assert rows["table"] == "items" and rows["updated"] == 4 and rows["deleted"] == 0
    # the index is not built CONCURRENTLY: a warning by default
    [index] = [f for f in report["lint"] if f["rule"] == "require-concurrent-index-creation"]
    assert index["severity"] == "warning" and index["revision"] == "0002"
    assert index["file"].endswith("0002_stamp_items.py")
    assert "CREATE INDEX ix_items_name" in index["sql"]
    assert "items AccessExclusiveLock (blocks reads and writes)" in result.stderr
    assert "rewrites items" in result.stderr


def test_lint_rule_fails_when_configured(
    project: Path, local_neon: LocalNeonInfo, make_base: MakeBase
) -> None:
    ini = use_set(
        project, local_neon, "busy", '[check]\nfail_on = ["require-concurrent-index-creation"]\n'
    )
    base = make_base(ini, "0001")

    result, report = nf_json("--base", base)

    assert result.exit_code == LintFailed.exit_code == 13, result.stderr
    assert report["failure"] == "lint"
    [error] = [f for f in report["findings"] if f["severity"] == "error"]
    assert error["rule"] == "require-concurrent-index-creation" and error["revision"] == "0002"


def test_lint_rule_ignored_when_configured(
    project: Path, local_neon: LocalNeonInfo, make_base: MakeBase
) -> None:
    ini = use_set(
        project, local_neon, "busy", '[check]\nignore = ["require-concurrent-index-creation"]\n'
    )
    base = make_base(ini, "0001")

    result, report = nf_json("--base", base)

    assert result.exit_code == 0, result.stderr
    assert "require-concurrent-index-creation" not in {f["rule"] for f in report["lint"]}


def test_unknown_lint_rule_is_a_config_error(
    project: Path, local_neon: LocalNeonInfo, neon_client: NeonClient
) -> None:
    use_set(project, local_neon, "busy", '[check]\nfail_on = ["no-such-rule"]\n')
    before = {b.id for b in neon_client.list_branches()}

    result = nf("check")

    assert result.exit_code == 2
    assert "no-such-rule" in result.stderr
    assert {b.id for b in neon_client.list_branches()} == before


# -- the branch: named, annotated, always torn down -----------------------------------------------


def test_keep_leaves_a_named_annotated_branch(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_HEAD_REF", "feature/login page")

    result, report = nf_json("--keep")

    name = report["branch"]["name"]
    try:
        assert result.exit_code == 0, result.stderr
        assert (
            name.startswith("check-feature/login page-")
            and len(name) == len("check-feature/login page-") + 6
        )
        assert report["branch"]["kept"] is True and report["branch"]["deleted"] is False
        branch = neon_client.find_branch(name)
        assert branch is not None
        assert branch.annotations["neonflow"] == "true"
        assert branch.annotations["neonflow-purpose"] == "check"
        assert branch.annotations["neonflow-git-branch"] == "feature/login page"
        assert branch.expires_at is not None
        assert "keeping branch" in result.stderr
    finally:
        found = neon_client.find_branch(name)
        if found is not None:
            neon_client.wait_for_operations(neon_client.delete_branch(found.id))


def test_a_crash_midway_deletes_the_branch(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def boom(self: Runner) -> list[str]:
        seen.extend(check_branches(neon_client))
        raise RuntimeError("boom")

    monkeypatch.setattr(Runner, "check", boom)

    result = nf("check")

    assert result.exit_code == 1
    assert "unexpected RuntimeError: boom" in result.stderr
    assert len(seen) == 1  # the branch existed while the check ran ...
    assert check_branches(neon_client) == []  # ... and is gone


def test_ctrl_c_midway_deletes_the_branch(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "downgrade", interrupt)

    result = nf("check")

    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert "deleting branch check-" in result.stderr


def test_ctrl_c_right_after_the_create_deletes_the_branch(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = NeonClient.create_branch

    def create_then_interrupt(self: NeonClient, *args: Any, **kwargs: Any) -> Any:
        create(self, *args, **kwargs)
        raise KeyboardInterrupt  # the answer is lost: only the name tells which branch it was

    monkeypatch.setattr(NeonClient, "create_branch", create_then_interrupt)

    result = nf("check")

    assert result.exit_code == 130


def test_sigterm_while_a_revision_runs_deletes_the_branch(
    project: Path, local_neon: LocalNeonInfo, neon_client: NeonClient
) -> None:
    use_set(project, local_neon, "slow")  # 0002 sleeps 30 s in PostgreSQL
    neonflow = Path(sys.executable).parent / "neonflow"
    with subprocess.Popen(
        [str(neonflow), "check"], cwd=project, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # wait until the slow revision runs
                if line.startswith("upgrading"):
                    break
            time.sleep(0.3)
            assert len(check_branches(neon_client)) == 1
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest = proc.stderr.read()
            assert proc.wait(timeout=30) == 130, rest
        finally:
            if proc.poll() is None:
                proc.kill()
    assert time.monotonic() - started < 10  # the sleeping statement was cancelled
    assert "deleting branch check-" in rest and "interrupted" in rest


def test_a_failed_teardown_is_a_warning(
    project: Path, neon_client: NeonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    delete = NeonClient.delete_branch
    names: list[str] = []

    def refuse(self: NeonClient, branch_id: str) -> Any:
        names.append(branch_id)
        raise NeonAPIError("the API is down", status=503)

    monkeypatch.setattr(NeonClient, "delete_branch", refuse)

    result, report = nf_json()

    monkeypatch.setattr(NeonClient, "delete_branch", delete)
    for branch_id in names:
        neon_client.wait_for_operations(neon_client.delete_branch(branch_id))
    assert result.exit_code == 0, result.stderr
    [warning] = [f for f in report["findings"] if f["kind"] == "teardown"]
    assert "neonflow branch delete check-" in warning["message"]
    assert report["branch"]["deleted"] is False
