"""Shapes a reviewer found on projects made with the tools' own commands (``alembic init -t …``,
``flask db init``), each as the tool writes it: what neonflow makes of them before any branch."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from neonflow.config import load_settings
from neonflow.errors import ConfigError, WrongTargetError
from neonflow.migrations import Project
from neonflow.workflow.init import detect
from tests.conftest import upgrade_to

PROJECTS = Path(__file__).parents[1] / "projects"
ALEMBIC = str(Path(sys.executable).parent / "alembic")


def alembic_init(root: Path, template: str) -> Path:
    """A project folder as ``alembic init -t TEMPLATE alembic`` leaves it."""
    root.mkdir(parents=True)
    subprocess.run(
        [ALEMBIC, "init", "-t", template, "alembic"], cwd=root, check=True, capture_output=True
    )
    return root


def project_of(root: Path) -> Project:
    settings = load_settings(
        config_file=None,
        root=root,
        migrations={"alembic_ini": str(root / "alembic.ini")},
        app={"env_file": str(root / ".env")},
    )
    return Project.from_settings(settings)


def test_a_multidb_project_is_refused_in_one_line_before_anything(tmp_path: Path) -> None:
    """``alembic init -t multidb``: one env.py, a URL per ``[engineN]`` section; neonflow migrates
    one database per branch and says so, rather than failing in env.py on a branch it made."""
    root = alembic_init(tmp_path / "two-databases", "multidb")

    with pytest.raises(ConfigError) as refused:
        project_of(root)
    with pytest.raises(ConfigError) as at_init:
        detect(root)

    for error in (refused.value, at_init.value):
        message = str(error)
        assert "\n" not in message
        assert "multi-database" in message and "databases = engine1, engine2" in message
        assert error.exit_code == 2


def test_an_ini_value_with_a_bare_percent_that_alembic_never_reads(
    tmp_path: Path, database_url: str
) -> None:
    """A developer's URL with a %-quoted password in alembic.ini, which env.py replaces before
    Alembic reads it (`alembic upgrade head` works): neonflow runs it too."""
    root = tmp_path / "percent"
    shutil.copytree(PROJECTS / "environ", root)
    (root / "alembic" / "versions").mkdir(exist_ok=True)
    shutil.copy(PROJECTS / "_revisions" / "0001_create_items.py", root / "alembic" / "versions")
    ini = root / "alembic.ini"
    text = ini.read_text()
    url = "postgresql+psycopg://shop:p%40ss%21@localhost:5432/shop"
    ini.write_text(re.sub(r"(?m)^sqlalchemy\.url = .*$", f"sqlalchemy.url = {url}", text))

    project = project_of(root)

    assert project.options["sqlalchemy.url"] == url
    assert project.sqlalchemy_driver() == "psycopg"
    assert upgrade_to(ini, database_url) == ("0001",)


def test_init_finds_the_variable_a_flask_factory_reads(tmp_path: Path) -> None:
    """The Flask tutorial's shape: the factory in the package's ``__init__.py`` reads the URL
    from the environment, FLASK_APP in ``.flaskenv``, ``flask db init``'s folder; no .env yet."""
    root = tmp_path / "blog-app"
    shutil.copytree(PROJECTS / "flask_migrate" / "migrations", root / "migrations")
    (root / "blog").mkdir()
    (root / "blog" / "__init__.py").write_text(
        "import os\n\nfrom flask import Flask\n\nfrom blog.extensions import db, migrate\n\n\n"
        "def create_app(test_config=None):\n"
        "    app = Flask(__name__, instance_relative_config=True)\n"
        "    app.config.from_mapping(\n"
        '        SECRET_KEY=os.environ.get("SECRET_KEY", "dev"),\n'
        '        SQLALCHEMY_DATABASE_URI=os.environ["SQLALCHEMY_DATABASE_URI"],\n'
        "    )\n"
        "    db.init_app(app)\n    migrate.init_app(app, db)\n    return app\n"
    )
    (root / ".flaskenv").write_text("FLASK_APP=blog:create_app\nFLASK_DEBUG=1\n")

    found = detect(root)

    assert found.flask_app == "blog:create_app"
    assert found.env_var == "SQLALCHEMY_DATABASE_URI"
    assert found.found_in == ["blog/__init__.py"]
    assert not [note for note in found.notes if "variable" in note]
    # what the app reads beats another variable an env file holds
    (root / ".env").write_text("DATABASE_URL=postgresql://me@localhost/blog\n")
    assert detect(root).env_var == "SQLALCHEMY_DATABASE_URI"
    # a factory that builds its URI from POSTGRES_* parts, beside a leftover DATABASE_URL in
    # .env: the parts it reads win (DATABASE_URL would leave them pointing at the old database)
    (root / "blog" / "__init__.py").write_text(
        "import os\n\nfrom flask import Flask\n\n\ndef create_app():\n"
        "    app = Flask(__name__)\n"
        '    app.config["SQLALCHEMY_DATABASE_URI"] = (\n'
        "        f\"postgresql://{os.environ['POSTGRES_USER']}:{os.environ['POSTGRES_PASSWORD']}\"\n"
        "        f\"@{os.environ['POSTGRES_HOST']}/{os.environ['POSTGRES_DB']}\"\n"
        "    )\n    return app\n"
    )
    (root / ".env").write_text(
        "DATABASE_URL=postgresql://compose@db/x\nPOSTGRES_USER=u\nPOSTGRES_PASSWORD=p\n"
        "POSTGRES_HOST=localhost\nPOSTGRES_DB=blog\n"
    )
    parts = detect(root)
    assert parts.env_var is None
    assert parts.env == {
        "POSTGRES_HOST": "{host}",
        "POSTGRES_USER": "{user}",
        "POSTGRES_PASSWORD": "{password}",
        "POSTGRES_DB": "{database}",
    }
    assert "blog/__init__.py" in parts.found_in


def test_a_pyproject_project_without_alembic_ini(tmp_path: Path, database_url: str) -> None:
    """``alembic init -t pyproject`` with alembic.ini deleted, as Alembic 1.16+ allows when
    env.py does not need it: the configuration is ``[tool.alembic]`` of pyproject.toml alone."""
    root = alembic_init(tmp_path / "shop", "pyproject")
    (root / "alembic.ini").unlink()
    shutil.copy(PROJECTS / "_revisions" / "0001_create_items.py", root / "alembic" / "versions")
    pyproject = root / "pyproject.toml"

    found = detect(root)
    settings = load_settings(
        config_file=None,
        root=root,
        migrations={"alembic_ini": found.alembic_ini},
        app={"env_file": str(root / ".env")},
    )
    project = Project.from_settings(settings)

    assert found.alembic_ini == "pyproject.toml"
    assert project.toml_file == pyproject.resolve()
    assert project.script_dir == (root / "alembic").resolve()
    assert upgrade_to(pyproject, database_url) == ("0001",)


def test_env_py_that_reloads_the_env_file_over_the_environment_is_told_so(
    tmp_path: Path, database_url: str
) -> None:
    """``load_dotenv(override=True)`` in env.py: the env file's URL (the developer's database,
    the feature branch during promote) replaces the one neonflow exported. The interlock refuses;
    the message says why, rather than only "name that variable in [app] env_var"."""
    root = tmp_path / "dotenv-override"
    shutil.copytree(PROJECTS / "environ", root)
    (root / "alembic" / "versions").mkdir(exist_ok=True)
    shutil.copy(PROJECTS / "_revisions" / "0001_create_items.py", root / "alembic" / "versions")
    env_py = root / "alembic" / "env.py"
    text = env_py.read_text()
    assert text.startswith("import os\n")
    env_py.write_text(
        "from dotenv import load_dotenv\n"
        + text.replace(
            "config = context.config\n", "config = context.config\nload_dotenv(override=True)\n", 1
        )
    )
    other = database_url.rsplit("/", 1)[0] + "/postgres"
    (root / ".env").write_text(f"DATABASE_URL={other}\n")

    with pytest.raises(WrongTargetError) as refused:
        upgrade_to(root / "alembic.ini", database_url)

    message = str(refused.value)
    assert "nothing was run there" in message
    assert "env.py (or the app) changed DATABASE_URL after neonflow exported it" in message
    assert "override=True" in message
    with psycopg.connect(other) as conn:
        row = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
    assert row == (None,)


def test_a_multidb_project_with_a_package_script_location_is_refused_at_init(
    tmp_path: Path,
) -> None:
    """``script_location = package:path`` (Alembic finds the folder inside an importable package):
    ``init`` finds env.py where ``start`` does, so the multidb refusal holds for both."""
    root = alembic_init(tmp_path / "packaged", "multidb")
    (root / "app").mkdir()
    (root / "app" / "__init__.py").write_text("")
    (root / "alembic").rename(root / "app" / "migrations")
    ini = root / "alembic.ini"
    text = ini.read_text()
    assert "prepend_sys_path = ." in text
    ini.write_text(re.sub(r"(?m)^script_location = .*$", "script_location = app:migrations", text))

    with pytest.raises(ConfigError) as refused:
        project_of(root)
    with pytest.raises(ConfigError) as at_init:
        detect(root)

    for error in (refused.value, at_init.value):
        assert "multi-database" in str(error) and error.exit_code == 2
