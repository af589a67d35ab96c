"""The sample app's own tests, on a throw-away Neon branch migrated to head (neonflow's plugin).

``neonflow_branch = true`` (sample_app/pyproject.toml) opens the branch and exports
``DATABASE_URL`` before this file imports the app; ``neon_db`` gives each test a clean state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import scoped_session, sessionmaker

from neonflow.pytest_plugin import NeonDB
from sample_app import create_app
from sample_app.models import db

# What the app would read, were it configured while its modules load.
DATABASE_URL_AT_IMPORT = os.environ.get("DATABASE_URL")


@pytest.fixture
def app(neon_db: NeonDB, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The app on the test's transaction: its commits are savepoints, rolled back at the end."""
    app = create_app({"TESTING": True, "ENV_FILE": None})
    session = scoped_session(
        sessionmaker(bind=neon_db.connection, join_transaction_mode="create_savepoint")
    )
    monkeypatch.setattr(db, "session", session)
    yield app
    session.remove()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def committing_app() -> Iterator[Flask]:
    """The app as it runs for real, committing on its own connections."""
    app = create_app({"TESTING": True, "ENV_FILE": None})
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
