"""Shapes a reviewer found on projects made with the tools' own commands (``alembic init -t …``,
``flask db init``), each as the tool writes it: what neonflow makes of them before any branch."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neonflow.config import load_settings
from neonflow.errors import ConfigError
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
