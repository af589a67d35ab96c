"""What Neon's official clients send, as they send it, found by running them against the local Neon.

Each test is the HTTP conversation of one client call (``neon-api`` from PyPI,
``@neondatabase/api-client`` from npm, ``neonctl``) that the local Neon once answered other than
Neon does; the client that tripped over it is named in the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from neonflow.local.service import LocalNeonInfo
from tests.local.test_server import DB, ROLE, assert_error, create, delete, http, unique, wait


@pytest.fixture(scope="module")
def api(local_neon: LocalNeonInfo) -> Iterator[httpx.Client]:
    with http(local_neon) as client:
        yield client


@pytest.fixture(scope="module")
def branch(api: httpx.Client) -> Iterator[dict[str, Any]]:
    created = create(api, name=unique("clients"))
    yield created["branch"]
    delete(api, created["branch"]["id"])


@pytest.mark.parametrize(("sent", "pooled"), [("False", False), ("True", True), ("1", True)])
def test_booleans_in_queries_are_read_as_neon_reads_them(
    api: httpx.Client, branch: dict[str, Any], sent: str, pooled: bool
):
    # neon-api's connection_uri() always sends pooled=<Python bool>, which requests writes
    # "False"/"True"; Neon reads query booleans as Go's strconv.ParseBool does.
    query = {"branch_id": branch["id"], "database_name": DB, "role_name": ROLE}
    response = api.get("/connection_uri", params={**query, "pooled": sent})
    assert response.status_code == 200, response.text
    plain = api.get("/connection_uri", params={**query, "pooled": str(pooled).lower()})
    assert response.json() == plain.json()
    assert_error(api.get("/connection_uri", params={**query, "pooled": "yes"}), 400, "pooled")


def test_deleting_what_is_not_there_is_204(api: httpx.Client, branch: dict[str, Any]):
    # The spec's 204 "if the endpoint/database/role doesn't exist or has already been deleted":
    # the SDK's deleteProjectEndpoint (and neon-api's endpoint_delete) raised on our 404.
    path = f"/branches/{branch['id']}"
    for gone in ("/endpoints/ep-gone-123", f"{path}/databases/gone", f"{path}/roles/gone"):
        response = api.delete(gone)
        assert (response.status_code, response.content) == (204, b""), (gone, response.text)
    made = api.post(f"{path}/roles", json={"role": {"name": "short_lived"}})
    assert made.status_code == 201, made.text
    wait(api, made.json()["operations"])
    first = api.delete(f"{path}/roles/short_lived")
    assert first.status_code == 200, first.text
    wait(api, first.json()["operations"])
    assert api.delete(f"{path}/roles/short_lived").status_code == 204
    # An unknown branch is still a 404, as on Neon.
    assert_error(api.delete("/branches/br-nope-123/databases/neondb"), 404, "br-nope-123")


def test_set_as_primary_is_set_as_default(fresh_neon: LocalNeonInfo):
    # neon-api's branch_set_as_primary() calls the older name of set_as_default.
    with http(fresh_neon) as api:
        main = next(b for b in api.get("/branches").json()["branches"] if b["default"])
        other = create(api, name=unique("primary"))["branch"]
        response = api.post(f"/branches/{other['id']}/set_as_primary")
        assert response.status_code == 200, response.text
        assert response.json()["branch"]["default"] is True
        wait(api, response.json()["operations"])
        assert api.get(f"/branches/{main['id']}").json()["branch"]["default"] is False
        back = api.post(f"/branches/{main['id']}/set_as_primary")
        assert back.status_code == 200, back.text
        assert_error(api.post("/branches/br-nope-123/set_as_primary"), 404, "br-nope-123")


def items(uri: str) -> set[str]:
    with psycopg.connect(uri, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT label FROM items")}


def _uri(api: httpx.Client, branch_id: str, database: str) -> str:
    params = {"branch_id": branch_id, "database_name": database, "role_name": ROLE}
    response = api.get("/connection_uri", params=params)
    assert response.status_code == 200, response.text
    return str(response.json()["uri"])


def _add_database(api: httpx.Client, branch_id: str, name: str, label: str) -> None:
    made = api.post(
        f"/branches/{branch_id}/databases", json={"database": {"name": name, "owner_name": ROLE}}
    )
    assert made.status_code == 201, made.text
    wait(api, made.json()["operations"])
    with psycopg.connect(_uri(api, branch_id, name), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (label text)")
        conn.execute("INSERT INTO items VALUES (%s)", (label,))


def _names(api: httpx.Client, branch_id: str) -> set[str]:
    found = api.get(f"/branches/{branch_id}/databases").json()["databases"]
    return {d["name"] for d in found}


def _restore(api: httpx.Client, branch_id: str, **body: str) -> None:
    response = api.post(f"/branches/{branch_id}/restore", json=body)
    assert response.status_code == 200, response.text
    wait(api, response.json()["operations"])


def test_reset_takes_the_sources_databases_whatever_the_branch_had(api: httpx.Client):
    # `neonctl branches reset --parent` after a database was added to the parent failed its
    # operation; one the child had added got the parent's other database's data under its name.
    parent = create(api, name=unique("rs-parent"))["branch"]
    child = create(api, name=unique("rs-child"), parent_id=parent["id"])["branch"]
    kept_id = None
    try:
        _add_database(api, parent["id"], "extra", "parent's extra")
        _restore(api, child["id"], source_branch_id=parent["id"])
        assert _names(api, child["id"]) == {DB, "extra"}
        assert items(_uri(api, child["id"], "extra")) == {"parent's extra"}

        _add_database(api, child["id"], "only_child", "child's own")
        _add_database(api, parent["id"], "more", "parent's more")
        _restore(api, child["id"], source_branch_id=parent["id"], preserve_under_name=unique("old"))
        assert _names(api, child["id"]) == {DB, "extra", "more"}
        assert items(_uri(api, child["id"], "extra")) == {"parent's extra"}
        assert items(_uri(api, child["id"], "more")) == {"parent's more"}
        kept_id = api.get(f"/branches/{child['id']}").json()["branch"]["parent_id"]
        assert _names(api, kept_id) == {DB, "extra", "only_child"}
        made = api.post(
            "/endpoints", json={"endpoint": {"branch_id": kept_id, "type": "read_write"}}
        )
        assert made.status_code == 201, made.text
        wait(api, made.json()["operations"])
        assert items(_uri(api, kept_id, "only_child")) == {"child's own"}

        _add_database(api, child["id"], "only_child", "child's own again")
        _restore(api, child["id"], source_branch_id=parent["id"])
        assert _names(api, child["id"]) == {DB, "extra", "more"}
        again = api.post(
            f"/branches/{child['id']}/databases",
            json={"database": {"name": "only_child", "owner_name": ROLE}},
        )
        assert again.status_code == 201, "the dropped database's name is free again"
        wait(api, again.json()["operations"])
    finally:
        delete(api, child["id"])
        if kept_id and kept_id != parent["id"]:
            delete(api, kept_id)
        delete(api, parent["id"])


def _roles(api: httpx.Client, branch_id: str) -> set[str]:
    return {r["name"] for r in api.get(f"/branches/{branch_id}/roles").json()["roles"]}


def test_roles_belong_to_their_branch(api: httpx.Client):
    # As on Neon, a role made on one branch is not on the others: with one set for the project,
    # `neonctl roles create --branch feature` made `neonctl connection-string main` fail with
    # "Multiple roles found for the branch".
    app = unique("app").replace("-", "_")
    parent = create(api, name=unique("roles-parent"))["branch"]
    other = create(api, name=unique("roles-other"), parent_id=parent["id"])["branch"]
    child = None
    try:
        made = api.post(f"/branches/{parent['id']}/roles", json={"role": {"name": app}})
        assert made.status_code == 201, made.text
        wait(api, made.json()["operations"])
        password = made.json()["role"]["password"]
        assert _roles(api, parent["id"]) == {ROLE, app}
        assert _roles(api, other["id"]) == {ROLE}
        assert_error(api.get(f"/branches/{other['id']}/roles/{app}"), 404, app)
        assert_error(api.get(f"/branches/{other['id']}/roles/{app}/reveal_password"), 404)
        query = {"branch_id": other["id"], "database_name": DB, "role_name": app}
        assert_error(api.get("/connection_uri", params=query), 404, app)
        on_other = {"database": {"name": "appdb", "owner_name": app}}
        assert_error(api.post(f"/branches/{other['id']}/databases", json=on_other), 404)

        # A branch made now has the role, with its password; the one made before never has it,
        # not even through the front door.
        created = create(api, name=unique("roles-child"), parent_id=parent["id"])
        child = created["branch"]
        assert {r["name"] for r in created["roles"]} == {ROLE, app}
        assert "connection_uris" not in created  # two roles, as Neon's spec says
        reveal = f"/branches/{child['id']}/roles/{app}/reveal_password"
        assert api.get(reveal).json()["password"] == password
        as_app = _uri(api, child["id"], DB).replace(f"{ROLE}:", f"{app}:", 1)
        as_app = as_app.replace(
            api.get(f"/branches/{child['id']}/roles/{ROLE}/reveal_password").json()["password"],
            password,
        )
        with psycopg.connect(as_app) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (app,)
        other_host = _uri(api, other["id"], DB).split("@")[1].split("/")[0]
        child_host = as_app.split("@")[1].split("/")[0]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(as_app.replace(child_host, other_host)).close()

        # Each branch re-keys and drops its own.
        reset = api.post(f"/branches/{child['id']}/roles/{app}/reset_password")
        assert reset.status_code == 200, reset.text
        wait(api, reset.json()["operations"])
        assert api.get(reveal).json()["password"] != password
        parent_reveal = f"/branches/{parent['id']}/roles/{app}/reveal_password"
        assert api.get(parent_reveal).json()["password"] == password
        gone = api.delete(f"/branches/{child['id']}/roles/{app}")
        assert gone.status_code == 200, gone.text
        wait(api, gone.json()["operations"])
        assert _roles(api, child["id"]) == {ROLE}
        assert _roles(api, parent["id"]) == {ROLE, app}
        assert api.get(parent_reveal).json()["password"] == password
    finally:
        for b in (child, other, parent):
            if b is not None:
                delete(api, b["id"])


def _as(api: httpx.Client, branch_id: str, role: dict[str, Any]) -> str:
    query = {"branch_id": branch_id, "database_name": DB, "role_name": role["name"]}
    response = api.get("/connection_uri", params=query)
    assert response.status_code == 200, response.text
    return str(response.json()["uri"])


def test_no_login_is_the_branchs_and_a_role_made_again_logs_in(api: httpx.Client):
    # One PostgreSQL role serves a name on every branch: NOLOGIN made on one branch refused
    # the login role of that name made on another ("role … is not permitted to log in").
    name = unique("dual").replace("-", "_")
    first = create(api, name=unique("nologin"))["branch"]
    second = create(api, name=unique("login"))["branch"]
    try:
        quiet = api.post(
            f"/branches/{first['id']}/roles", json={"role": {"name": name, "no_login": True}}
        )
        assert quiet.status_code == 201, quiet.text
        assert quiet.json()["role"]["authentication_method"] == "no_login"
        made = api.post(f"/branches/{second['id']}/roles", json={"role": {"name": name}})
        assert made.status_code == 201, made.text
        role = made.json()["role"]
        assert role["authentication_method"] == "password"
        with psycopg.connect(_as(api, second["id"], role)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (name,)
        with psycopg.connect(_uri(api, second["id"], DB), autocommit=True) as conn:
            # A privilege on the branch's schema: PostgreSQL will not drop the role then.
            conn.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"')
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(_as(api, first["id"], quiet.json()["role"])).close()

        # Dropped from both (a privilege keeps it in PostgreSQL, without login), then made again.
        for branch_id in (first["id"], second["id"]):
            assert api.delete(f"/branches/{branch_id}/roles/{name}").status_code == 200
        again = api.post(f"/branches/{second['id']}/roles", json={"role": {"name": name}})
        assert again.status_code == 201, again.text
        with psycopg.connect(_as(api, second["id"], again.json()["role"])) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (name,)
    finally:
        for b in (first, second):
            delete(api, b["id"])


def test_the_children_of_a_protected_branch_get_new_passwords(api: httpx.Client):
    # Neon's protected branches: their children's roles get new passwords (neonctl warns of it).
    parent = create(api, name=unique("guarded"))["branch"]
    child = None
    reveal = f"/roles/{ROLE}/reveal_password"
    try:
        guard = api.patch(f"/branches/{parent['id']}", json={"branch": {"protected": True}})
        assert guard.status_code == 200, guard.text
        wait(api, guard.json()["operations"])
        created = create(api, name=unique("guarded-child"), parent_id=parent["id"])
        child = created["branch"]
        password = api.get(f"/branches/{child['id']}{reveal}").json()["password"]
        assert password != api.get(f"/branches/{parent['id']}{reveal}").json()["password"]
        assert created["connection_uris"][0]["connection_parameters"]["password"] == password
        with psycopg.connect(_uri(api, child["id"], DB)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        if child is not None:
            delete(api, child["id"])
        api.patch(f"/branches/{parent['id']}", json={"branch": {"protected": False}})
        delete(api, parent["id"])


def test_me_has_what_neon_api_reads(local_neon: LocalNeonInfo):
    # neon-api 0.3.0's me() reads the answer into a model that requires billing_account.
    with httpx.Client(headers={"Authorization": f"Bearer {local_neon.token}"}) as client:
        me = client.get(f"{local_neon.api_host}/users/me")
    assert me.status_code == 200, me.text
    billing = me.json()["billing_account"]
    assert billing["payment_source"]["type"] and billing["state"] == "active"
    assert billing["subscription_type"] == "free_v2" and billing["payment_method"] == "none"
