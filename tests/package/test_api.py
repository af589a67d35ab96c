"""``import neonflow``: the public surface, and ``neonflow.branch()`` against the local Neon."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import neonflow
from neonflow.local.service import LocalNeonInfo
from tests.conftest import REPO, make_client

HEAD = ("0002",)  # the sample app's migrations


def test_the_exports_agree() -> None:
    assert neonflow.__all__ == sorted(neonflow.__all__)
    assert dir(neonflow) == neonflow.__all__
    for name in neonflow.__all__:
        value = getattr(neonflow, name)
        if name == "__version__":
            continue
        assert value.__name__ == name
        doc = value.__doc__ or ""
        # A dataclass without a docstring gets its signature as one: that is not documentation.
        assert doc.strip() and not doc.startswith(f"{name}("), f"{name} has no docstring"


def test_the_use_cases_are_documented() -> None:
    for cls in (neonflow.Branches, neonflow.Check):
        for name, member in vars(cls).items():
            if not name.startswith("_") and callable(member):
                assert (member.__doc__ or "").strip(), f"{cls.__name__}.{name} has no docstring"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        neonflow.nope  # type: ignore[attr-defined]  # noqa: B018


def test_the_exception_tree() -> None:
    assert issubclass(neonflow.NotFoundError, neonflow.NeonAPIError)
    assert issubclass(neonflow.RefusedError, neonflow.UsageError)
    assert issubclass(neonflow.DriftDetected, neonflow.CheckFailed)
    for name in neonflow.__all__:
        value = getattr(neonflow, name)
        if name.endswith(("Error", "Failed", "Detected", "Reversible", "Refused")):
            assert issubclass(value, neonflow.NeonflowError), name


def test_importing_neonflow_loads_nothing_heavy() -> None:
    # `neonflow --help` imports the package: its surface must load on first use only.
    code = "import sys, neonflow; print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'httpx', 'sqlalchemy', 'neonflow.'))))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def test_branch_is_migrated_and_gone_after_the_block(
    project: Path, local_neon: LocalNeonInfo
) -> None:
    with make_client(local_neon) as client:
        with neonflow.branch("api-ci-1234") as b:
            assert b.name == "api-ci-1234" and b.created and b.parent == "main"
            assert b.revision == HEAD
            assert {"users", "notes", "alembic_version"} <= tables(b.url)
            assert b.env == {"DATABASE_URL": b.url}
            branch = client.get_branch(b.id)
            # A throw-away branch: it expires by itself within a day should this process die.
            assert branch.expires_at is not None
            assert branch.expires_at <= datetime.now(UTC) + timedelta(days=1)
            assert "password" not in repr(b) and b.url.split("@")[0] not in repr(b)
        assert client.find_branch("api-ci-1234") is None
    assert not (project / ".env").exists()  # write_env=False: the app's env file is untouched


def test_branch_is_deleted_when_the_block_fails(project: Path, local_neon: LocalNeonInfo) -> None:
    with pytest.raises(ZeroDivisionError), neonflow.branch("api-fails"):
        1 / 0  # noqa: B018
    with make_client(local_neon) as client:
        assert client.find_branch("api-fails") is None


def test_keep_leaves_the_branch_and_write_env_points_the_app(
    project: Path, local_neon: LocalNeonInfo
) -> None:
    with neonflow.branch("api-kept", keep=True, write_env=True) as b:
        pass
    assert f"DATABASE_URL={b.url}" in (project / ".env").read_text()
    with make_client(local_neon) as client:
        kept = client.find_branch("api-kept")
        assert kept is not None
        assert kept.expires_at is not None and kept.expires_at > datetime.now(UTC) + timedelta(6)
    workflow = neonflow.connect()
    with workflow.client:
        result = workflow.delete("api-kept")
    assert isinstance(result, neonflow.DeleteResult) and result.deleted


def test_branch_reuses_an_existing_branch_and_can_skip_migrating(
    project: Path, local_neon: LocalNeonInfo
) -> None:
    workflow = neonflow.connect()
    with workflow.client:
        started = workflow.start("api-reused", write_env=False)
    assert isinstance(started, neonflow.StartResult) and started.revision == list(HEAD)
    with neonflow.branch("api-reused", migrate=False) as b:
        assert not b.created and b.id == started.branch_id
        assert b.revision == HEAD  # read, not migrated
    with neonflow.branch("api-unmigrated", migrate=False) as b:
        assert b.revision == ()  # main is not migrated
        assert "users" not in tables(b.url)
    with make_client(local_neon) as client:
        assert client.find_branch("api-reused") is None


def test_the_default_branch_is_refused(project: Path) -> None:
    with pytest.raises(neonflow.RefusedError), neonflow.branch("main"):
        pass
    workflow = neonflow.connect()
    with workflow.client:
        assert workflow.client.find_branch("main") is not None


BROKEN = """
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute("SELECT 1 / 0")
"""


def test_a_failed_migration_leaves_no_branch(
    tmp_path: Path, local_neon: LocalNeonInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "broken"
    shutil.copytree(REPO / "tests" / "projects" / "generic", root)
    (root / "alembic" / "versions").mkdir(exist_ok=True)
    (root / "alembic" / "versions" / "0001_fails.py").write_text(BROKEN)
    (root / "neonflow.toml").write_text(
        f'[app]\nenv_file = ".env"\n[local]\nstate_dir = "{local_neon.state_dir}"\n'
    )
    monkeypatch.chdir(root)
    for name in list(os.environ):
        if name.startswith("NEONFLOW_") or name in ("NEON_API_KEY", "DATABASE_URL"):
            monkeypatch.delenv(name)
    with pytest.raises(neonflow.MigrationError, match="division by zero") as failed:
        with neonflow.branch("api-broken"):
            pytest.fail("the block must not run")
    assert "is kept" not in str(failed.value)
    with make_client(local_neon) as client:
        assert client.find_branch("api-broken") is None
