"""Shared fixtures: one embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from neonflow.config import Settings, load_settings
from neonflow.local import service
from neonflow.local.postgres import EmbeddedPostgres, free_port, new_password
from neonflow.local.service import LocalNeonInfo
from neonflow.neon import NeonClient


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(
        tmp_path_factory.mktemp("pg") / "data", free_port(), new_password(), fsync=False
    )
    pg.init()
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A new, empty database on the session's server, as a ``postgresql://`` URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"postgresql://postgres:{pg_server.password}@127.0.0.1:{pg_server.port}/{name}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# -- the local Neon ----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INI = REPO / "sample_app" / "alembic.ini"


def start_local_neon(root: Path) -> tuple[Settings, LocalNeonInfo]:
    """A local Neon server with its state in ``root/.neonflow`` (a real subprocess)."""
    settings = load_settings(config_file=None, root=root)
    info, _ = service.up(settings)
    return settings, info


@pytest.fixture(scope="session")
def local_neon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNeonInfo]:
    """One local Neon for the session; tests must not change its default branch."""
    settings, info = start_local_neon(tmp_path_factory.mktemp("neon"))
    yield info
    service.down(settings)


@pytest.fixture
def fresh_neon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNeonInfo]:
    """A local Neon of the test's own, for tests that change project-wide state."""
    settings, info = start_local_neon(tmp_path_factory.mktemp("fresh-neon"))
    yield info
    service.down(settings)


def make_client(info: LocalNeonInfo, **kwargs: Any) -> NeonClient:
    return NeonClient(info.api_host, info.token, info.project_id, **kwargs)


@pytest.fixture
def neon_client(local_neon: LocalNeonInfo) -> Iterator[NeonClient]:
    with make_client(local_neon) as client:
        yield client


def write_project(root: Path, info: LocalNeonInfo, extra: str = "") -> Path:
    """A project folder using the sample app's migrations and the given local Neon."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "neonflow.toml").write_text(
        f"""
[app]
env_file = ".env"

[migrations]
alembic_ini = "{SAMPLE_INI}"

[local]
state_dir = "{info.state_dir}"
{extra}
"""
    )
    return root


@pytest.fixture
def project(tmp_path: Path, local_neon: LocalNeonInfo, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project on the session's local Neon, as the current directory."""
    root = write_project(tmp_path / "project", local_neon)
    monkeypatch.chdir(root)
    for name in list(os.environ):
        if name.startswith("NEONFLOW_") or name in ("NEON_API_KEY", "DATABASE_URL"):
            monkeypatch.delenv(name)
    return root


def _runner(ini: Path) -> Any:
    from neonflow.migrations import Project
    from neonflow.migrations.runner import Runner

    settings = load_settings(
        config_file=None,
        root=ini.parent,
        migrations={"alembic_ini": str(ini)},
        app={"env_file": str(ini.parent / ".no-env-file")},
    )
    return Runner(Project.from_settings(settings))


def upgrade_to(ini: Path, url: str, revision: str = "heads") -> tuple[str, ...]:
    """Run the project's migrations at ``ini`` on ``url`` up to ``revision``, as neonflow does."""
    with _runner(ini) as runner:
        runner.target(url, "the test database")
        after: tuple[str, ...] = runner.upgrade(revision).after
        return after


def sql_of(ini: Path, start: str | None, end: str = "heads") -> str:
    """The offline SQL of the migrations at ``ini`` from ``start`` to ``end``."""
    with _runner(ini) as runner:
        runner.offline()
        sql: str = runner.sql(start, end)
        return sql
