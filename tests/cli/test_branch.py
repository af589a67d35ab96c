"""The branch lifecycle end to end through the CLI, against the local Neon and real Alembic."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from neonflow import envfile
from neonflow.cli.main import app
from neonflow.local.service import LocalNeonInfo
from neonflow.migrations.probe import read_heads
from neonflow.neon import NeonClient
from neonflow.urls import same_database
from sample_app import create_app
from sample_app.models import db
from tests.conftest import REPO, make_client, write_project


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def unique(prefix: str = "feat") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def env_url(project: Path) -> str:
    url = envfile.read_var(project / ".env", "DATABASE_URL")
    assert url is not None
    return url


def main_url(client: NeonClient) -> str:
    main = client.find_branch("main")
    assert main is not None
    return client.connection_uri(main.id, "neondb", "neondb_owner")


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


# -- start -------------------------------------------------------------------------------------


def test_start_creates_branch_points_app_and_migrates(project: Path, neon_client: NeonClient):
    env = project / ".env"
    env.write_text("# settings for the app\nSECRET_KEY=abc\nDATABASE_URL=old\nexport OTHER='x y'\n")
    name = unique()

    result = nf("branch", "start", name, "--json")

    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["created"] is True
    assert payload["branch"] == name
    assert payload["revision"] == ["0002"]
    assert "****" in payload["database_url"]
    lines = env.read_text().splitlines()
    assert lines[0] == "# settings for the app"
    assert lines[1] == "SECRET_KEY=abc"
    assert lines[2].startswith("DATABASE_URL=postgresql://")
    assert lines[3] == "export OTHER='x y'"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    url = env_url(project)
    password = url.split(":")[2].split("@")[0]
    assert password not in result.stdout + result.stderr
    branch = neon_client.find_branch(name)
    assert branch is not None and branch.annotations["neonflow"] == "true"
    assert branch.expires_at is not None
    # The branch has the schema; its parent does not.
    assert {"users", "notes"} <= tables(url)
    assert "users" not in tables(main_url(neon_client))


def test_the_app_reads_and_writes_through_the_branch(project: Path):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0
    flask_app = create_app({"ENV_FILE": project / ".env", "TESTING": True})
    client = flask_app.test_client()

    created = client.post("/users", json={"username": "ada", "email": "ada@example.com"})
    assert created.status_code == 201
    assert client.get(f"/users/{created.json['id']}").json["username"] == "ada"
    assert client.get("/health").json["alembic_revision"] == "0002"
    with psycopg.connect(env_url(project)) as conn:
        assert conn.execute("SELECT username FROM users").fetchall() == [("ada",)]
    with flask_app.app_context():
        db.engine.dispose()


def test_start_twice_reuses_the_branch(project: Path, neon_client: NeonClient):
    name = unique()
    first = nf("branch", "start", name, "--json")
    second = nf("branch", "start", name, "--json")

    assert first.exit_code == second.exit_code == 0
    assert json.loads(second.stdout)["created"] is False
    assert "reusing branch" in second.stderr
    assert json.loads(first.stdout)["branch_id"] == json.loads(second.stdout)["branch_id"]
    assert [b.name for b in neon_client.list_branches(search=name)] == [name]


def test_start_takes_the_git_branch_as_it_is(project: Path, neon_client: NeonClient):
    suffix = uuid.uuid4().hex[:6]
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", f"feature/login_{suffix}"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=project, check=True)

    result = nf("branch", "start", "--json")

    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["branch"] == f"feature/login_{suffix}"
    assert payload["renamed_from"] is None
    branch = neon_client.find_branch(payload["branch"])
    assert branch is not None
    assert branch.annotations["neonflow-git-branch"] == f"feature/login_{suffix}"
    assert len(branch.annotations["neonflow-git-commit"]) == 12


@pytest.mark.parametrize("bad", ["", "   ", "x" * 300, "bad\x07name", "new\nline"])
def test_invalid_names_are_refused_without_creating_anything(
    project: Path, neon_client: NeonClient, bad: str
):
    before = {b.id for b in neon_client.list_branches()}

    result = nf("branch", "start", bad)

    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert {b.id for b in neon_client.list_branches()} == before
    assert not (project / ".env").exists()


def test_migration_failure_keeps_the_branch_and_names_the_revision(
    tmp_path: Path, local_neon: LocalNeonInfo, neon_client: NeonClient, monkeypatch
):
    migrations_copy = tmp_path / "app"
    shutil.copytree(REPO / "sample_app" / "migrations", migrations_copy / "migrations")
    shutil.copy(REPO / "sample_app" / "alembic.ini", migrations_copy / "alembic.ini")
    broken = migrations_copy / "migrations" / "versions" / "0003_broken.py"
    broken.write_text(
        '"""broken"""\nfrom alembic import op\n\nrevision = "0003"\ndown_revision = "0002"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n"
        '    op.execute("SELECT 1/0")\n\n\ndef downgrade():\n    pass\n'
    )
    ini = migrations_copy / "alembic.ini"
    ini.write_text(ini.read_text().replace("%(here)s/..", str(REPO)))
    project = write_project(tmp_path / "p", local_neon)
    toml = project / "neonflow.toml"
    toml.write_text(toml.read_text().replace(str(REPO / "sample_app" / "alembic.ini"), str(ini)))
    monkeypatch.chdir(project)
    name = unique()

    failed = nf("branch", "start", name)

    assert failed.exit_code == 8
    assert "revision 0003 (0003_broken.py) upgrade failed" in failed.stderr
    assert "division by zero" in failed.stderr
    assert f"branch {name} is kept" in failed.stderr
    branch = neon_client.find_branch(name)
    assert branch is not None
    assert same_database(
        env_url(project), neon_client.connection_uri(branch.id, "neondb", "neondb_owner")
    )
    # The upgrade runs in one transaction: the branch is left as it was before it.
    assert read_heads(env_url(project)) == ()

    broken.write_text(broken.read_text().replace("SELECT 1/0", "SELECT 1"))
    fixed = nf("branch", "start", name, "--json")
    assert fixed.exit_code == 0, fixed.stderr
    assert json.loads(fixed.stdout)["revision"] == ["0003"]


# -- switch, status, list, diff, connection-string ---------------------------------------------


def test_switch_and_status_follow_the_env_file(project: Path):
    a, b = unique("a"), unique("b")
    assert nf("branch", "start", a).exit_code == 0
    assert nf("branch", "start", b).exit_code == 0

    assert nf("branch", "switch", a).exit_code == 0
    status = json.loads(nf("branch", "status", "--json").stdout)

    assert status["branch"] == a
    assert status["parent"] == "main"
    assert status["at_head"] is True and status["revision"] == ["0002"]
    assert "****" in status["database_url"]
    human = nf("branch", "status")
    assert f"branch:   {a}" in human.stderr and "(at head)" in human.stderr


def test_list_marks_the_current_branch_with_its_revision(project: Path):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0

    rows = {r["name"]: r for r in json.loads(nf("branch", "list", "--json").stdout)}

    assert rows[name]["current"] is True and rows[name]["revision"] == ["0002"]
    assert rows[name]["parent"] == "main" and rows[name]["neonflow"] is True
    assert rows["main"]["default"] is True and rows["main"]["current"] is False
    table = nf("branch", "list").stdout
    assert f"* {name}" in table


def test_diff_shows_the_branch_schema_against_its_parent(project: Path):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0

    result = nf("branch", "diff", name)

    assert result.exit_code == 0
    assert "+CREATE TABLE public.users (" in result.stdout
    assert "+CREATE TABLE public.notes (" in result.stdout
    assert json.loads(nf("branch", "diff", name, "--json").stdout)["base"] == "main"


def test_connection_string_prints_a_working_uri(project: Path):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0

    result = nf("connection-string", name)

    assert result.exit_code == 0
    uri = result.stdout.strip()
    assert same_database(uri, env_url(project))
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_unknown_branch_is_exit_6(project: Path):
    for args in (
        ["branch", "switch", "nope"],
        ["branch", "diff", "nope"],
        ["connection-string", "x"],
    ):
        result = nf(*args)
        assert result.exit_code == 6
        assert "not found" in result.stderr


# -- reset, delete -----------------------------------------------------------------------------


def test_reset_replaces_the_data_with_the_parent_and_migrates(project: Path):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0
    url = env_url(project)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO users (username, email) VALUES ('x', 'x@example.com')")

    result = nf("branch", "reset", name, "--yes", "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["revision"] == ["0002"]
    assert env_url(project) == url  # reset keeps the connection details
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_delete_twice_succeeds_and_points_the_app_back_at_the_parent(
    project: Path, neon_client: NeonClient
):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0

    first = nf("branch", "delete", name, "--yes", "--json")
    second = nf("branch", "delete", name, "--yes")

    assert first.exit_code == 0 and json.loads(first.stdout)["app_repointed_to"] == "main"
    assert second.exit_code == 0 and "already deleted" in second.stderr
    assert neon_client.find_branch(name) is None
    assert same_database(env_url(project), main_url(neon_client))


def test_delete_refusals(project: Path, neon_client: NeonClient):
    protected = neon_client.create_branch(unique("prot"), protected=True)
    parent = neon_client.create_branch(unique("parent"))
    neon_client.wait_for_operations([*protected.operations, *parent.operations])
    child = neon_client.create_branch(unique("child"), parent_id=parent.branch.id)
    neon_client.wait_for_operations(child.operations)

    cases = {
        "main": "default branch",
        protected.branch.name: "protected branch",
        parent.branch.name: "child branches",
    }
    for name, reason in cases.items():
        result = nf("branch", "delete", name, "--yes")
        assert result.exit_code == 3, (name, result.stderr)
        assert reason in result.stderr
        assert neon_client.find_branch(name) is not None
    reset_main = nf("branch", "reset", "main", "--yes")
    assert reset_main.exit_code == 3 and "default branch" in reset_main.stderr
    for name in ("main", protected.branch.name):
        start = nf("branch", "start", name)
        assert start.exit_code == 3 and "refusing to start" in start.stderr
        assert read_heads(main_url(neon_client)) == ()  # main was not migrated


def test_destructive_commands_need_a_yes_when_nobody_can_answer(
    project: Path, neon_client: NeonClient
):
    name = unique()
    assert nf("branch", "start", name).exit_code == 0

    result = nf("branch", "delete", name)

    assert result.exit_code == 2 and "--yes" in result.stderr
    assert neon_client.find_branch(name) is not None


# -- configuration and backend errors ----------------------------------------------------------


def test_broken_configuration_is_one_line_naming_the_file(project: Path):
    (project / "neonflow.toml").write_text("[neon\nparent = 'x'\n")
    broken = nf("branch", "list")
    assert broken.exit_code == 2 and "neonflow.toml: not valid TOML" in broken.stderr

    (project / "neonflow.toml").write_text("[neon]\nparnet = 'x'\n")
    unknown = nf("branch", "list")
    assert unknown.exit_code == 2 and "unknown key 'neon.parnet'" in unknown.stderr

    (project / "neonflow.toml").write_text("[branch]\nexpires_in = 'soon'\n")
    bad = nf("branch", "list")
    assert bad.exit_code == 2 and "branch.expires_in" in bad.stderr


def test_cloud_without_a_key_is_exit_5(project: Path, monkeypatch):
    monkeypatch.setenv("NEONFLOW_NEON__API_HOST", "https://console.neon.tech/api/v2")

    result = nf("branch", "list")

    assert result.exit_code == 5 and "NEON_API_KEY is not set" in result.stderr


def test_unreachable_api_is_exit_7_and_never_prints_the_key(project: Path, monkeypatch):
    monkeypatch.setenv("NEONFLOW_NEON__API_HOST", "http://127.0.0.1:9/api/v2")
    monkeypatch.setenv("NEONFLOW_NEON__PROJECT_ID", "p")
    monkeypatch.setenv("NEON_API_KEY", "napi_supersecret_key")

    result = nf("branch", "start", "x")

    assert result.exit_code == 7
    assert result.stderr.count("\n") == 1
    assert "napi_supersecret_key" not in result.stdout + result.stderr


def test_wrong_key_is_exit_5(project: Path, local_neon: LocalNeonInfo, monkeypatch):
    monkeypatch.setenv("NEONFLOW_NEON__API_HOST", local_neon.api_host)
    monkeypatch.setenv("NEONFLOW_NEON__PROJECT_ID", local_neon.project_id)
    monkeypatch.setenv("NEON_API_KEY", "wrong-token")

    result = nf("branch", "list")

    assert result.exit_code == 5
    assert "wrong-token" not in result.stderr


# -- promote and prune (each on a local Neon of its own: they change the parent) -----------------


@pytest.fixture
def own_project(tmp_path: Path, fresh_neon: LocalNeonInfo, monkeypatch) -> Path:
    root = write_project(tmp_path / "own", fresh_neon)
    monkeypatch.chdir(root)
    for name in list(os.environ):
        if name.startswith("NEONFLOW_") or name == "NEON_API_KEY":
            monkeypatch.delenv(name)
    return root


def test_promote_rehearses_then_migrates_the_parent(own_project: Path, fresh_neon: LocalNeonInfo):
    client = make_client(fresh_neon)
    with psycopg.connect(main_url(client)) as conn:
        conn.execute("CREATE TABLE keep_me (id int)")
        conn.execute("INSERT INTO keep_me VALUES (42)")
    assert nf("branch", "start", "feat").exit_code == 0

    result = nf("branch", "promote", "feat", "--yes", "--json")

    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["parent_revision_before"] == [] and payload["parent_revision_after"] == ["0002"]
    assert payload["rehearsal_seconds"] > 0 and payload["deleted"] is True
    assert payload["app_repointed"] is True
    assert read_heads(main_url(client)) == ("0002",)
    with psycopg.connect(main_url(client)) as conn:
        assert conn.execute("SELECT id FROM keep_me").fetchall() == [(42,)]
    names = {b.name for b in client.list_branches()}
    assert names == {"main"}  # the feature branch and the rehearsal are gone
    assert same_database(env_url(own_project), main_url(client))


def test_promote_refuses_when_someone_else_migrated_the_parent(
    own_project: Path, fresh_neon: LocalNeonInfo
):
    client = make_client(fresh_neon)
    assert nf("branch", "start", "feat").exit_code == 0
    with psycopg.connect(main_url(client)) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('ffff0000')")

    result = nf("branch", "promote", "feat", "--yes")

    assert result.exit_code == 3
    assert "ffff0000" in result.stderr and "someone else migrated the parent" in result.stderr
    assert client.find_branch("feat") is not None


def test_promote_set_default_clears_the_expiration(own_project: Path, fresh_neon: LocalNeonInfo):
    client = make_client(fresh_neon)
    assert nf("branch", "start", "feat").exit_code == 0
    before = client.find_branch("feat")
    assert before is not None and before.expires_at is not None

    result = nf("branch", "promote", "feat", "--set-default", "--yes")

    assert result.exit_code == 0, result.stderr
    after = client.get_branch(before.id)
    assert after.default is True and after.expires_at is None
    main = client.find_branch("main")
    assert main is not None and main.default is False


def test_prune_deletes_only_neonflows_stale_branches(own_project: Path, fresh_neon: LocalNeonInfo):
    client = make_client(fresh_neon)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    run = lambda *a: subprocess.run([*git, *a], cwd=own_project, check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("commit", "-q", "--allow-empty", "-m", "base")
    run("checkout", "-q", "-b", "merged-feature")
    run("commit", "-q", "--allow-empty", "-m", "work")
    assert nf("branch", "start").exit_code == 0
    run("checkout", "-q", "main")
    run("checkout", "-q", "-b", "open-feature")
    run("commit", "-q", "--allow-empty", "-m", "wip")
    assert nf("branch", "start").exit_code == 0
    run("checkout", "-q", "main")
    run("merge", "-q", "merged-feature")
    foreign = client.create_branch("not-ours")
    client.wait_for_operations(foreign.operations)

    preview = json.loads(nf("branch", "prune", "--merged", "--dry-run", "--json").stdout)
    assert preview["deleted"] == ["merged-feature"]
    assert {b.name for b in client.list_branches()} >= {"merged-feature", "open-feature"}

    assert nf("branch", "prune", "--merged", "--yes").exit_code == 0
    assert {b.name for b in client.list_branches()} == {"main", "open-feature", "not-ours"}

    aged = json.loads(nf("branch", "prune", "--older-than", "0s", "--yes", "--json").stdout)
    assert aged["deleted"] == ["open-feature"]
    assert {b.name for b in client.list_branches()} == {"main", "not-ours"}
    assert nf("branch", "prune").exit_code == 2


def test_start_from_another_parent(project: Path, neon_client: NeonClient):
    base = neon_client.create_branch(unique("base"))  # no expiration: it may have children
    neon_client.wait_for_operations(base.operations)
    base_url = neon_client.connection_uri(base.branch.id, "neondb", "neondb_owner")
    with psycopg.connect(base_url) as conn:
        conn.execute("CREATE TABLE seed (v text)")
        conn.execute("INSERT INTO seed VALUES ('from base')")
    name = unique()

    result = nf("branch", "start", name, "--parent", base.branch.name, "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["parent"] == base.branch.name
    with psycopg.connect(env_url(project)) as conn:
        assert conn.execute("SELECT v FROM seed").fetchall() == [("from base",)]
    # Neon does not branch from a branch that expires (every `start` branch does, by default).
    refused = nf("branch", "start", unique(), "--parent", name)
    assert refused.exit_code == 4 and "expiration" in refused.stderr
    assert nf("branch", "start", unique(), "--parent", "nope").exit_code == 6
