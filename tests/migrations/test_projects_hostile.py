"""Projects shaped the way a hostile review found them in the wild, each asserting what a user
should see: SQL before configure, revisions importing the app, custom version tables, settings
packages, pyproject.toml, odd folders, Flask-Migrate's own directory, background threads.

Every test uses the fixture projects of ``tests/projects`` (through the helpers of
``tests/migrations/test_projects.py``) with the smallest change that makes the shape realistic.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from neonflow.local.service import LocalNeonInfo
from tests.conftest import make_client
from tests.migrations.test_projects import (
    REVISIONS,
    copy_project,
    going_its_own_way,
    main_url,
    nf,
    nf_json,
)

BIN = Path(sys.executable).parent

STOCK_ONLINE = """    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata
        )
"""


@pytest.fixture
def in_project(monkeypatch: pytest.MonkeyPatch, fresh_neon: LocalNeonInfo) -> Any:
    """As in test_projects.py: a project folder, its own local Neon, a clean environment."""
    for name in list(os.environ):
        if name.startswith(("NEONFLOW_", "POSTGRES_", "FLASK_", "SECRET_")) or name in (
            "NEON_API_KEY",
            "DATABASE_URL",
            "PYTHONPATH",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEONFLOW_LOCAL__STATE_DIR", str(fresh_neon.state_dir))

    def enter(root: Path) -> Path:
        monkeypatch.chdir(root)
        return root

    return enter


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _schemas(url: str, name: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = %s", (name,))
        return [row[0] for row in rows]


# -- 1. the interlock runs at configure(): env.py's SQL before it reaches the parent ------------


def test_sql_env_py_runs_before_configure_never_reaches_the_parent(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """An env.py that creates its version_table_schema before configure() (a common recipe),
    with a URL from settings that point at the parent: neonflow says "nothing was run there"
    but the parent has the new schema."""
    root = in_project(copy_project("generic", tmp_path))
    client = make_client(fresh_neon)
    parent = main_url(client)
    going_its_own_way(root, parent)
    _edit(
        root / "alembic" / "env.py",
        "    with connectable.connect() as connection:\n",
        "    with connectable.connect() as connection:\n"
        "        from sqlalchemy import text\n"
        '        connection.execute(text("CREATE SCHEMA IF NOT EXISTS app"))\n'
        "        connection.commit()\n",
    )
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 14, result.stderr
    assert "nothing was run there" in result.stderr
    assert _schemas(parent, "app") == []  # ... and nothing was: the parent is untouched
    client.close()


# -- 2. revisions loaded in neonflow's own process ---------------------------------------------


def test_a_revision_that_imports_the_apps_models_works_in_check_and_status(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """models.py reads its settings at import (as settings modules do); a data revision imports
    it. `branch start` works (the Alembic process exports DATABASE_URL first); `check`, `status`
    and `promote` load the revisions in neonflow's own process, where it is not exported."""
    root = in_project(copy_project("generic", tmp_path))
    models = root / "models.py"
    models.write_text(models.read_text() + '\nimport os\n\nURL = os.environ["DATABASE_URL"]\n')
    (root / "alembic" / "versions" / "0002_seed.py").write_text(
        '"""seed"""\nfrom alembic import op\n\nfrom models import items\n\n'
        'revision = "0002"\ndown_revision = "0001"\n\n\n'
        'def upgrade():\n    op.bulk_insert(items, [{"id": 1, "name": "seed"}])\n\n\n'
        "def downgrade():\n    op.execute(items.delete().where(items.c.id == 1))\n"
    )
    assert nf("init", "--yes").exit_code == 0
    started = nf("branch", "start", "feature")
    assert started.exit_code == 0, started.stderr

    status = nf_json("branch", "status")[1]
    assert status["problem"] is None, status["problem"]
    assert status["at_head"] is True

    checked, report = nf_json("check")
    assert "could not be loaded" not in report["summary"], report["summary"]
    assert checked.exit_code == 0, report["summary"]


def test_a_stock_env_py_without_models_is_checked_without_alembic_check(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """`alembic init` leaves ``target_metadata = None`` until the project has models (and
    projects with hand-written migrations keep it so): `alembic check` has nothing to compare,
    which is not drift. The check passes, says why alembic check was skipped, and still ran
    the revisions and the round trip."""
    root = in_project(copy_project("generic", tmp_path))
    _edit(root / "alembic" / "env.py", "target_metadata = metadata", "target_metadata = None")
    assert nf("init", "--yes").exit_code == 0

    checked, report = nf_json("check")

    assert checked.exit_code == 0, report["summary"]
    assert report["stages"]["alembic_check"] == "no models"
    assert report["stages"]["upgrade"] == report["round_trip"]["status"] == "passed"
    assert any("no target_metadata" in f["message"] for f in report["findings"])
    assert "alembic check: skipped (env.py gives no target_metadata)" in checked.stderr


# -- 3. Flask-Migrate: `flask db` loads .flaskenv/.env, neonflow does not ---------------------


def test_flask_app_that_reads_a_variable_from_dotenv_loads(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """create_app() needs SECRET_KEY, which the project keeps in .env; `flask db upgrade` loads
    .flaskenv and .env (python-dotenv) before it creates the app, so it works there."""
    root = in_project(copy_project("flask_migrate", tmp_path, "migrations"))
    with (root / ".env").open("a") as env:
        env.write("SECRET_KEY=dev-secret\n")
    _edit(
        root / "app" / "__init__.py",
        "    app = Flask(__name__)\n",
        '    app = Flask(__name__)\n    app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]\n',
    )
    flask = subprocess.run(
        [BIN / "flask", "routes"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert flask.returncode == 0, flask.stderr  # Flask's own CLI finds SECRET_KEY
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 0, result.stderr


# -- 4. version_table is honoured by the hook but not by neonflow's own reads -------------------


def test_custom_version_table_is_read_back_by_status_list_and_check(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    _edit(
        root / "alembic" / "env.py",
        "connection=connection, target_metadata=target_metadata",
        'connection=connection, target_metadata=target_metadata, version_table="schema_migrations"',
    )
    assert nf("init", "--yes").exit_code == 0
    assert nf("branch", "start", "feature").exit_code == 0

    status = nf_json("branch", "status")[1]
    assert status["revision"] == ["0001"] and status["at_head"] is True, status
    rows = nf_json("branch", "list")[1]
    assert [r["revision"] for r in rows if r["name"] == "feature"] == [["0001"]]

    assert nf("branch", "promote", "feature", "--yes").exit_code == 0
    shutil.copy(REVISIONS / "0002_add_price.py", root / "alembic" / "versions")
    # models follow the new column, so that only the revisions are under test
    models = root / "models.py"
    _edit(
        models,
        '    Column("name", String(100), nullable=False),\n',
        '    Column("name", String(100), nullable=False),\n'
        '    Column("price", Integer, nullable=False),\n',
    )
    checked, report = nf_json("check")
    # main is at 0001: only 0002 is new, and the round trip goes down to 0001, not to base
    assert report["base"]["revision"] == ["0001"], report["base"]
    assert [r["revision"] for r in report["revisions"]] == ["0002"]
    assert report["round_trip"]["downgraded_to"] == "0001"


# -- 5. prewarm imports a settings module before the variables are exported -------------------


def test_settings_module_outside_the_project_sees_the_exported_url(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The company's settings package is on PYTHONPATH (or pip-installed, as in a Docker image)
    and reads DATABASE_URL at import. The shell exports a stale DATABASE_URL to the parent, which
    neonflow promises to override; prewarm imports the package before the override."""
    root = in_project(copy_project("generic", tmp_path))
    lib = tmp_path / "lib" / "corp_settings"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text(
        'import os\n\nDATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://localhost/x")\n'
    )
    monkeypatch.setenv("PYTHONPATH", str(lib.parent))
    env_py = root / "alembic" / "env.py"
    imports = "from models import metadata\n"
    _edit(env_py, imports, imports + "import corp_settings\n")
    _edit(
        env_py,
        """    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
""",
        """    from sqlalchemy import create_engine

    connectable = create_engine(
        corp_settings.DATABASE_URL.replace("postgresql://", "postgresql+psycopg://"),
        poolclass=pool.NullPool,
    )
""",
    )
    client = make_client(fresh_neon)
    monkeypatch.setenv("DATABASE_URL", main_url(client))
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 0, result.stderr
    client.close()


# -- 6. pyproject.toml [tool.alembic] --------------------------------------------------------


def test_pyproject_toml_alembic_project(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = tmp_path / "pyproj"
    root.mkdir()
    made = subprocess.run(
        [BIN / "alembic", "init", "-t", "pyproject", "alembic"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "[tool.alembic]" in (root / "pyproject.toml").read_text()
    shutil.copy(REVISIONS / "0001_create_items.py", root / "alembic" / "versions")
    in_project(root)
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 0, result.stderr
    assert "no script_location" not in result.stderr


# -- 7. alembic.ini in a subfolder, run from the repository root ------------------------------


def test_ini_in_a_subfolder_run_from_the_repository_root(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """`alembic -c db/alembic.ini upgrade head` from the root, script_location = db/alembic."""
    generic = copy_project("generic", tmp_path)
    root = tmp_path / "repo"
    (root / "db").mkdir(parents=True)
    shutil.copytree(generic / "alembic", root / "db" / "alembic")
    shutil.copy(generic / "models.py", root / "models.py")
    ini = (generic / "alembic.ini").read_text()
    ini = re.sub(r"(?m)^script_location = .*$", "script_location = db/alembic", ini)
    (root / "db" / "alembic.ini").write_text(ini)
    history = subprocess.run(
        [BIN / "alembic", "-c", "db/alembic.ini", "history"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "0001 (head)" in history.stdout, history.stderr  # how the user runs it
    in_project(root)
    assert nf("init", "--yes").exit_code == 0
    client = make_client(fresh_neon)

    result = nf("branch", "start", "feature")

    # init saw where alembic runs from (cwd), or start refused before making a branch
    if result.exit_code != 0:
        assert result.exit_code == 2, result.stderr
        assert client.find_branch("feature") is None
    else:
        assert "alembic revision: 0001" in result.stderr
    client.close()


# -- 8. the env file gets the ini's SQLAlchemy driver --------------------------------------------


def test_env_file_url_is_a_plain_postgres_uri_when_the_ini_names_a_driver(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """The ini says postgresql+psycopg:// (the `ini_url` shape); the project has no .env yet.
    The env file must hold what it held before issue 8 (Neon's URI): psql, psycopg.connect and
    every other tool read DATABASE_URL, and libpq's error for a +psycopg URI echoes the password.
    The line neonflow prints must be what the file holds."""
    root = in_project(copy_project("ini_url", tmp_path))
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 0, result.stderr
    written = (root / ".env").read_text().split("DATABASE_URL=", 1)[1].split()[0]
    shown = result.stderr.split("DATABASE_URL=", 1)[1].split()[0]
    assert written.split("://")[0] == shown.split("://")[0], (written.split("@")[-1], shown)
    with psycopg.connect(written) as conn:  # a libpq URI
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- 9. a non-daemon thread in the app holds every command for 10 s ---------------------------


def test_a_background_thread_in_the_app_does_not_hold_the_command(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """create_app() starts a scheduler thread (APScheduler, a metrics exporter...)."""
    root = in_project(copy_project("flask_migrate", tmp_path, "migrations"))
    _edit(
        root / "app" / "__init__.py",
        "    return app\n",
        "    import threading\n\n"
        "    threading.Thread(target=time.sleep, args=(3600,), name='scheduler').start()\n"
        "    return app\n",
    )
    _edit(root / "app" / "__init__.py", "import os\n", "import os\nimport time\n")
    assert nf("init", "--yes").exit_code == 0
    assert nf("branch", "start", "warm").exit_code == 0  # the local Neon is up and warm

    started = time.monotonic()
    result = nf("branch", "start", "feature")
    took = time.monotonic() - started

    assert result.exit_code == 0, result.stderr
    assert took < 8, f"branch start took {took:.1f} s"


# -- 10. env.py failures leave a new branch behind, the app pointed at it, unsaid -------------


def test_env_py_failure_after_the_branch_is_made_says_what_was_left(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    root = in_project(copy_project("generic", tmp_path))
    _edit(
        root / "alembic" / "env.py",
        "if context.is_offline_mode():",
        "import sys\nsys.exit(3)\n\nif context.is_offline_mode():",
    )
    assert nf("init", "--yes").exit_code == 0
    client = make_client(fresh_neon)

    result = nf("branch", "start", "feature")

    assert result.exit_code == 2
    if client.find_branch("feature") is not None:
        # as for a failed revision: say that the branch is kept and the app points at it
        assert "branch feature is kept (not migrated) and the app points at it" in result.stderr
    client.close()


# -- 11. [app.env] with the password inside a URL template -----------------------------------


def test_url_template_with_a_password_that_needs_quoting() -> None:
    """`DATABASE_URL = "postgresql+asyncpg://{user}:{password}@{host}/{database}"` is how a user
    writes it; {password} is the decoded password, so the URL breaks on % @ / and neonflow can no
    longer tell which branch the app points at."""
    from urllib.parse import quote

    from neonflow.appenv import AppVariables
    from neonflow.urls import same_database

    password = "p%w@d/x"
    url = f"postgresql://neondb_owner:{quote(password, safe='')}@ep-x.neon.tech/neondb"
    variables = AppVariables(
        {"DATABASE_URL": "postgresql+asyncpg://{user}:{password}@{host}/{database}"}
    )

    values = variables.values(url)

    assert same_database(variables.url(values), url), values


# -- 12. the project's folder first on the Alembic process's sys.path ---------------------------


def test_an_alembic_folder_that_is_a_package_does_not_shadow_alembic(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """`alembic init alembic` plus an ``__init__.py`` in it (for mypy or pytest): the `alembic`
    command works, because prepend_sys_path comes after Alembic is imported."""
    root = in_project(copy_project("generic", tmp_path))
    (root / "alembic" / "__init__.py").write_text("")
    history = subprocess.run(
        [BIN / "alembic", "history"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert "0001 (head)" in history.stdout, history.stderr
    assert nf("init", "--yes").exit_code == 0

    result = nf("branch", "start", "feature")

    assert result.exit_code == 0, result.stderr


# -- 13. script_location = package:path ---------------------------------------------------------


def test_broken_revision_in_a_package_script_location_is_named_before_any_branch(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """`script_location = myapp:alembic` (Alembic's package-resource form)."""
    root = in_project(copy_project("generic", tmp_path))
    (root / "myapp").mkdir()
    (root / "myapp" / "__init__.py").write_text("")
    (root / "alembic").rename(root / "myapp" / "alembic")
    _edit(
        root / "alembic.ini",
        "script_location = %(here)s/alembic",
        "script_location = myapp:alembic",
    )
    (root / "myapp" / "alembic" / "versions" / "0002_broken.py").write_text(
        'revision = "0002"\ndown_revision = "0001"\n\n\ndef upgrade(:\n    pass\n'
    )
    assert nf("init", "--yes").exit_code == 0
    client = make_client(fresh_neon)

    result = nf("branch", "start", "feature")

    assert result.exit_code == 8, result.stderr
    assert "revision 0002 (0002_broken.py) could not be loaded: SyntaxError" in result.stderr
    assert "env.py failed" not in result.stderr
    assert client.find_branch("feature") is None
    client.close()


# -- 14. Flask-Migrate with Migrate(directory=...) -----------------------------------------------


def test_flask_migrate_with_its_own_directory(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """`Migrate(app, db, directory="app/migrations")`: `flask db upgrade` runs from the project
    folder (where .flaskenv names the app), not from the folder above migrations/."""
    root = in_project(copy_project("flask_migrate", tmp_path, "migrations"))
    (root / "migrations").rename(root / "app" / "migrations")
    _edit(
        root / "app" / "__init__.py",
        "migrate.init_app(app, db)",
        'migrate.init_app(app, db, directory="app/migrations")',
    )
    heads = subprocess.run(
        [BIN / "flask", "db", "heads"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert "0001 (head)" in heads.stdout, heads.stderr  # Flask-Migrate's own view
    init, found = nf_json("init", "--yes")
    assert init.exit_code == 0
    assert found["detected"]["flask_app"] == "app", found["detected"]

    result = nf("branch", "start", "feature")

    assert result.exit_code == 0, result.stderr


# -- 15. a refused password is not "the network" --------------------------------------------------


def test_a_wrong_password_is_not_a_network_error(
    tmp_path: Path, fresh_neon: LocalNeonInfo, in_project: Any
) -> None:
    """[app.env] whose URL template keeps a stale password: the server answered (exit 7 says it
    could not be reached, and CI scripts retry on it); this is configuration (exit 2)."""
    root = in_project(copy_project("environ", tmp_path))
    assert nf("init", "--yes").exit_code == 0
    _edit(
        root / "neonflow.toml",
        'env_var = "DATABASE_URL"',
        '[app.env]\nDATABASE_URL = "postgresql://{user}:stale@{host}:{port}/{database}"',
    )

    result = nf("branch", "start", "feature")

    assert "password authentication failed" in result.stderr
    assert result.exit_code == 2, result.stderr
