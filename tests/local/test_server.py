"""The local Neon over real HTTP: Neon API v2 behaviour, data isolation, restore, restarts, CLI.

Most tests share the session's server (``local_neon``) and work under a parent branch of their
own, never changing the default branch; tests that change project-wide state or stop the server
start a server of their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from neonflow.cli.main import app
from neonflow.config import load_settings
from neonflow.local import service
from neonflow.local.service import LocalNeonInfo
from tests.conftest import make_client, start_local_neon

DB = "neondb"
ROLE = "neondb_owner"
PENDING = ("scheduling", "running")
PARENT_ROWS = {"p1", "p2"}


# -- helpers -----------------------------------------------------------------------------------


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def http(info: LocalNeonInfo, token: str | None = None) -> httpx.Client:
    """Raw HTTP to the local project: ``/branches`` means ``/projects/<id>/branches``."""
    return httpx.Client(
        base_url=f"{info.api_host}/projects/{info.project_id}",
        headers={"Authorization": f"Bearer {token or info.token}"},
        timeout=60,
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait(api: httpx.Client, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Poll each operation until it ends; every one must have finished."""
    final = []
    for op in operations:
        deadline = time.monotonic() + 120
        while True:
            response = api.get(f"/operations/{op['id']}")
            assert response.status_code == 200, response.text
            got = response.json()["operation"]
            if got["status"] not in PENDING:
                break
            assert time.monotonic() < deadline, f"operation {op['id']} hangs: {got}"
            time.sleep(0.02)
        assert got["status"] == "finished", got
        final.append(got)
    return final


def create(
    api: httpx.Client,
    *,
    endpoint: bool = True,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """Create a branch, wait for its operations, and return the 201 body."""
    body: dict[str, Any] = {"branch": {"name": unique(), **spec}}
    if endpoint:
        body["endpoints"] = [{"type": "read_write"}]
    if annotations is not None:
        body["annotation_value"] = annotations
    response = api.post("/branches", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    wait(api, created["operations"])
    return created


def uri_of(api: httpx.Client, branch_id: str) -> str:
    response = api.get(
        "/connection_uri",
        params={"branch_id": branch_id, "database_name": DB, "role_name": ROLE},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["uri"])


def labels(uri: str) -> set[str]:
    with psycopg.connect(uri, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT label FROM items")}


def insert(uri: str, label: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("INSERT INTO items (label) VALUES (%s)", (label,))


def branch(api: httpx.Client, branch_id: str) -> dict[str, Any]:
    response = api.get(f"/branches/{branch_id}")
    assert response.status_code == 200, response.text
    return response.json()["branch"]  # type: ignore[no-any-return]


def delete(api: httpx.Client, branch_id: str) -> None:
    response = api.delete(f"/branches/{branch_id}")
    assert response.status_code in (200, 204), response.text
    if response.status_code == 200:
        wait(api, response.json()["operations"])


def assert_error(response: httpx.Response, status: int, words: str = "") -> dict[str, Any]:
    """Neon's error body ``{code, message, request_id}`` with the given status."""
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["request_id"], str) and body["request_id"]
    assert words.lower() in body["message"].lower(), body
    return body


@contextmanager
def copies_blocked(uri: str) -> Iterator[None]:
    """Hold the parent's ``pg_database`` row locked: a copy from it waits, its operation runs on.

    An uncommitted ``ALTER DATABASE`` by the database's owner makes the server's own ``ALTER
    DATABASE`` (it refuses new sessions before copying) wait for this transaction.
    """
    conn = psycopg.connect(uri)
    try:
        row = conn.execute("SELECT current_database()").fetchone()  # the physical name
        assert row is not None
        name = str(row[0])
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT -1").format(sql.Identifier(name)))
        yield
    finally:
        conn.rollback()
        conn.close()


def wait_running(api: httpx.Client, op: dict[str, Any]) -> None:
    deadline = time.monotonic() + 30
    while api.get(f"/operations/{op['id']}").json()["operation"]["status"] != "running":
        assert time.monotonic() < deadline, "the operation never started"
        time.sleep(0.01)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(local_neon: LocalNeonInfo) -> Iterator[httpx.Client]:
    with http(local_neon) as client:
        yield client


@pytest.fixture(scope="module")
def main_id(api: httpx.Client) -> str:
    found = [b for b in api.get("/branches").json()["branches"] if b["default"]]
    assert len(found) == 1
    return str(found[0]["id"])


@pytest.fixture(scope="module")
def parent(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """A branch of the session's main with a table ``items`` holding rows p1 and p2."""
    created = create(api, name=unique("parent"))
    uri = created["connection_uris"][0]["connection_uri"]
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL)")
        conn.execute("INSERT INTO items (label) VALUES ('p1'), ('p2')")
    yield {"id": created["branch"]["id"], "name": created["branch"]["name"], "uri": uri}
    for child in api.get("/branches", params={"search": ""}).json()["branches"]:
        if child.get("parent_id") == created["branch"]["id"]:
            api.delete(f"/branches/{child['id']}")
    api.delete(f"/branches/{created['branch']['id']}")


@pytest.fixture
def child(api: httpx.Client, parent: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A ready branch of ``parent`` with a read_write endpoint; deleted afterwards."""
    created = create(api, parent_id=parent["id"])
    yield {
        "id": created["branch"]["id"],
        "name": created["branch"]["name"],
        "uri": created["connection_uris"][0]["connection_uri"],
        "endpoint": created["endpoints"][0]["id"],
        "created": created,
    }
    api.delete(f"/branches/{created['branch']['id']}")


# -- authentication, projects, generic errors --------------------------------------------------


def test_requests_need_the_bearer_token(local_neon: LocalNeonInfo):
    projects = f"{local_neon.api_host}/projects"
    assert_error(httpx.get(projects), 401, "authentication")
    assert_error(httpx.get(projects, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(httpx.get(projects, headers={"Authorization": local_neon.token}), 401)
    ok = httpx.get(projects, headers={"Authorization": f"Bearer {local_neon.token}"})
    assert ok.status_code == 200
    # A wrong token gets nothing, not even a mutation.
    with http(local_neon, token="wrong") as api:
        assert_error(api.post("/branches", json={"branch": {"name": unique()}}), 401)
    health = httpx.get(local_neon.api_host.removesuffix("/api/v2") + "/healthz")
    assert health.status_code == 200


def test_errors_carry_the_request_id_and_unknown_routes_answer_json(api: httpx.Client):
    body = assert_error(api.get("/branches/br-nope", headers={"X-Request-ID": "req-42"}), 404)
    assert body["request_id"] == "req-42"
    assert_error(api.get("/no-such-thing"), 404)
    assert_error(api.put("/branches"), 405)


def test_projects_list_and_get(local_neon: LocalNeonInfo):
    auth = {"Authorization": f"Bearer {local_neon.token}"}
    with httpx.Client(base_url=local_neon.api_host, headers=auth) as root:
        listed = root.get("/projects").json()
        assert [p["id"] for p in listed["projects"]] == [local_neon.project_id]
        cursor = listed["pagination"]["cursor"]
        assert cursor, "the spec wants a non-empty cursor"
        assert root.get("/projects", params={"cursor": cursor}).json()["projects"] == []
        assert root.get("/projects/shared").json()["projects"] == []
        got = root.get(f"/projects/{local_neon.project_id}").json()["project"]
        assert got["id"] == local_neon.project_id and got["store_passwords"] is True
        for path in ("", "/branches", "/operations", "/endpoints", "/connection_uri"):
            assert_error(root.get(f"/projects/no-such-project{path}"), 404, "project")
        assert_error(root.post("/projects/no-such-project/branches", json={}), 404, "project")


# -- listing -----------------------------------------------------------------------------------


def test_list_searches_sorts_and_pages(api: httpx.Client, parent: dict[str, Any]):
    tag = unique("list")
    made = []
    for suffix in ("b", "c", "a"):
        made.append(create(api, endpoint=False, name=f"{tag}-{suffix}", parent_id=parent["id"]))
    try:
        found = api.get("/branches", params={"search": tag}).json()
        assert sorted(b["name"] for b in found["branches"]) == [f"{tag}-a", f"{tag}-b", f"{tag}-c"]
        assert set(found["annotations"]) == {b["id"] for b in found["branches"]}
        assert api.get("/branches/count", params={"search": tag}).json() == {"count": 3}
        # search by (part of) an id
        one = made[0]["branch"]["id"]
        assert [
            b["id"] for b in api.get("/branches", params={"search": one}).json()["branches"]
        ] == [one]

        by_name = {"search": tag, "sort_by": "name"}
        asc = api.get("/branches", params={**by_name, "sort_order": "asc"}).json()
        desc = api.get("/branches", params={**by_name, "sort_order": "desc"}).json()
        assert [b["name"][-1] for b in asc["branches"]] == ["a", "b", "c"]
        assert [b["name"][-1] for b in desc["branches"]] == ["c", "b", "a"]
        assert asc["pagination"]["sort_by"] == "name"
        assert asc["pagination"]["sort_order"] == "asc"

        seen, cursor = [], None
        for _ in range(5):
            params: dict[str, Any] = {**by_name, "sort_order": "asc", "limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/branches", params=params).json()
            seen += [b["name"][-1] for b in page["branches"]]
            cursor = page["pagination"].get("next")
            if not cursor or not page["branches"]:
                break
        assert seen == ["a", "b", "c"]
    finally:
        for created in made:
            delete(api, created["branch"]["id"])


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "W10="}, "cursor"),  # base64 of "[]"
        ({"sort_by": "size"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
    ],
)
def test_list_rejects_bad_parameters(api: httpx.Client, params: dict[str, Any], words: str):
    assert_error(api.get("/branches", params=params), 400, words)


# -- create --------------------------------------------------------------------------------------


def test_create_answers_at_once_and_operations_finish(api: httpx.Client, parent: dict[str, Any]):
    name = unique("made")
    response = api.post(
        "/branches",
        json={
            "branch": {"name": name, "parent_id": parent["id"]},
            "endpoints": [{"type": "read_write"}],
            "annotation_value": {"neonflow": "true", "git-branch": "feature/x"},
        },
    )
    assert response.status_code == 201
    created = response.json()
    new = created["branch"]
    try:
        assert new["name"] == name and new["parent_id"] == parent["id"]
        assert new["current_state"] == "init" and new["pending_state"] == "ready"
        assert new["default"] is False and new["protected"] is False
        assert [op["action"] for op in created["operations"]] == ["create_branch", "start_compute"]
        assert {op["status"] for op in created["operations"]} <= {"scheduling", "running"}
        assert [e["type"] for e in created["endpoints"]] == ["read_write"]
        assert created["endpoints"][0]["current_state"] == "init"
        assert [d["name"] for d in created["databases"]] == [DB]
        assert [r["name"] for r in created["roles"]] == [ROLE]
        details = created["connection_uris"][0]
        assert details["connection_parameters"]["role"] == ROLE

        done = wait(api, created["operations"])
        assert all(op["branch_id"] == new["id"] for op in done)
        assert done[1]["endpoint_id"] == created["endpoints"][0]["id"]
        got = api.get(f"/branches/{new['id']}").json()
        assert got["branch"]["current_state"] == "ready"
        assert "pending_state" not in got["branch"]
        assert got["annotation"]["value"] == {"neonflow": "true", "git-branch": "feature/x"}
        listed = api.get("/branches", params={"search": name}).json()
        assert listed["annotations"][new["id"]]["value"]["neonflow"] == "true"
        endpoint = api.get(f"/endpoints/{created['endpoints'][0]['id']}").json()["endpoint"]
        assert endpoint["current_state"] == "active"
        assert labels(details["connection_uri"]) == PARENT_ROWS
        assert uri_of(api, new["id"]) == details["connection_uri"]
    finally:
        delete(api, new["id"])


def test_create_with_no_body_branches_the_default_branch(api: httpx.Client, main_id: str):
    response = api.post("/branches")
    assert response.status_code == 201, response.text
    created = response.json()
    try:
        assert created["branch"]["parent_id"] == main_id
        assert created["branch"]["name"]
        assert created["endpoints"] == []
        assert "connection_uris" not in created
        wait(api, created["operations"])
        assert api.get(f"/branches/{created['branch']['id']}/endpoints").json() == {"endpoints": []}
    finally:
        delete(api, created["branch"]["id"])


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("{not json", 400, "json"),
        ([1, 2], 400, "json"),
        ({"branch": "x"}, 400, "branch"),
        ({"branch": {"name": ""}}, 400, "name"),  # as on Neon; no name at all picks one
        ({"branch": {"name": "x" * 257}}, 400, "name"),
        ({"branch": {"name": 5}}, 400, "name"),
        ({"endpoints": 5}, 400, "endpoints"),
        ({"endpoints": [{"type": "bogus"}]}, 400, "type"),
        ({"endpoints": [{"type": "read_write"}, {"type": "read_write"}]}, 400, "read_write"),
        ({"annotation_value": {"k": 1}}, 400, "annotation"),
        ({"annotation_value": {str(i): "v" for i in range(51)}}, 400, "annotation"),
        ({"branch": {"parent_id": "br-no-such-branch"}}, 404, "br-no-such-branch"),
        ({"branch": {"parent_lsn": "0/1DE2850"}}, 400, "point-in-time"),
        ({"branch": {"parent_timestamp": "2026-01-01T00:00:00Z"}}, 400, "point-in-time"),
        ({"branch": {"init_source": "import"}}, 400, "init_source"),
        ({"branch": {"protected": "yes"}}, 400, "protected"),
    ],
)
def test_create_rejects_bad_requests(api: httpx.Client, body: Any, status: int, words: str):
    before = api.get("/branches/count").json()["count"]
    if isinstance(body, str):
        response = api.post("/branches", content=body, headers={"Content-Type": "application/json"})
    else:
        response = api.post("/branches", json=body)
    if status == 201:
        assert response.status_code == 201, response.text
        wait(api, response.json()["operations"])
        delete(api, response.json()["branch"]["id"])
        return
    assert_error(response, status, words)
    assert api.get("/branches/count").json()["count"] == before, "nothing half-made"


def test_duplicate_names_conflict(api: httpx.Client, child: dict[str, Any]):
    body = assert_error(api.post("/branches", json={"branch": {"name": child["name"]}}), 409)
    assert child["name"] in body["message"]
    assert api.get("/branches", params={"search": child["name"]}).json()["branches"] == [
        branch(api, child["id"])
    ]


def test_schema_only_branch_has_the_tables_but_no_rows(api: httpx.Client, parent: dict[str, Any]):
    created = create(api, parent_id=parent["id"], init_source="schema-only")
    try:
        new = branch(api, created["branch"]["id"])
        assert new["init_source"] == "schema-only"
        assert "parent_id" not in new, "a schema-only branch is a root branch"
        assert labels(created["connection_uris"][0]["connection_uri"]) == set()
        assert labels(parent["uri"]) >= PARENT_ROWS
    finally:
        delete(api, created["branch"]["id"])


# -- the data really is a copy ---------------------------------------------------------------


def test_branch_data_is_a_copy_both_ways(api: httpx.Client, parent: dict[str, Any]):
    created = create(api, parent_id=parent["id"])
    uri = created["connection_uris"][0]["connection_uri"]
    try:
        assert labels(uri) == PARENT_ROWS
        insert(parent["uri"], "parent-after")
        insert(uri, "child-only")
        assert labels(uri) == PARENT_ROWS | {"child-only"}
        assert "child-only" not in labels(parent["uri"])
        assert "parent-after" in labels(parent["uri"])
    finally:
        with psycopg.connect(parent["uri"], autocommit=True) as conn:
            conn.execute("DELETE FROM items WHERE label = 'parent-after'")
        delete(api, created["branch"]["id"])


def test_branching_ends_sessions_on_the_parent_instead_of_waiting(
    api: httpx.Client, parent: dict[str, Any]
):
    # An idle transaction on the parent would make CREATE DATABASE wait 5 s and fail.
    idle = psycopg.connect(parent["uri"])
    idle.execute("SELECT 1")
    started = time.monotonic()
    created = create(api, parent_id=parent["id"])
    print(f"branch ready in {time.monotonic() - started:.2f} s with a session open on the parent")
    try:
        assert labels(created["connection_uris"][0]["connection_uri"]) == PARENT_ROWS
        with pytest.raises(psycopg.OperationalError):
            idle.execute("SELECT 1")
        assert labels(parent["uri"]) == PARENT_ROWS, "the parent takes new sessions again"
    finally:
        idle.close()
        delete(api, created["branch"]["id"])


# -- update, delete --------------------------------------------------------------------------


def test_rename(api: httpx.Client, child: dict[str, Any], parent: dict[str, Any]):
    new_name = unique("renamed")
    response = api.patch(f"/branches/{child['id']}", json={"branch": {"name": new_name}})
    assert response.status_code == 200
    assert response.json()["branch"]["name"] == new_name
    assert response.json()["operations"] == []
    assert branch(api, child["id"])["name"] == new_name
    assert api.get("/branches", params={"search": child["name"]}).json()["branches"] == []
    # its own name again is fine; another branch's name is not
    same = api.patch(f"/branches/{child['id']}", json={"branch": {"name": new_name}})
    assert same.status_code == 200
    taken = api.patch(f"/branches/{child['id']}", json={"branch": {"name": parent["name"]}})
    assert_error(taken, 409, parent["name"])
    assert branch(api, child["id"])["name"] == new_name
    assert uri_of(api, child["id"]) == child["uri"], "renaming keeps the connection details"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "branch"),
        ({"branch": []}, "branch"),
        ({"branch": {"name": ""}}, "name"),
        ({"branch": {"name": "x" * 257}}, "name"),
        ({"branch": {"protected": "no"}}, "protected"),
    ],
)
def test_update_rejects_bad_bodies(api: httpx.Client, child: dict[str, Any], body: Any, words: str):
    before = branch(api, child["id"])
    assert_error(api.patch(f"/branches/{child['id']}", json=body), 400, words)
    after = branch(api, child["id"])
    assert (after["name"], after["protected"]) == (before["name"], before["protected"])


def test_update_unknown_branch_is_404(api: httpx.Client):
    assert_error(api.patch("/branches/br-nope", json={"branch": {"name": "x"}}), 404, "br-nope")


def test_protected_branch_cannot_be_deleted_or_reset(
    api: httpx.Client, child: dict[str, Any], parent: dict[str, Any]
):
    response = api.patch(f"/branches/{child['id']}", json={"branch": {"protected": True}})
    assert response.status_code == 200 and response.json()["branch"]["protected"] is True
    assert_error(api.delete(f"/branches/{child['id']}"), 422, "protected")
    restore = api.post(f"/branches/{child['id']}/restore", json={"source_branch_id": parent["id"]})
    assert_error(restore, 422, "protected")
    soon = iso(datetime.now(UTC) + timedelta(days=1))
    expiring = api.patch(f"/branches/{child['id']}", json={"branch": {"expires_at": soon}})
    assert_error(expiring, 400, "protected")
    assert branch(api, child["id"])["current_state"] == "ready"
    api.patch(f"/branches/{child['id']}", json={"branch": {"protected": False}})
    delete(api, child["id"])
    assert_error(api.get(f"/branches/{child['id']}"), 404)


def test_delete(api: httpx.Client, parent: dict[str, Any]):
    created = create(api, parent_id=parent["id"])
    branch_id, uri = created["branch"]["id"], created["connection_uris"][0]["connection_uri"]
    endpoint_id = created["endpoints"][0]["id"]
    response = api.delete(f"/branches/{branch_id}")
    assert response.status_code == 200
    assert response.json()["branch"]["id"] == branch_id
    assert [op["action"] for op in response.json()["operations"]] == ["delete_timeline"]
    assert_error(api.get(f"/branches/{branch_id}"), 404, branch_id)
    assert_error(api.get(f"/endpoints/{endpoint_id}"), 404)
    wait(api, response.json()["operations"])
    # The endpoint's address stops listening (a session that raced in finds no endpoint).
    with pytest.raises(psycopg.OperationalError, match="refused|not found"):
        psycopg.connect(uri).close()
    again = api.delete(f"/branches/{branch_id}")
    assert again.status_code == 204 and again.content == b""
    assert api.delete("/branches/br-never-existed").status_code == 204
    # the name is free again
    reused = create(api, endpoint=False, name=created["branch"]["name"], parent_id=parent["id"])
    delete(api, reused["branch"]["id"])


def test_default_branch_and_branches_with_children_cannot_be_deleted(
    api: httpx.Client, main_id: str, parent: dict[str, Any], child: dict[str, Any]
):
    assert_error(api.delete(f"/branches/{main_id}"), 422, "default")
    assert_error(api.delete(f"/branches/{parent['id']}"), 422, "child")
    assert branch(api, main_id)["default"] is True
    assert branch(api, parent["id"])["current_state"] == "ready"
    assert labels(parent["uri"]) == PARENT_ROWS


# -- expiration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "words"),
    [
        ("2000-01-01T00:00:00Z", "future"),
        ("+40 days", "30 days"),
        ("2030-01-01T00:00:00", "time zone"),
        ("next tuesday", "RFC 3339"),
        (12345, "RFC 3339"),
    ],
)
def test_create_rejects_bad_expiration(
    api: httpx.Client, parent: dict[str, Any], expires_at: Any, words: str
):
    if expires_at == "+40 days":
        expires_at = iso(datetime.now(UTC) + timedelta(days=40))
    body = {"branch": {"name": unique(), "parent_id": parent["id"], "expires_at": expires_at}}
    assert_error(api.post("/branches", json=body), 400, words)
    assert api.get("/branches", params={"search": body["branch"]["name"]}).json()["branches"] == []


def iso_tomorrow() -> str:
    return iso(datetime.now(UTC) + timedelta(days=1))


def test_a_protected_branch_cannot_expire(api: httpx.Client, parent: dict[str, Any]):
    spec = {"name": unique(), "parent_id": parent["id"], "protected": True}
    response = api.post("/branches", json={"branch": {**spec, "expires_at": iso_tomorrow()}})
    assert_error(response, 400, "protected")


def test_expiration_rules(api: httpx.Client, parent: dict[str, Any], main_id: str):
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    created = create(api, parent_id=parent["id"], expires_at=iso(when))
    exp_id = created["branch"]["id"]
    try:
        got = branch(api, exp_id)
        assert got["expires_at"] == iso(when)
        assert 2 * 86400 - 60 <= got["ttl_interval_seconds"] <= 2 * 86400
        # nothing branches from an expiring branch, and it cannot become the default
        from_it = api.post("/branches", json={"branch": {"name": unique(), "parent_id": exp_id}})
        assert_error(from_it, 400, "expiration")
        assert_error(api.post(f"/branches/{exp_id}/set_as_default"), 400, "expiration")
        assert branch(api, main_id)["default"] is True
        # nor can it be protected while it expires
        protect = api.patch(f"/branches/{exp_id}", json={"branch": {"protected": True}})
        assert_error(protect, 400, "expiration")
        # a later expiration, then none
        later = iso(when + timedelta(days=1))
        moved = api.patch(f"/branches/{exp_id}", json={"branch": {"expires_at": later}})
        assert moved.json()["branch"]["expires_at"] == later
        past = api.patch(
            f"/branches/{exp_id}", json={"branch": {"expires_at": iso(when - timedelta(days=3))}}
        )
        assert_error(past, 400, "future")
        cleared = api.patch(f"/branches/{exp_id}", json={"branch": {"expires_at": None}})
        assert cleared.status_code == 200
        assert "expires_at" not in branch(api, exp_id)
        assert "ttl_interval_seconds" not in branch(api, exp_id)
    finally:
        delete(api, exp_id)
    # the default branch and a parent branch cannot expire
    assert_error(
        api.patch(f"/branches/{main_id}", json={"branch": {"expires_at": iso_tomorrow()}}),
        400,
        "default",
    )
    assert "expires_at" not in branch(api, main_id)
    kid = create(api, endpoint=False, parent_id=parent["id"])
    try:
        on_parent = api.patch(
            f"/branches/{parent['id']}", json={"branch": {"expires_at": iso_tomorrow()}}
        )
        assert_error(on_parent, 400, "children")
    finally:
        delete(api, kid["branch"]["id"])


def test_reset_restarts_the_expiration(api: httpx.Client, parent: dict[str, Any]):
    created = create(api, parent_id=parent["id"], expires_at=iso_tomorrow())
    branch_id = created["branch"]["id"]
    try:
        before = branch(api, branch_id)
        time.sleep(2.2)  # expirations have second precision: let the clock move visibly
        response = api.post(
            f"/branches/{branch_id}/restore", json={"source_branch_id": parent["id"]}
        )
        assert response.status_code == 200
        wait(api, response.json()["operations"])
        after = branch(api, branch_id)
        assert "last_reset_at" in after
        old = datetime.fromisoformat(before["expires_at"])
        new = datetime.fromisoformat(after["expires_at"])
        # the same time to live, counted again from the reset
        assert old + timedelta(seconds=1) <= new <= old + timedelta(seconds=60)
        assert after["ttl_interval_seconds"] == before["ttl_interval_seconds"]
    finally:
        delete(api, branch_id)


# -- 423: one operation at a time per branch ---------------------------------------------------


def test_mutations_on_a_branch_with_a_running_operation_get_423(
    api: httpx.Client, parent: dict[str, Any]
):
    other = create(api, endpoint=False, parent_id=parent["id"])
    with copies_blocked(parent["uri"]):
        response = api.post(
            "/branches",
            json={
                "branch": {"name": unique("busy"), "parent_id": parent["id"]},
                "endpoints": [{"type": "read_write"}],
            },
        )
        assert response.status_code == 201
        busy = response.json()
        busy_id, endpoint_id = busy["branch"]["id"], busy["endpoints"][0]["id"]
        wait_running(api, busy["operations"][0])
        assert branch(api, busy_id)["current_state"] == "init"

        attempts = [
            api.patch(f"/branches/{busy_id}", json={"branch": {"name": unique()}}),
            api.delete(f"/branches/{busy_id}"),
            api.post(f"/branches/{busy_id}/set_as_default"),
            api.post(f"/branches/{busy_id}/restore", json={"source_branch_id": parent["id"]}),
            # restoring another branch *from* the busy one waits as well
            api.post(
                f"/branches/{other['branch']['id']}/restore", json={"source_branch_id": busy_id}
            ),
            api.post(f"/endpoints/{endpoint_id}/suspend"),
            api.post(f"/endpoints/{endpoint_id}/start"),
            # roles too: a role changed meanwhile would be undone by a restore's end
            api.post(f"/branches/{busy_id}/roles", json={"role": {"name": "busy_role"}}),
            api.post(f"/branches/{busy_id}/roles/{ROLE}/reset_password"),
            api.delete(f"/branches/{busy_id}/roles/{ROLE}"),
        ]
        for attempt in attempts:
            body = assert_error(attempt, 423)
            assert body["code"] == "LOCKED"
        # reads still answer
        assert api.get(f"/branches/{busy_id}").status_code == 200
        assert api.get("/branches").status_code == 200
    try:
        wait(api, busy["operations"])
        got = branch(api, busy_id)
        assert got["current_state"] == "ready"
        assert got["name"] == busy["branch"]["name"], "the refused rename did not happen"
        assert labels(busy["connection_uris"][0]["connection_uri"]) == PARENT_ROWS
        renamed = api.patch(f"/branches/{busy_id}", json={"branch": {"name": unique()}})
        assert renamed.status_code == 200
    finally:
        delete(api, busy_id)
        delete(api, other["branch"]["id"])


# -- restore -----------------------------------------------------------------------------------


def test_reset_from_parent_discards_changes_and_keeps_the_connection(
    api: httpx.Client, parent: dict[str, Any], child: dict[str, Any]
):
    insert(child["uri"], "child-change")
    insert(parent["uri"], "parent-new")
    session = psycopg.connect(child["uri"], autocommit=True)
    try:
        response = api.post(
            f"/branches/{child['id']}/restore", json={"source_branch_id": parent["id"]}
        )
        assert response.status_code == 200, response.text
        assert response.json()["branch"]["current_state"] == "resetting"
        assert [op["action"] for op in response.json()["operations"]] == ["create_timeline"]
        wait(api, response.json()["operations"])
        got = branch(api, child["id"])
        assert got["current_state"] == "ready" and got["parent_id"] == parent["id"]
        assert "last_reset_at" in got
        assert uri_of(api, child["id"]) == child["uri"]
        assert labels(child["uri"]) == PARENT_ROWS | {"parent-new"}
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")  # as on Neon, a reset interrupts connections
    finally:
        session.close()
        with psycopg.connect(parent["uri"], autocommit=True) as conn:
            conn.execute("DELETE FROM items WHERE label = 'parent-new'")


def test_restore_from_another_branch(api: httpx.Client, parent: dict[str, Any]):
    source = create(api, parent_id=parent["id"])
    target = create(api, parent_id=parent["id"])
    source_uri = source["connection_uris"][0]["connection_uri"]
    target_uri = target["connection_uris"][0]["connection_uri"]
    try:
        insert(source_uri, "from-source")
        insert(target_uri, "lost")
        response = api.post(
            f"/branches/{target['branch']['id']}/restore",
            json={"source_branch_id": source["branch"]["id"]},
        )
        assert response.status_code == 200
        wait(api, response.json()["operations"])
        assert labels(target_uri) == PARENT_ROWS | {"from-source"}
        assert labels(source_uri) == PARENT_ROWS | {"from-source"}
        assert uri_of(api, target["branch"]["id"]) == target_uri
    finally:
        delete(api, target["branch"]["id"])
        delete(api, source["branch"]["id"])


def test_restore_preserving_the_old_state_under_a_new_name(
    api: httpx.Client, parent: dict[str, Any]
):
    target = create(api, parent_id=parent["id"])
    target_id = target["branch"]["id"]
    target_uri = target["connection_uris"][0]["connection_uri"]
    insert(target_uri, "old-state")
    grandchild = create(api, endpoint=False, parent_id=target_id)
    kept_name = unique("kept")
    kept_id = None
    try:
        # with a child, the old state must be kept somewhere
        without = api.post(
            f"/branches/{target_id}/restore", json={"source_branch_id": parent["id"]}
        )
        assert_error(without, 400, "preserve_under_name")
        taken = api.post(
            f"/branches/{target_id}/restore",
            json={"source_branch_id": parent["id"], "preserve_under_name": parent["name"]},
        )
        assert_error(taken, 409)
        response = api.post(
            f"/branches/{target_id}/restore",
            json={"source_branch_id": parent["id"], "preserve_under_name": kept_name},
        )
        assert response.status_code == 200, response.text
        wait(api, response.json()["operations"])

        found = api.get("/branches", params={"search": kept_name}).json()["branches"]
        assert [b["name"] for b in found] == [kept_name]
        kept_id = found[0]["id"]
        assert branch(api, target_id)["restored_as"] == kept_id
        assert branch(api, target_id)["parent_id"] == kept_id  # where neonctl finds the backup
        assert branch(api, kept_id)["parent_id"] == parent["id"]
        assert branch(api, grandchild["branch"]["id"])["parent_id"] == kept_id
        assert labels(target_uri) == PARENT_ROWS
        assert uri_of(api, target_id) == target_uri

        # the preserved branch holds the old data; give it a compute to look
        endpoint = api.post(
            "/endpoints", json={"endpoint": {"branch_id": kept_id, "type": "read_write"}}
        )
        assert endpoint.status_code == 201
        wait(api, endpoint.json()["operations"])
        assert labels(uri_of(api, kept_id)) == PARENT_ROWS | {"old-state"}
    finally:
        delete(api, grandchild["branch"]["id"])
        delete(api, target_id)
        if kept_id:
            delete(api, kept_id)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 400, "source_branch_id"),
        ({"source_branch_id": 7}, 400, "source_branch_id"),
        ({"source_branch_id": "br-no-such-branch"}, 404, "br-no-such-branch"),
        ({"source_branch_id": "SELF"}, 400, "itself"),
        ({"source_branch_id": "PARENT", "source_lsn": "0/1DE2850"}, 400, "point-in-time"),
        (
            {"source_branch_id": "PARENT", "source_timestamp": "2026-01-01T00:00:00Z"},
            400,
            "point-in-time",
        ),
    ],
)
def test_restore_rejects_bad_requests(
    api: httpx.Client,
    child: dict[str, Any],
    parent: dict[str, Any],
    body: dict[str, Any],
    status: int,
    words: str,
):
    ids = {"SELF": child["id"], "PARENT": parent["id"]}
    if body.get("source_branch_id") in ids:
        body = {**body, "source_branch_id": ids[body["source_branch_id"]]}
    insert(child["uri"], "still-here")
    assert_error(api.post(f"/branches/{child['id']}/restore", json=body), status, words)
    assert branch(api, child["id"])["current_state"] == "ready"
    assert "still-here" in labels(child["uri"])


def test_restore_unknown_branch_is_404(api: httpx.Client, parent: dict[str, Any]):
    response = api.post("/branches/br-nope/restore", json={"source_branch_id": parent["id"]})
    assert_error(response, 404, "br-nope")


# -- schema ------------------------------------------------------------------------------------


def test_schema_and_compare_schema(
    api: httpx.Client, child: dict[str, Any], parent: dict[str, Any]
):
    with psycopg.connect(child["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE extra (id int PRIMARY KEY, note text)")
    schema = api.get(f"/branches/{child['id']}/schema", params={"db_name": DB})
    assert schema.status_code == 200
    assert "CREATE TABLE public.extra" in schema.json()["sql"]
    assert "CREATE TABLE public.items" in schema.json()["sql"]

    diff = api.get(f"/branches/{child['id']}/compare_schema", params={"db_name": DB}).json()["diff"]
    assert diff.startswith(f"--- a/{DB}\n+++ b/{DB}\n")
    added = [line for line in diff.splitlines() if line.startswith("+") and "CREATE TABLE" in line]
    assert added == ["+CREATE TABLE public.extra ("]
    assert not [line for line in diff.splitlines() if line.startswith("-") and "items" in line]
    # the other way round, the table is only in the base
    reverse = api.get(
        f"/branches/{parent['id']}/compare_schema",
        params={"db_name": DB, "base_branch_id": child["id"]},
    ).json()["diff"]
    assert "-CREATE TABLE public.extra (" in reverse.splitlines()
    same = api.get(
        f"/branches/{child['id']}/compare_schema",
        params={"db_name": DB, "base_branch_id": child["id"]},
    )
    assert same.json() == {"diff": ""}


def test_schema_errors(api: httpx.Client, child: dict[str, Any], main_id: str):
    path = f"/branches/{child['id']}"
    assert_error(api.get(f"{path}/schema"), 400, "db_name")
    assert_error(api.get(f"{path}/schema", params={"db_name": "nope"}), 404, "nope")
    assert_error(api.get("/branches/br-nope/schema", params={"db_name": DB}), 404, "br-nope")
    assert_error(api.get(f"{path}/compare_schema"), 400, "db_name")
    assert_error(api.get(f"{path}/compare_schema", params={"db_name": "nope"}), 404, "nope")
    unknown_base = {"db_name": DB, "base_branch_id": "br-nope"}
    assert_error(api.get(f"{path}/compare_schema", params=unknown_base), 404, "br-nope")
    for field in ("lsn", "timestamp", "base_lsn", "base_timestamp"):
        point = {"db_name": DB, field: "0/1DE2850"}
        assert_error(api.get(f"{path}/compare_schema", params=point), 400, "point-in-time")
        if not field.startswith("base_"):
            assert_error(api.get(f"{path}/schema", params=point), 400, "point-in-time")
    # the root branch has no parent to compare with
    assert_error(api.get(f"/branches/{main_id}/compare_schema", params={"db_name": DB}), 400)


# -- endpoints ---------------------------------------------------------------------------------


def test_endpoints(api: httpx.Client, child: dict[str, Any]):
    mine = api.get(f"/branches/{child['id']}/endpoints").json()["endpoints"]
    assert [e["id"] for e in mine] == [child["endpoint"]]
    everyone = api.get("/endpoints").json()["endpoints"]
    assert child["endpoint"] in {e["id"] for e in everyone}
    assert len({e["branch_id"] for e in everyone}) > 1
    got = api.get(f"/endpoints/{child['endpoint']}").json()["endpoint"]
    assert got["branch_id"] == child["id"] and got["type"] == "read_write"
    assert got["current_state"] == "active"

    suspend = api.post(f"/endpoints/{child['endpoint']}/suspend")
    assert suspend.status_code == 200
    assert suspend.json()["endpoint"]["pending_state"] == "idle"
    assert [op["action"] for op in suspend.json()["operations"]] == ["suspend_compute"]
    wait(api, suspend.json()["operations"])
    assert api.get(f"/endpoints/{child['endpoint']}").json()["endpoint"]["current_state"] == "idle"
    start = api.post(f"/endpoints/{child['endpoint']}/start")
    assert start.status_code == 200
    assert [op["action"] for op in start.json()["operations"]] == ["start_compute"]
    wait(api, start.json()["operations"])
    assert (
        api.get(f"/endpoints/{child['endpoint']}").json()["endpoint"]["current_state"] == "active"
    )

    read_only = api.post(
        "/endpoints", json={"endpoint": {"branch_id": child["id"], "type": "read_only"}}
    )
    assert read_only.status_code == 201
    assert read_only.json()["endpoint"]["type"] == "read_only"
    wait(api, read_only.json()["operations"])
    kinds = sorted(
        e["type"] for e in api.get(f"/branches/{child['id']}/endpoints").json()["endpoints"]
    )
    assert kinds == ["read_only", "read_write"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 400, "endpoint"),
        ({"endpoint": {"type": "read_only"}}, 400, "branch_id"),
        ({"endpoint": {"branch_id": "CHILD"}}, 400, "type"),
        ({"endpoint": {"branch_id": "CHILD", "type": "bogus"}}, 400, "type"),
        ({"endpoint": {"branch_id": "br-nope", "type": "read_only"}}, 404, "br-nope"),
        ({"endpoint": {"branch_id": "CHILD", "type": "read_write"}}, 409, "read_write"),
    ],
)
def test_create_endpoint_errors(
    api: httpx.Client, child: dict[str, Any], body: dict[str, Any], status: int, words: str
):
    spec = body.get("endpoint")
    if isinstance(spec, dict) and spec.get("branch_id") == "CHILD":
        body = {"endpoint": {**spec, "branch_id": child["id"]}}
    assert_error(api.post("/endpoints", json=body), status, words)
    assert len(api.get(f"/branches/{child['id']}/endpoints").json()["endpoints"]) == 1


def test_unknown_endpoints_and_branches_are_404(api: httpx.Client):
    for path in ("/endpoints/ep-nope", "/branches/br-nope/endpoints"):
        assert_error(api.get(path), 404, "nope")
    for action in ("start", "suspend"):
        assert_error(api.post(f"/endpoints/ep-nope/{action}"), 404, "ep-nope")
    for path in ("", "/databases", "/roles", "/databases/neondb", "/roles/neondb_owner"):
        assert_error(api.get(f"/branches/br-nope{path}"), 404, "br-nope")
    assert_error(api.post("/branches/br-nope/set_as_default"), 404, "br-nope")


# -- databases, roles, passwords, connection strings -------------------------------------------


def test_databases_roles_and_passwords(api: httpx.Client, child: dict[str, Any]):
    path = f"/branches/{child['id']}"
    databases = api.get(f"{path}/databases").json()["databases"]
    assert [(d["name"], d["owner_name"], d["branch_id"]) for d in databases] == [
        (DB, ROLE, child["id"])
    ]
    assert api.get(f"{path}/databases/{DB}").json()["database"]["name"] == DB
    assert_error(api.get(f"{path}/databases/nope"), 404, "nope")
    roles = api.get(f"{path}/roles").json()["roles"]
    assert [(r["name"], r["branch_id"]) for r in roles] == [(ROLE, child["id"])]
    assert all("password" not in r for r in roles), "listing roles does not reveal passwords"
    assert api.get(f"{path}/roles/{ROLE}").json()["role"]["name"] == ROLE
    assert_error(api.get(f"{path}/roles/nope"), 404, "nope")

    password = api.get(f"{path}/roles/{ROLE}/reveal_password").json()["password"]
    assert password == conninfo_to_dict(child["uri"])["password"]
    assert password == child["created"]["connection_uris"][0]["connection_parameters"]["password"]
    assert_error(api.get(f"{path}/roles/nope/reveal_password"), 404, "nope")
    assert_error(api.get(f"/branches/br-nope/roles/{ROLE}/reveal_password"), 404)


def test_connection_uri(api: httpx.Client, child: dict[str, Any], main_id: str):
    query = {"database_name": DB, "role_name": ROLE}
    direct = api.get("/connection_uri", params={**query, "branch_id": child["id"]}).json()["uri"]
    assert direct == child["uri"]
    pooled = api.get(
        "/connection_uri", params={**query, "branch_id": child["id"], "pooled": "true"}
    ).json()["uri"]
    assert labels(pooled) == PARENT_ROWS
    # no branch_id: the default branch
    default = api.get("/connection_uri", params=query).json()["uri"]
    assert default == uri_of(api, main_id) != direct
    with psycopg.connect(default) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ROLE,)

    assert_error(api.get("/connection_uri", params={"role_name": ROLE}), 400, "database_name")
    assert_error(api.get("/connection_uri", params={"database_name": DB}), 400, "role_name")
    bad_db = {**query, "branch_id": child["id"], "database_name": "nope"}
    assert_error(api.get("/connection_uri", params=bad_db), 404, "nope")
    bad_role = {**query, "branch_id": child["id"], "role_name": "nope"}
    assert_error(api.get("/connection_uri", params=bad_role), 404, "nope")
    assert_error(api.get("/connection_uri", params={**query, "branch_id": "br-nope"}), 404)


def test_connection_uri_needs_a_read_write_endpoint(api: httpx.Client, parent: dict[str, Any]):
    bare = create(api, endpoint=False, parent_id=parent["id"])
    try:
        params = {"branch_id": bare["branch"]["id"], "database_name": DB, "role_name": ROLE}
        assert_error(api.get("/connection_uri", params=params), 404, "endpoint")
    finally:
        delete(api, bare["branch"]["id"])


# -- operations --------------------------------------------------------------------------------


def test_operations(api: httpx.Client, child: dict[str, Any]):
    mine = {op["id"] for op in child["created"]["operations"]}
    op_id = next(iter(mine))
    got = api.get(f"/operations/{op_id}").json()["operation"]
    assert got["id"] == op_id and got["status"] == "finished" and got["branch_id"] == child["id"]
    assert got["total_duration_ms"] >= 0

    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/operations", params=params).json()
        assert len(page["operations"]) <= 7
        seen += [op["id"] for op in page["operations"]]
        cursor = page["pagination"]["cursor"]
        assert cursor
        if not page["operations"]:
            break
    assert mine <= set(seen)
    assert len(seen) == len(set(seen))

    assert_error(api.get("/operations/00000000-0000-0000-0000-000000000000"), 404, "operation")
    assert_error(api.get("/operations", params={"limit": 0}), 400, "limit")
    assert_error(api.get("/operations", params={"limit": 1001}), 400, "limit")
    assert_error(api.get("/operations", params={"cursor": "garbage"}), 400, "cursor")


# -- concurrency -------------------------------------------------------------------------------


def test_twenty_concurrent_branches_from_one_parent(
    local_neon: LocalNeonInfo, api: httpx.Client, parent: dict[str, Any]
):
    names = [unique(f"c{i:02d}") for i in range(20)]
    barrier = threading.Barrier(len(names))

    def make(name: str) -> tuple[str, str]:
        with make_client(local_neon) as client:
            barrier.wait()
            created = client.create_branch(name, parent_id=parent["id"])
            client.wait_for_operations(created.operations, timeout=120)
            assert created.connection_uris
            uri = created.connection_uris[0].connection_uri
            insert(uri, name)
            return created.branch.id, uri

    started = time.monotonic()
    with ThreadPoolExecutor(len(names)) as pool:
        made = list(pool.map(make, names))
    print(f"20 concurrent branches ready and written in {time.monotonic() - started:.2f} s")
    try:
        assert len({branch_id for branch_id, _ in made}) == 20
        assert len({uri for _, uri in made}) == 20
        for name, (branch_id, uri) in zip(names, made, strict=True):
            assert labels(uri) == PARENT_ROWS | {name}
            got = branch(api, branch_id)
            assert (got["name"], got["current_state"], got["parent_id"]) == (
                name,
                "ready",
                parent["id"],
            )
        assert labels(parent["uri"]) == PARENT_ROWS
    finally:
        for branch_id, _ in made:
            api.delete(f"/branches/{branch_id}")


# -- project-wide changes, on servers of their own ---------------------------------------------


def test_set_as_default_moves_the_flag(fresh_neon: LocalNeonInfo):
    with http(fresh_neon) as api:
        old = next(b for b in api.get("/branches").json()["branches"] if b["default"])
        new = create(api, expires_at=iso_tomorrow())
        new_id = new["branch"]["id"]
        assert_error(api.post(f"/branches/{new_id}/set_as_default"), 400, "expiration")
        api.patch(f"/branches/{new_id}", json={"branch": {"expires_at": None}})

        response = api.post(f"/branches/{new_id}/set_as_default")
        assert response.status_code == 200
        assert response.json()["branch"]["default"] is True
        defaults = [b["id"] for b in api.get("/branches").json()["branches"] if b["default"]]
        assert defaults == [new_id]
        assert branch(api, old["id"])["default"] is False
        query = {"database_name": DB, "role_name": ROLE}
        assert api.get("/connection_uri", params=query).json()["uri"] == uri_of(api, new_id)
        # the rules follow the flag
        assert_error(api.delete(f"/branches/{new_id}"), 422, "default")
        tomorrow = {"branch": {"expires_at": iso_tomorrow()}}
        assert_error(api.patch(f"/branches/{new_id}", json=tomorrow), 400, "default")
        again = api.post(f"/branches/{new_id}/set_as_default")
        assert again.status_code == 200
        # a branch created without a parent_id now starts from the new default
        fresh = create(api, endpoint=False)
        assert fresh["branch"]["parent_id"] == new_id


def test_restore_the_default_branch_from_a_child(fresh_neon: LocalNeonInfo):
    """Promote by restore: main takes the feature's state, its old state is kept aside."""
    with http(fresh_neon) as api:
        main = next(b for b in api.get("/branches").json()["branches"] if b["default"])
        main_uri = uri_of(api, main["id"])
        with psycopg.connect(main_uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL)")
            conn.execute("INSERT INTO items (label) VALUES ('before')")
        feature = create(api)
        insert(feature["connection_uris"][0]["connection_uri"], "feature")

        path = f"/branches/{main['id']}/restore"
        source = {"source_branch_id": feature["branch"]["id"]}
        assert_error(api.post(path, json=source), 400, "preserve_under_name")
        response = api.post(path, json={**source, "preserve_under_name": "main-before"})
        assert response.status_code == 200, response.text
        wait(api, response.json()["operations"])

        assert labels(main_uri) == {"before", "feature"}
        assert uri_of(api, main["id"]) == main_uri
        assert branch(api, main["id"])["default"] is True
        kept = api.get("/branches", params={"search": "main-before"}).json()["branches"]
        assert [b["name"] for b in kept] == ["main-before"]
        assert branch(api, feature["branch"]["id"])["parent_id"] == kept[0]["id"]


def hung_up_on(port: int) -> None:
    """Leave a connection that PostgreSQL closed first in TIME_WAIT on its port for a minute.

    Sessions the server ends (on a reset, a branch, a stop) leave these behind; the next start
    must still take the remembered port, or every saved connection string breaks. An unknown
    protocol version makes PostgreSQL answer with an error and hang up at once.
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"\x00\x00\x00\x08\x00\x00\x00\x00")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert b"unsupported frontend protocol" in answer


def test_state_and_data_survive_a_restart(tmp_path: Path):
    settings, info = start_local_neon(tmp_path / "project")
    try:
        with make_client(info) as client:
            created = client.create_branch("keep-me", annotations={"ticket": "NF-1"})
            client.wait_for_operations(created.operations)
            assert created.connection_uris
            uri = created.connection_uris[0].connection_uri
            client.update_branch(created.branch.id, protected=True)
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL)")
            conn.execute("INSERT INTO items (label) VALUES ('durable')")
        held = psycopg.connect(uri)  # a session open across the stop
        held.execute("SELECT 1")
        hung_up_on(info.pg_port)
        assert service.down(settings) is True
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        held.close()
        assert service.running(settings) is None

        again, started = service.up(settings)
        assert started and again.pid != info.pid
        assert (again.api_host, again.token, again.pg_port) == (
            info.api_host,
            info.token,
            info.pg_port,
        )
        with make_client(again) as client:
            kept = client.find_branch("keep-me")
            assert kept is not None
            assert kept.id == created.branch.id
            assert kept.annotations == {"ticket": "NF-1"}
            assert kept.protected and kept.current_state == "ready"
            assert [b.name for b in client.list_branches() if b.default] == ["main"]
            assert client.connection_uri(kept.id, DB, ROLE) == uri
            assert client.get_operation(created.operations[0].id).status == "finished"
        assert labels(uri) == {"durable"}
    finally:
        service.down(settings)


def test_up_recovers_after_the_server_was_killed(tmp_path: Path):
    settings, info = start_local_neon(tmp_path / "project")
    try:
        with make_client(info) as client:
            created = client.create_branch("before-the-crash", endpoint=False)
            client.wait_for_operations(created.operations)
        os.kill(info.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while service.running(settings) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        again, started = service.up(settings)
        assert started and again.pid != info.pid
        with make_client(again) as client:
            assert client.find_branch("before-the-crash") is not None
            after = client.create_branch("after-the-crash")
            client.wait_for_operations(after.operations)
            assert after.connection_uris
            with psycopg.connect(after.connection_uris[0].connection_uri) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        service.down(settings)
    assert not (info.state_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL stopped too"


# -- the CLI: neonflow local up | status | down ------------------------------------------------


def listeners(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                if len(address) == 8:
                    found.append(".".join(str(b) for b in reversed(bytes.fromhex(address))))
                else:
                    found.append(f"ipv6:{address}")
    return found


@pytest.fixture
def cli_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "project"
    root.mkdir()
    state = tmp_path / "state"
    (root / "neonflow.toml").write_text(f'[local]\nstate_dir = "{state}"\n')
    monkeypatch.chdir(root)
    for name in list(os.environ):
        if name.startswith("NEONFLOW_") or name in ("NEON_API_KEY", "NEON_API_HOST"):
            monkeypatch.delenv(name)
    yield state
    service.down(load_settings(root / "neonflow.toml"))


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_local_up_status_down_through_the_cli(cli_project: Path):
    state = cli_project
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(app, ["local", *args])
        assert result.exit_code == 0, result.output
        return result

    assert json.loads(run("status", "--json").stdout) == {
        "running": False,
        "state_dir": str(state),
    }
    assert "started" in run("up").stderr
    assert "already running" in run("up").stderr
    assert json.loads(run("up", "--json").stdout)["started"] is False

    status = json.loads(run("status", "--json").stdout)
    assert status["running"] is True and status["branches"] == 1
    assert status["api_host"].startswith("http://127.0.0.1:")
    token_file = Path(status["token_file"])
    assert token_file.parent == state
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "local.json").stat().st_mode) == 0o600
    api_port = int(httpx.URL(status["api_host"]).port or 0)
    for port in (api_port, status["postgres_port"]):
        assert listeners(port) == ["127.0.0.1"], f"port {port} must listen on loopback only"
    assert token_file.read_text().strip() not in run("status").output

    # a server killed with -9 leaves a stale pid file: status says so and up starts anew
    os.kill(status["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while json.loads(run("status", "--json").stdout)["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "not running" in run("status").stderr
    assert "started" in run("up").stderr
    again = json.loads(run("status", "--json").stdout)
    assert again["running"] is True and again["pid"] != status["pid"]
    assert again["branches"] == 1 and again["api_host"] == status["api_host"]

    assert "stopped" in run("down").stderr
    assert "not running" in run("down").stderr
    assert json.loads(run("status", "--json").stdout)["running"] is False
    assert not (state / "pgdata" / "postmaster.pid").exists()
