"""The pytest plugin, run as a user runs it: ``pytest`` in a process of its own on a local Neon.

The sample app's own suite (sample_app/tests) runs on a branch, alone and under pytest-xdist;
a failing and an interrupted run leave no branch either; without asking, nothing happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from neonflow.local.service import LocalNeonInfo
from tests.conftest import REPO, make_client, write_project

PYTEST = Path(sys.executable).parent / "pytest"


def run_pytest(
    info: LocalNeonInfo, cwd: Path, *args: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NEONFLOW_", "PYTEST_", "NEON_API_KEY")) and k != "DATABASE_URL"
    }
    env["NEONFLOW_LOCAL__STATE_DIR"] = str(info.state_dir)
    return subprocess.run(
        [PYTEST, "-p", "no:cacheprovider", f"--basetemp={tmp}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def branch_names(info: LocalNeonInfo) -> list[str]:
    with make_client(info) as client:
        return sorted(b.name for b in client.list_branches())


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_the_sample_apps_suite_runs_on_a_branch_and_leaves_none(
    fresh_neon: LocalNeonInfo, tmp_path: Path, workers: list[str]
) -> None:
    run = run_pytest(fresh_neon, REPO, "sample_app/tests", "-v", *workers, tmp=tmp_path / "t")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "7 passed" in run.stdout
    if not workers:
        assert "neonflow: tests on branch pytest-" in run.stdout
        assert "(migrated to 0002)" in run.stdout
    else:  # both workers ran tests, each on a branch of its own
        assert "[gw0]" in run.stdout and "[gw1]" in run.stdout
    assert "neondb_owner:" not in run.stdout + run.stderr  # no password shown
    assert branch_names(fresh_neon) == ["main"]
    # The app's env file was not touched: the branch reached the app through the environment.
    assert (
        not (REPO / "sample_app" / ".env").exists()
        or "pytest-" not in (REPO / "sample_app" / ".env").read_text()
    )


FAILING = """
import os

def test_on_the_branch(neon_branch):
    assert os.environ["DATABASE_URL"] == neon_branch.url

def test_fails(neon_branch):
    assert False, "a failing test"
"""

INTERRUPTED = """
def test_interrupted(neon_branch):
    raise KeyboardInterrupt
"""


def test_a_failing_or_interrupted_run_leaves_no_branch(
    fresh_neon: LocalNeonInfo, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "project", fresh_neon)
    (root / "test_failing.py").write_text(FAILING)
    (root / "test_interrupted.py").write_text(INTERRUPTED)
    (root / "pytest.ini").write_text("[pytest]\n")

    # Opted in by the fixture alone: the branch opens when a test first asks for it.
    failed = run_pytest(fresh_neon, root, "test_failing.py", tmp=tmp_path / "t1")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 failed, 1 passed" in failed.stdout
    assert branch_names(fresh_neon) == ["main"]

    interrupted = run_pytest(
        fresh_neon, root, "--neon-branch", "test_interrupted.py", tmp=tmp_path / "t2"
    )
    assert interrupted.returncode == 2, interrupted.stdout + interrupted.stderr
    assert "KeyboardInterrupt" in interrupted.stdout
    assert branch_names(fresh_neon) == ["main"]


def test_a_branch_that_cannot_be_opened_is_one_line(
    fresh_neon: LocalNeonInfo, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "project", fresh_neon, '[neon]\nparent = "nope"\n')
    (root / "test_failing.py").write_text(FAILING)
    (root / "pytest.ini").write_text("[pytest]\nneonflow_branch = true\n")
    run = run_pytest(fresh_neon, root, "test_failing.py", tmp=tmp_path / "t")
    assert run.returncode == 4, run.stdout + run.stderr  # pytest's usage error
    assert "neonflow could not open the run's branch: branch 'nope' not found" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert branch_names(fresh_neon) == ["main"]


COUNTS = """
import os

import psycopg


def test_the_parents_rows(neon_branch):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        (count,) = conn.execute("SELECT count(*) FROM customers").fetchone()
    assert count == int(os.environ["EXPECTED_ROWS"])
"""


@pytest.mark.parametrize(("flag", "rows"), [([], 2), (["--neon-schema-only"], 0)])
def test_the_branch_has_the_parents_data_or_its_schema_only(
    fresh_neon: LocalNeonInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: list[str],
    rows: int,
) -> None:
    with make_client(fresh_neon) as client:
        main = client.find_branch("main")
        assert main is not None
        url = client.connection_uri(main.id, "neondb", "neondb_owner")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE customers (name text)")
        conn.execute("INSERT INTO customers VALUES ('ada'), ('grace')")
    root = write_project(tmp_path / "project", fresh_neon)
    (root / "test_counts.py").write_text(COUNTS)
    (root / "pytest.ini").write_text("[pytest]\nneonflow_branch = true\n")
    monkeypatch.setenv("EXPECTED_ROWS", str(rows))
    run = run_pytest(fresh_neon, root, *flag, "test_counts.py", tmp=tmp_path / "t")
    assert run.returncode == 0, run.stdout + run.stderr
    assert branch_names(fresh_neon) == ["main"]


UNTOUCHED = """
import os

def test_nothing_is_exported():
    assert "DATABASE_URL" not in os.environ
"""


def test_without_asking_nothing_happens(fresh_neon: LocalNeonInfo, tmp_path: Path) -> None:
    root = write_project(tmp_path / "project", fresh_neon)
    (root / "test_plain.py").write_text(UNTOUCHED)
    (root / "pytest.ini").write_text("[pytest]\n")
    run = run_pytest(fresh_neon, root, "test_plain.py", tmp=tmp_path / "t")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "plugins: " in run.stdout and "neonflow-" in run.stdout  # installed, and idle
    assert "neonflow:" not in run.stdout
    with make_client(fresh_neon) as client:
        assert [b.name for b in client.list_branches()] == ["main"]
