"""The sample app's API on a branch of the parent's data, migrated to head."""

from __future__ import annotations

import os

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from neonflow.pytest_plugin import NeonBranch, NeonDB

HEAD = "0002"


def users(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT username FROM users ORDER BY id")]


def test_the_app_reads_the_branch_from_its_environment(neon_branch: NeonBranch) -> None:
    from conftest import DATABASE_URL_AT_IMPORT

    # Exported before conftest.py (and the app) were imported.
    assert DATABASE_URL_AT_IMPORT == os.environ["DATABASE_URL"] == neon_branch.url
    assert neon_branch.revision == (HEAD,)


def test_health_shows_the_migrated_revision(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json is not None and response.json["alembic_revision"] == HEAD


@pytest.mark.parametrize("name", ["ada", "grace"])
def test_each_test_starts_clean(client: FlaskClient, name: str) -> None:
    # Two runs of this test: the second sees no trace of the first's user.
    assert client.get("/users").json == []
    created = client.post("/users", json={"username": name, "email": f"{name}@example.com"})
    assert created.status_code == 201
    assert [u["username"] for u in client.get("/users").json or []] == [name]


def test_a_duplicate_is_refused_and_the_test_goes_on(client: FlaskClient) -> None:
    body = {"username": "ada", "email": "ada@example.com"}
    assert client.post("/users", json=body).status_code == 201
    assert client.post("/users", json=body).status_code == 409
    # The failed commit rolled back to its savepoint only: the session goes on.
    assert [u["username"] for u in client.get("/users").json or []] == ["ada"]


@pytest.mark.neon_commits
@pytest.mark.parametrize("name", ["linus", "margaret"])
def test_commits_are_reset_after_the_test(
    neon_db: NeonDB, committing_app: Flask, name: str
) -> None:
    assert users(neon_db.url) == []
    client = committing_app.test_client()
    assert (
        client.post("/users", json={"username": name, "email": f"{name}@x.org"}).status_code == 201
    )
    assert users(neon_db.url) == [name]  # committed: seen from another connection
