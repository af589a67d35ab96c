"""Other people's projects, unchanged: one per env.py shape, through init, start, check, promote,
delete; and the interlock: an env.py that goes elsewhere is refused before any SQL.

The projects under ``tests/projects/`` are written the way their tools write them (``alembic
init``, ``alembic init -t async``, ``flask db init``, a FastAPI-style settings class); only
``target_metadata`` (and, where the shape says so, where the URL comes from) is changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from typer.testing import CliRunner, Result

from neonflow.cli.main import app
from neonflow.envfile import read_vars
from neonflow.local.service import LocalNeonInfo
from neonflow.migrations.probe import read_heads
from neonflow.neon import NeonClient
from neonflow.urls import mask_password
from tests.conftest import make_client

PROJECTS = Path(__file__).parents[1] / "projects"
REVISIONS = PROJECTS / "_revisions"
BIN = Path(sys.executable).parent

# shape -> the folder holding env.py, relative to the project
SHAPES = {
    "generic": "alembic",
    "async_psycopg": "alembic",
    "async_asyncpg": "alembic",
    "environ": "alembic",
    "settings": "backend/app/alembic",
    "flask_migrate": "migrations",
    "ini_url": "alembic",
}
# Shapes that are another one with a URL written into alembic.ini, as their users write it.
VARIANTS = {
    "async_asyncpg": ("async_psycopg", "postgresql+asyncpg://dev:dev@localhost:5432/dev"),
    "ini_url": ("generic", "postgresql+psycopg://dev:dev@localhost:5432/dev"),
}


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def nf_json(*args: str) -> tuple[Result, Any]:
    result = nf(*args, "--json")
    assert result.stdout.strip(), result.stderr
    return result, json.loads(result.stdout)


def copy_project(shape: str, tmp_path: Path, script_dir: str | None = None) -> Path:
    root = tmp_path / shape
    source, ini_url = VARIANTS.get(shape, (shape, None))
    shutil.copytree(PROJECTS / source, root)
    if ini_url is not None:
        ini = root / "alembic.ini"
        text = ini.read_text()
        assert "sqlalchemy.url = driver://" in text
        ini.write_text(re.sub(r"(?m)^sqlalchemy\.url = .*$", f"sqlalchemy.url = {ini_url}", text))
    versions = root / (script_dir or SHAPES[shape]) / "versions"
    versions.mkdir(exist_ok=True)
    shutil.copy(REVISIONS / "0001_create_items.py", versions)
    return root


STOCK_ENGINE = """    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
"""


def going_its_own_way(root: Path, url: str) -> None:
    """Make the stock env.py of ``root`` connect to ``url``, whatever it is told."""
    env_py = root / "alembic" / "env.py"
    text = env_py.read_text()
    assert STOCK_ENGINE in text
    rogue = (
        "    from sqlalchemy import create_engine\n\n"
        f"    connectable = create_engine({url!r}, poolclass=pool.NullPool)\n"
    )
    env_py.write_text(text.replace(STOCK_ENGINE, rogue))


def add_revision(root: Path, shape: str, name: str = "0002_add_price.py") -> None:
    shutil.copy(REVISIONS / name, root / SHAPES[shape] / "versions")


def main_url(client: NeonClient) -> str:
    main = client.find_branch("main")
    assert main is not None
    return client.connection_uri(main.id, "neondb", "neondb_owner")


def count_items(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def in_project(monkeypatch: pytest.MonkeyPatch, fresh_neon: LocalNeonInfo) -> Any:
    """Enter a project folder with the test's own local Neon and a clean environment."""
    for name in list(os.environ):
        if name.startswith(("NEONFLOW_", "POSTGRES_", "FLASK_")) or name in (
            "NEON_API_KEY",
            "DATABASE_URL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEONFLOW_LOCAL__STATE_DIR", str(fresh_neon.state_dir))

    def enter(root: Path) -> Path:
        monkeypatch.chdir(root)
        return root

    return enter


@pytest.mark.parametrize("shape", list(SHAPES))
def test_project_as_it_is(
    shape: str,
    tmp_path: Path,
    fresh_neon: LocalNeonInfo,
    in_project: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = in_project(copy_project(shape, tmp_path))
    client = make_client(fresh_neon)
    parent = main_url(client)
    # A stale export in the developer's shell, pointing at the parent: neonflow overrides it.
    monkeypatch.setenv("DATABASE_URL", parent)
    if shape == "settings":
        monkeypatch.setenv("POSTGRES_DB", "neondb_main_do_not_touch")

    init = nf("init", "--yes")
    assert init.exit_code == 0, init.stderr
    assert (root / "neonflow.toml").is_file()

    first, started = nf_json("branch", "start", "feature", "--show-password")
    assert first.exit_code == 0, first.stderr
    assert "INFO  [alembic" not in first.stderr  # Alembic's log lines stay out of our output
    assert started["revision"] == ["0001"] and started["created"] is True
    feature_url = started["database_url"]
    assert read_heads(feature_url) == ("0001",)  # read back where it should be
    assert read_heads(parent) == ()  # ... and nowhere else

    env_file, env_var = Path(started["env_file"]), started["env_var"]
    if shape == "async_asyncpg":
        # The app's own URL names asyncpg: start keeps it, and says what it wrote.
        text = env_file.read_text()
        env_file.write_text(text.replace("postgresql://", "postgresql+asyncpg://"))
    again, restarted = nf_json("branch", "start", "feature")
    assert again.exit_code == 0, again.stderr
    assert restarted["created"] is False and restarted["revision"] == ["0001"]
    if "," not in env_var:
        [written] = read_vars(env_file, [env_var]).values()
        assert written is not None and restarted["app_url"] == mask_password(written)
        assert ("+asyncpg" in written) is (shape == "async_asyncpg")
        human = nf("branch", "start", "feature")
        assert f"{env_var}={mask_password(written)}\n" in human.stderr

    if shape == "flask_migrate":
        # Flask-Migrate itself agrees with what neonflow did.
        flask = subprocess.run(
            [BIN / "flask", "--app", "app", "db", "current"],
            cwd=root,
            env={**os.environ, "DATABASE_URL": feature_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert flask.returncode == 0, flask.stderr
        assert "0001 (head)" in flask.stdout

    checked, report = nf_json("check")
    assert checked.exit_code == 0, report["summary"]
    [revision] = report["revisions"]
    assert revision["status"] == "applied" and revision["seconds"] is not None
    assert report["round_trip"]["status"] == "passed"
    assert read_heads(feature_url) == ("0001",)  # check never touched the feature

    promoted = nf("branch", "promote", "feature", "--yes")
    assert promoted.exit_code == 0, promoted.stderr
    assert read_heads(parent) == ("0001",)
    assert client.find_branch("feature") is None

    with psycopg.connect(parent) as conn:
        conn.execute("INSERT INTO items (name) VALUES ('a'), ('b'), ('c')")
    second = nf("branch", "start", "feature-2", "--show-password", "--json")
    assert second.exit_code == 0, second.stderr
    second_url = json.loads(second.stdout)["database_url"]
    add_revision(root, shape)

    failed, report = nf_json("check")
    assert failed.exit_code == 10, report["summary"]
    assert report["failure"] == "migration"
    assert "revision 0002 (0002_add_price.py) upgrade failed" in report["summary"]
    assert count_items(second_url) == 3  # the feature branch's data is intact
    assert read_heads(second_url) == ("0001",)
    assert [b.name for b in client.list_branches() if b.name.startswith("check-")] == []

    deleted = nf("branch", "delete", "feature-2", "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert client.find_branch("feature-2") is None
    client.close()


def test_several_variables_are_written_and_read_back(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("settings", tmp_path))
    assert nf("init", "--yes").exit_code == 0
    toml = (root / "neonflow.toml").read_text()
    assert '[app.env]\nPOSTGRES_SERVER = "{host}"' in toml

    result, started = nf_json("branch", "start", "feature", "--show-password")
    assert result.exit_code == 0, result.stderr
    env = (root / ".env").read_text()
    assert "# Local development database" in env  # the other lines are kept
    client = make_client(fresh_neon)
    branch = client.find_branch("feature")
    assert branch is not None
    host = urlsplit(client.connection_uri(branch.id, "neondb", "neondb_owner")).hostname
    assert f"POSTGRES_SERVER={host}\n" in env and "POSTGRES_DB=neondb\n" in env
    password = started["database_url"].split(":")[2].split("@")[0]
    assert password not in result.stderr  # masked in human output

    status = nf_json("branch", "status")[1]
    assert status["branch"] == "feature" and status["at_head"] is True
    rows = nf_json("branch", "list")[1]
    assert [r["name"] for r in rows if r["current"]] == ["feature"]
    client.close()


def test_a_bad_app_env_template_is_a_config_error(tmp_path: Path, in_project: Any) -> None:
    root = in_project(copy_project("generic", tmp_path))
    assert nf("init", "--yes").exit_code == 0
    toml = root / "neonflow.toml"
    base = toml.read_text().replace('env_var = "DATABASE_URL"\n', "")
    for bad, words in [
        ('PGHOST = "{hostname}"', "unknown field {hostname}"),
        ('PGUSER = "{user}"', "cannot tell which branch"),
    ]:
        toml.write_text(base.replace("[migrations]", f"[app.env]\n{bad}\n\n[migrations]"))
        result = nf("branch", "status")
        assert result.exit_code == 2
        assert words in result.stderr and result.stderr.count("\n") == 1


# -- the interlock ---------------------------------------------------------------------------------


def test_env_py_that_connects_to_the_parent_is_refused(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    client = make_client(fresh_neon)
    parent = main_url(client)
    going_its_own_way(root, parent)
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 14
    assert "env.py connected to postgresql+psycopg://neondb_owner:****@" in result.stderr
    assert "not to branch feature: nothing was run there" in result.stderr
    assert parent.split(":")[2].split("@")[0] not in result.stderr
    assert read_heads(parent) == ()  # nothing migrated on the parent
    # nothing ran on the new branch either: it is deleted, and the app points where it did
    assert "branch feature was deleted (nothing ran on it)" in result.stderr
    assert client.find_branch("feature") is None
    assert not (root / ".env").exists()

    checked, report = nf_json("check")
    assert checked.exit_code == 14
    assert report["failure"] == "error" and "env.py connected to" in report["summary"]
    assert read_heads(parent) == ()
    assert [b.name for b in client.list_branches() if b.name.startswith("check-")] == []
    client.close()


def test_env_py_that_uses_sqlite_is_refused(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    going_its_own_way(root, "sqlite:///app.db")
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 14
    assert (
        f"env.py connected to sqlite:///{root / 'app.db'}, not to branch feature" in result.stderr
    )
    db = root / "app.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == []  # nothing ran there either


def test_syntax_error_in_a_revision_is_named_before_any_branch(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    assert nf("init", "--yes").exit_code == 0
    assert nf("branch", "start", "feature").exit_code == 0
    (root / "alembic" / "versions" / "0002_broken.py").write_text(
        'revision = "0002"\ndown_revision = "0001"\n\n\ndef upgrade(:\n    pass\n'
    )
    client = make_client(fresh_neon)
    before = {b.name for b in client.list_branches()}

    result = nf("branch", "start", "feature-2")

    assert result.exit_code == 8
    assert result.stderr.startswith(
        "error: revision 0002 (0002_broken.py) could not be loaded: SyntaxError"
    )
    assert "line 5" in result.stderr and "unexpected" not in result.stderr
    assert {b.name for b in client.list_branches()} == before

    status = nf("branch", "status")
    assert status.exit_code == 0
    assert "branch:   feature" in status.stderr
    assert "problem:  revision 0002 (0002_broken.py) could not be loaded" in status.stderr
    listed = nf("branch", "list")
    assert listed.exit_code == 0 and "feature" in listed.stdout
    client.close()


def test_import_error_in_a_revision_is_named(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    (root / "alembic" / "versions" / "0002_imports.py").write_text(
        'import not_a_module_anywhere\n\nrevision = "0002"\ndown_revision = "0001"\n\n\n'
        "def upgrade():\n    pass\n"
    )
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 8
    assert "revision 0002 (0002_imports.py) could not be loaded" in result.stderr
    assert "not_a_module_anywhere" in result.stderr and "line 1" in result.stderr


def test_syntax_error_in_env_py_is_an_env_py_error(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    env_py = root / "alembic" / "env.py"
    env_py.write_text(env_py.read_text() + "\ndef broken(:\n")
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: env.py failed: SyntaxError")
    assert "revision 0001" not in result.stderr and "unexpected" not in result.stderr


def test_env_py_missing_variable_is_not_blamed_on_a_revision(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("environ", tmp_path))
    assert nf("init", "--yes").exit_code == 0
    toml = root / "neonflow.toml"
    # The app reads DATABASE_URL, neonflow is told it reads another variable.
    toml.write_text(toml.read_text().replace('env_var = "DATABASE_URL"', 'env_var = "DB_URL"'))

    result = nf("branch", "start", "feature")

    assert result.exit_code == 2
    assert "env.py failed: KeyError: 'DATABASE_URL'" in result.stderr
    assert "revision" not in result.stderr


def test_several_heads_are_refused_before_any_branch(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    versions = root / "alembic" / "versions"
    for rev in ("0002a", "0002b"):
        (versions / f"{rev}.py").write_text(
            f'revision = "{rev}"\ndown_revision = "0001"\n\n\ndef upgrade():\n    pass\n'
        )
    assert nf("init", "--yes").exit_code == 0
    client = make_client(fresh_neon)
    before = {b.name for b in client.list_branches()}

    result = nf("branch", "start", "feature")

    assert result.exit_code == 2
    assert "the migrations have 2 heads (0002a, 0002b)" in result.stderr
    assert {b.name for b in client.list_branches()} == before
    client.close()


def test_init_without_alembic_says_so(tmp_path: Path, in_project: Any) -> None:
    in_project(tmp_path)

    result = nf("init", "--yes")

    assert result.exit_code == 2
    assert "no Alembic project" in result.stderr
    assert not (tmp_path / "neonflow.toml").exists()


def test_init_never_overwrites_without_force(tmp_path: Path, in_project: Any) -> None:
    root = in_project(copy_project("flask_migrate", tmp_path))
    result, found = nf_json("init", "--yes")
    assert result.exit_code == 0
    assert found["detected"]["flask_app"] == "app"
    assert found["detected"]["alembic_ini"] == "migrations/alembic.ini"
    (root / "neonflow.toml").write_text("# mine\n")

    again = nf("init", "--yes")

    assert again.exit_code == 2 and "--force" in again.stderr
    assert (root / "neonflow.toml").read_text() == "# mine\n"
    assert nf("init", "--yes", "--force").exit_code == 0
    assert 'flask_app = "app"' in (root / "neonflow.toml").read_text()


def test_env_py_that_gives_configure_only_a_url(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    env_py = root / "alembic" / "env.py"
    online = """    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata
        )

        with context.begin_transaction():
            context.run_migrations()
"""
    url_only = """    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata
    )
    with context.begin_transaction():
        context.run_migrations()
"""
    assert online in env_py.read_text()
    env_py.write_text(env_py.read_text().replace(online, url_only))
    assert nf("init", "--yes").exit_code == 0

    result, started = nf_json("branch", "start", "feature", "--show-password")

    assert result.exit_code == 0, result.stderr
    assert read_heads(started["database_url"]) == ("0001",)
