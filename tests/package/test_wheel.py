"""A user's first minutes, not ours: the wheel, installed into a fresh virtualenv outside this
repository, on a small Alembic project made there, against a local Neon of its own.

Slow-ish (a build and a ``pip install``, from pip's cache and the package registry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import psycopg
import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

MODELS = """
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True),
              Column("name", String(100), nullable=False))
"""

# The same first revision every fixture project starts from.
REVISION = REPO / "tests" / "projects" / "_revisions" / "0001_create_items.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build``: an sdist, and the wheel built from it."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    assert len(list(dist.glob("neonflow-*.tar.gz"))) == 1
    (built,) = dist.glob("neonflow-*.whl")
    return built


def test_the_wheel_holds_neonflow_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = Parser().parsestr(
            zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
        )
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names} == {"neonflow", "neonflow-0.1.0.dist-info"}
    assert "neonflow/py.typed" in names
    assert "[pytest11]\nneonflow = neonflow.pytest_plugin" in entry_points
    runtime = [
        Requirement(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r
    ]
    assert "flask-sqlalchemy" not in {r.name.lower() for r in runtime}
    for requirement in runtime:  # each with a bounded range
        assert any(s.operator in ("<", "<=", "~=", "==") for s in requirement.specifier), (
            requirement
        )


def test_a_users_first_minutes(wheel: Path, tmp_path: Path) -> None:
    assert not tmp_path.is_relative_to(REPO)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    subprocess.run(
        [bin_ / "python", "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NEONFLOW_", "PYTEST_", "VIRTUAL_ENV", "PYTHONPATH"))
        and k not in ("NEON_API_KEY", "DATABASE_URL")
    }
    env["PATH"] = f"{bin_}{os.pathsep}{env.get('PATH', '')}"
    project = tmp_path / "shop"
    project.mkdir()

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            args, cwd=project, env=env, capture_output=True, text=True, timeout=300
        )
        if ok:
            assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done

    try:
        # The project as its author has it: `alembic init`, a model, a revision, an env file.
        run("alembic", "init", "alembic")
        (project / "models.py").write_text(MODELS)
        env_py = project / "alembic" / "env.py"
        env_py.write_text(
            env_py.read_text().replace(
                "target_metadata = None", "from models import metadata\ntarget_metadata = metadata"
            )
        )
        (project / "alembic" / "versions" / "0001_create_items.py").write_text(REVISION.read_text())
        (project / ".env").write_text("DATABASE_URL=\n")

        imported = run("python", "-c", "import neonflow, sample_app", ok=False)
        assert "No module named 'sample_app'" in imported.stderr  # only neonflow came along
        run("python", "-c", "import neonflow; neonflow.NeonClient; neonflow.branch")

        run("neonflow", "init", "--yes")
        assert 'alembic_ini = "alembic.ini"' in (project / "neonflow.toml").read_text()

        started = json.loads(run("neonflow", "branch", "start", "feature-x", "--json").stdout)
        assert started["branch"] == "feature-x" and started["revision"] == ["0001"]
        url = (project / ".env").read_text().split("DATABASE_URL=", 1)[1].strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        assert (project / ".neonflow").is_dir()  # a local Neon of its own, in the project

        checked = run("neonflow", "check")
        assert "✓ check passed" in checked.stderr

        run("neonflow", "branch", "delete", "feature-x", "--yes")
        listed = json.loads(run("neonflow", "branch", "list", "--json").stdout)
        assert [row["name"] for row in listed] == ["main"]
    finally:
        run("neonflow", "local", "down", ok=False)
