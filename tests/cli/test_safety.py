"""The rules that never bend, under the conditions that used to bend them."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from neonflow.cli.main import app
from neonflow.config import load_settings
from neonflow.local import service
from neonflow.local.paths import StatePaths
from neonflow.local.service import LocalNeonInfo
from neonflow.migrations.probe import read_heads
from neonflow.neon import NeonClient
from neonflow.urls import mask_password
from tests.conftest import make_client, write_project


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def unique(prefix: str = "safe") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_stale_pid_file_never_gets_another_process_killed(tmp_path: Path):
    settings = load_settings(config_file=None, root=tmp_path)
    paths = StatePaths(settings.state_dir)
    paths.root.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        paths.pid.write_text(str(bystander.pid))  # a crash left it; the pid was reused since

        assert service.down(settings) is False
        info, started = service.up(settings)
        try:
            assert started is True and info.pid != bystander.pid
            assert bystander.poll() is None  # still alive
        finally:
            service.down(settings)
    finally:
        bystander.kill()
        bystander.wait()


def test_nothing_is_created_when_the_env_file_or_alembic_cannot_work(
    project: Path, neon_client: NeonClient
):
    name = unique()
    (project / ".env").mkdir()
    result = nf("branch", "start", name)
    assert result.exit_code == 2 and "not a regular file" in result.stderr
    (project / ".env").rmdir()

    toml = project / "neonflow.toml"
    toml.write_text(toml.read_text().replace("alembic.ini", "missing.ini"))
    result = nf("branch", "start", name)
    assert result.exit_code == 2 and "Alembic configuration not found" in result.stderr

    assert neon_client.find_branch(name) is None


def test_a_failed_create_leaves_no_orphan(tmp_path: Path, fresh_neon: LocalNeonInfo, monkeypatch):
    headers = {"Authorization": f"Bearer {fresh_neon.token}"}
    faults = httpx.put(
        f"{fresh_neon.api_host}/_local/faults", json={"rate_failed_operation": 1}, headers=headers
    )
    assert faults.status_code == 200
    monkeypatch.chdir(write_project(tmp_path / "p", fresh_neon))

    result = nf("branch", "start", "doomed")

    assert result.exit_code == 4 and "injected failure" in result.stderr
    with make_client(fresh_neon) as client:
        assert client.find_branch("doomed") is None
    assert not (tmp_path / "p" / ".env").exists()


def test_promote_refuses_protected_branches_and_parents_before_migrating(
    tmp_path: Path, fresh_neon: LocalNeonInfo, monkeypatch
):
    monkeypatch.chdir(write_project(tmp_path / "p", fresh_neon))
    with make_client(fresh_neon) as client:
        protected = client.create_branch("keep-me", protected=True)
        parent = client.create_branch("has-kids")
        client.wait_for_operations([*protected.operations, *parent.operations])
        child = client.create_branch("kid", parent_id=parent.branch.id)
        client.wait_for_operations(child.operations)
        main = client.find_branch("main")
        assert main is not None
        main_url = client.connection_uri(main.id, "neondb", "neondb_owner")

        for name, reason in (("keep-me", "protected branch"), ("has-kids", "child branches")):
            result = nf("branch", "promote", name, "--yes")
            assert result.exit_code == 3 and reason in result.stderr
            assert client.find_branch(name) is not None
        assert read_heads(main_url) == ()  # the parent was not touched


def test_a_branch_without_a_compute_does_not_break_list_status_or_delete(
    project: Path, neon_client: NeonClient
):
    bare = neon_client.create_branch(unique("nocompute"), endpoint=False)
    neon_client.wait_for_operations(bare.operations)
    assert nf("branch", "start", unique()).exit_code == 0

    listed = nf("branch", "list", "--json")
    status = nf("branch", "status", "--json")
    deleted = nf("branch", "delete", bare.branch.name, "--yes")

    assert listed.exit_code == 0 and bare.branch.name in listed.stdout
    assert status.exit_code == 0
    assert deleted.exit_code == 0 and neon_client.find_branch(bare.branch.name) is None


def test_names_resolve_with_the_prefix_first(project: Path, neon_client: NeonClient):
    raw = unique("dup")
    plain = neon_client.create_branch(raw)
    neon_client.wait_for_operations(plain.operations)
    refused = nf("branch", "start", "br-looks-like-an-id")
    assert refused.exit_code == 2 and "would read as a Neon id" in refused.stderr
    toml = project / "neonflow.toml"
    toml.write_text(toml.read_text() + '\n[branch]\nprefix = "preview-"\n')

    assert nf("branch", "start", raw).exit_code == 0
    switched = nf("branch", "switch", raw, "--json")

    assert switched.exit_code == 0
    assert '"branch": "preview-' + raw in switched.stdout


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("host=h password=hunter2 dbname=x", "host=h password=**** dbname=x"),
        ("postgresql://h/db?password=hunter2&a=1", "postgresql://h/db?password=****&a=1"),
        ("postgresql://u:hunter2@[::1/db", "postgresql://u:****@[::1/db"),
        ("postgresql://u:hun#ter?2@h/db", "postgresql://u:****@h/db"),
    ],
)
def test_passwords_are_masked_in_every_url_shape(secret: str, shown: str):
    assert mask_password(secret) == shown


def test_status_survives_a_malformed_url_in_the_env_file(project: Path):
    (project / ".env").write_text("DATABASE_URL=postgresql://u:hunter2@h:99999/db\n")

    result = nf("branch", "status")

    assert result.exit_code in (0, 7)
    assert "hunter2" not in result.stdout + result.stderr
    assert "unexpected" not in result.stderr


def test_the_parent_is_never_a_prefixed_feature_branch(project: Path, neon_client: NeonClient):
    toml = project / "neonflow.toml"
    toml.write_text(toml.read_text() + '\n[branch]\nprefix = "preview-"\n')
    decoy = neon_client.create_branch("preview-main")  # a feature branch someone called "main"
    neon_client.wait_for_operations(decoy.operations)
    try:
        result = nf("branch", "start", unique(), "--json")
        assert result.exit_code == 0, result.stderr
        assert '"parent": "main"' in result.stdout
    finally:
        neon_client.wait_for_operations(neon_client.delete_branch(decoy.branch.id))


def test_prune_judges_a_local_branch_by_its_own_commits(tmp_path: Path):
    from neonflow.workflow.names import git_merged_or_gone

    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]

    def run(cwd: Path, *args: str) -> None:
        subprocess.run([*git, *args], cwd=cwd, check=True, capture_output=True)

    origin, clone = tmp_path / "origin", tmp_path / "clone"
    origin.mkdir()
    run(origin, "init", "-q", "-b", "main")
    run(origin, "commit", "-q", "--allow-empty", "-m", "base")
    run(origin, "checkout", "-q", "-b", "feature")
    run(origin, "commit", "-q", "--allow-empty", "-m", "one")
    run(origin, "checkout", "-q", "main")
    run(origin, "merge", "-q", "feature")
    run(tmp_path, "clone", "-q", str(origin), str(clone))
    assert git_merged_or_gone(clone, "feature") is True  # only origin has it: merged there

    run(clone, "checkout", "-q", "-b", "feature", "origin/feature")
    run(clone, "commit", "-q", "--allow-empty", "-m", "unpushed work")
    run(clone, "checkout", "-q", "main")
    assert git_merged_or_gone(clone, "feature") is False  # local work not merged
    assert git_merged_or_gone(clone, "never-existed") is True


def test_authentication_comes_before_anything_about_the_project(local_neon: LocalNeonInfo):
    for path in ("/projects/no-such-project/branches", f"/projects/{local_neon.project_id}"):
        response = httpx.get(local_neon.api_host + path)
        assert response.status_code == 401
        assert response.json()["request_id"]
