"""The local Neon's PostgreSQL front door, over real TLS to a real server.

Each endpoint has its own address; URIs are Neon's shape; TLS with the exported CA; SCRAM and
SCRAM-PLUS against the API password; Neon database names; nothing of another branch reachable;
read_only endpoints; cancel requests; hosts kept over a restart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg import errors, pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from neonflow.local import service
from neonflow.local.paths import StatePaths, read_json
from neonflow.local.service import LocalNeonInfo
from tests.conftest import start_local_neon
from tests.local.test_server import DB, ROLE, create, delete, http, labels, unique, wait


@pytest.fixture(scope="module")
def api(local_neon: LocalNeonInfo) -> Iterator[httpx.Client]:
    with http(local_neon) as client:
        yield client


@pytest.fixture(scope="module")
def two(api: httpx.Client) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Two sibling branches, each with a table ``items`` holding its own name."""
    made = []
    for _ in range(2):
        created = create(api, name=unique("proxy"))
        uri = created["connection_uris"][0]["connection_uri"]
        name = created["branch"]["name"]
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (label text)")
            conn.execute("INSERT INTO items VALUES (%s)", (name,))
        made.append({"created": created, "uri": uri, "name": name, "id": created["branch"]["id"]})
    yield made[0], made[1]
    for b in made:
        delete(api, b["id"])


def password(api: httpx.Client, branch_id: str) -> str:
    got = api.get(f"/branches/{branch_id}/roles/{ROLE}/reveal_password")
    assert got.status_code == 200, got.text
    return str(got.json()["password"])


def endpoint_of(api: httpx.Client, branch_id: str) -> dict[str, Any]:
    found = api.get(f"/branches/{branch_id}/endpoints").json()["endpoints"]
    return next(e for e in found if e["type"] == "read_write")  # type: ignore[no-any-return]


def built(endpoint: dict[str, Any], secret: str, database: str = DB, **query: str) -> str:
    """A URI built as neonctl and create-branch-action build it."""
    extra = {"sslmode": "require", "channel_binding": "require", **query}
    q = "&".join(f"{k}={v}" for k, v in extra.items())
    return f"postgresql://{ROLE}:{quote(secret, safe='')}@{endpoint['host']}/{database}?{q}"


def refused(uri: str, **kwargs: Any) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(uri, connect_timeout=10, **kwargs).close()
    return str(caught.value)


def test_uris_are_neon_shaped_and_connect_over_tls(api: httpx.Client, two: Any):
    a, _ = two
    endpoint = endpoint_of(api, a["id"])
    assert endpoint["host"] == a["created"]["endpoints"][0]["host"]
    details = a["created"]["connection_uris"][0]
    params = details["connection_parameters"]
    assert (params["database"], params["host"]) == (DB, endpoint["host"])
    assert params["pooler_host"] == endpoint["host"].replace(
        endpoint["id"], endpoint["id"] + "-pooler"
    )
    parts = conninfo_to_dict(a["uri"])
    assert (parts["dbname"], parts["sslmode"], parts["channel_binding"]) == (
        DB,
        "require",
        "require",
    )
    for uri in (a["uri"], built(endpoint, password(api, a["id"]))):
        with psycopg.connect(uri) as conn:
            assert conn.pgconn.ssl_in_use
            assert labels(uri) == {a["name"]}
    pooled = api.get(
        "/connection_uri",
        params={"branch_id": a["id"], "database_name": DB, "role_name": ROLE, "pooled": "true"},
    ).json()["uri"]
    assert labels(pooled) == {a["name"]}  # a session locally, not PgBouncer


def test_verify_full_with_the_exported_ca(api: httpx.Client, two: Any, local_neon: LocalNeonInfo):
    a, _ = two
    ca = StatePaths(local_neon.state_dir).tls / "ca.crt"
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    with psycopg.connect(a["uri"], sslmode="verify-full", sslrootcert=str(ca)) as conn:
        assert conn.pgconn.ssl_in_use
    # Without the CA a verifying client refuses the server, as it should.
    other = Path(local_neon.state_dir) / "no-such-ca.crt"
    assert "certificate" in refused(a["uri"], sslmode="verify-full", sslrootcert=str(other))


def test_plain_text_is_refused_as_neon_refuses_it(two: Any):
    a, _ = two
    assert "connection is insecure (try using `sslmode=require`)" in refused(
        a["uri"], sslmode="disable"
    )


def test_scram_without_channel_binding_and_wrong_passwords(api: httpx.Client, two: Any):
    a, _ = two
    endpoint = endpoint_of(api, a["id"])
    secret = password(api, a["id"])
    assert labels(built(endpoint, secret, channel_binding="disable")) == {a["name"]}
    message = refused(built(endpoint, secret + "x"))
    assert f'password authentication failed for user "{ROLE}"' in message
    nobody = built(endpoint, secret).replace(f"{ROLE}:", "nobody:", 1)
    assert 'password authentication failed for user "nobody"' in refused(nobody)


def test_no_other_branch_is_reachable(api: httpx.Client, two: Any, local_neon: LocalNeonInfo):
    a, b = two
    endpoint_a, endpoint_b = endpoint_of(api, a["id"]), endpoint_of(api, b["id"])
    assert endpoint_a["host"] != endpoint_b["host"]
    secret = password(api, a["id"])
    # by another branch's physical name, or main's, through A's address
    main = next(x for x in api.get("/branches").json()["branches"] if x["default"])
    for physical in (f"{DB}_{b['id']}", f"{DB}_{main['id']}", "postgres", "template1"):
        assert "does not exist" in refused(built(endpoint_a, secret, database=physical))
    # B's address with B's Neon name reaches B only (the address picks the branch)
    assert labels(built(endpoint_b, password(api, b["id"]))) == {b["name"]}
    # the endpoint named in options must be the one at that address
    wrong = built(endpoint_a, secret, options=quote(f"endpoint={endpoint_b['id']}"))
    assert endpoint_b["id"] in refused(wrong)
    right = built(endpoint_a, secret, options=quote(f"endpoint={endpoint_a['id']}"))
    assert labels(right) == {a["name"]}
    # PostgreSQL itself refuses the API password
    config = read_json(StatePaths(local_neon.state_dir).config)
    direct = make_conninfo(
        host="127.0.0.1",
        port=config["pg_port"],
        dbname=f"{DB}_{b['id']}",
        user=ROLE,
        password=secret,
        sslmode="disable",
    )
    assert "password authentication failed" in refused(direct)


@pytest.fixture(scope="module")
def read_only(api: httpx.Client, two: Any) -> str:
    """The URI of a read_only endpoint on the first branch."""
    a, _ = two
    made = api.post("/endpoints", json={"endpoint": {"branch_id": a["id"], "type": "read_only"}})
    assert made.status_code == 201, made.text
    wait(api, made.json()["operations"])
    return built(made.json()["endpoint"], password(api, a["id"]))


def test_read_only_endpoint_refuses_writes(two: Any, read_only: str):
    a, _ = two
    uri = read_only
    assert labels(uri) == {a["name"]}
    with psycopg.connect(uri, autocommit=True) as conn:
        with pytest.raises(errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO items VALUES ('no')")
        for sneaky in (
            "SET default_transaction_read_only = off",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ  WRITE",
            "BEGIN READ/**/WRITE",
            "reset transaction_read_only",
        ):
            with pytest.raises(errors.ReadOnlySqlTransaction):
                conn.execute(sneaky)
        with pytest.raises(errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO items VALUES ('still no')")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
        # many messages in one read go through the statement filter whole
        assert len(conn.execute("SELECT g FROM generate_series(1, 50000) g").fetchall()) == 50000
    with psycopg.connect(uri) as conn:  # the extended protocol too, in a transaction
        with pytest.raises(errors.ReadOnlySqlTransaction):
            conn.execute("SET transaction_read_only = %s", ("off",))
    # A session made writable some other way is ended before its next statement.
    conn = psycopg.connect(uri, autocommit=True)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT set_config('default_transaction_' || 'read_only', 'off', false)")
        conn.execute("INSERT INTO items VALUES ('never')")
    conn.close()
    assert labels(uri) == {a["name"]}


def test_read_only_refusal_among_messages_sent_together(two: Any, read_only: str):
    """A pipeline sent in one write: the statement that would make the session writable is
    refused where it stands, the one before it ran, and the session stays read-only."""
    a, _ = two
    with psycopg.connect(read_only, autocommit=True) as conn:
        pg = conn.pgconn
        pg.nonblocking = 0  # libpq then sends the whole pipeline at the sync, in one write
        pg.enter_pipeline_mode()
        pg.send_query_params(b"SELECT label FROM items", None)
        pg.send_query_params(b"SET default_transaction_read_only = $1", [b"off"])
        pg.send_query_params(b"SELECT 2", None)
        pg.pipeline_sync()
        results = []
        while (result := pg.get_result()) is None or result.status != pq.ExecStatus.PIPELINE_SYNC:
            if result is not None:
                value = result.get_value(0, 0) if result.ntuples else None
                results.append(
                    (result.status, result.error_field(pq.DiagnosticField.SQLSTATE), value)
                )
        pg.exit_pipeline_mode()
        pg.nonblocking = 1
        assert results == [
            (pq.ExecStatus.TUPLES_OK, None, a["name"].encode()),
            (pq.ExecStatus.FATAL_ERROR, b"25006", None),
            (pq.ExecStatus.PIPELINE_ABORTED, None, None),
        ]
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)


def test_cancel_reaches_the_right_backend(two: Any):
    a, _ = two
    with psycopg.connect(a["uri"], autocommit=True) as conn, psycopg.connect(a["uri"]) as other:
        pid = conn.info.backend_pid
        started = threading.Event()

        def cancel_when_running() -> None:
            started.wait(30)
            while other.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone() != ("active",):
                other.rollback()
                time.sleep(0.01)
            conn.cancel_safe()

        thread = threading.Thread(target=cancel_when_running)
        thread.start()
        started.set()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(60)")
        thread.join()
        assert conn.execute("SELECT 1").fetchone() == (1,)

        def cancel_from_sql() -> None:
            with psycopg.connect(a["uri"], autocommit=True) as third:
                while not third.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE pid = %s AND state = 'active'",
                    (pid,),
                ).fetchall():
                    time.sleep(0.01)

        thread = threading.Thread(target=cancel_from_sql)
        thread.start()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(60)")
        thread.join()


def test_a_restart_keeps_every_host_and_uri(fresh_neon: LocalNeonInfo):
    with http(fresh_neon) as api:
        created = create(api, name=unique("kept"))
        before = {e["id"]: e["host"] for e in api.get("/endpoints").json()["endpoints"]}
        uri = created["connection_uris"][0]["connection_uri"]
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (label text)")
            conn.execute("INSERT INTO items VALUES ('kept')")
    settings, _ = start_local_neon(Path(fresh_neon.state_dir).parent)
    service.down(settings)
    _, info = start_local_neon(Path(fresh_neon.state_dir).parent)
    with http(info) as api:
        after = {e["id"]: e["host"] for e in api.get("/endpoints").json()["endpoints"]}
        assert after == before
        query = {"branch_id": created["branch"]["id"], "database_name": DB, "role_name": ROLE}
        assert api.get("/connection_uri", params=query).json()["uri"] == uri
    assert labels(uri) == {"kept"}


# -- the API calls that change what the proxy lets in (part 2 of issue 10) ---------------------


def test_databases_and_roles_are_reachable_at_once(api: httpx.Client, two: Any):
    a, b = two
    endpoint = endpoint_of(api, a["id"])
    made = api.post(
        f"/branches/{a['id']}/databases", json={"database": {"name": "extra", "owner_name": ROLE}}
    )
    assert made.status_code == 201, made.text
    assert [op["status"] for op in made.json()["operations"]] == ["finished"]
    secret = password(api, a["id"])
    with psycopg.connect(built(endpoint, secret, database="extra"), autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    # another branch has no database of that name
    assert "does not exist" in refused(
        built(endpoint_of(api, b["id"]), password(api, b["id"]), database="extra")
    )
    renamed = api.patch(
        f"/branches/{a['id']}/databases/extra", json={"database": {"name": "renamed"}}
    )
    assert renamed.status_code == 200, renamed.text
    with psycopg.connect(built(endpoint, secret, database="renamed")) as conn:
        assert conn.execute("SELECT count(*) FROM only_here").fetchone() == (0,)
    gone = api.delete(f"/branches/{a['id']}/databases/renamed")
    assert gone.status_code == 200, gone.text
    assert "does not exist" in refused(built(endpoint, secret, database="renamed"))

    role = api.post(f"/branches/{a['id']}/roles", json={"role": {"name": "reader"}})
    assert role.status_code == 201, role.text
    first = role.json()["role"]["password"]
    as_reader = built(endpoint, first).replace(f"{ROLE}:", "reader:", 1)
    with psycopg.connect(as_reader) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("reader",)
    for method in ("GET", "POST"):
        shown = api.request(method, f"/branches/{a['id']}/roles/reader/reveal_password")
        assert shown.json() == {"password": first}
    reset = api.post(f"/branches/{a['id']}/roles/reader/reset_password")
    assert reset.status_code == 200, reset.text
    second = reset.json()["role"]["password"]
    assert second != first
    assert "password authentication failed" in refused(as_reader)
    psycopg.connect(as_reader.replace(quote(first, safe=""), quote(second, safe=""))).close()
    deleted = api.delete(f"/branches/{a['id']}/roles/reader")
    assert deleted.status_code == 200, deleted.text
    assert "password authentication failed" in refused(as_reader)


def test_endpoints_update_restart_delete(api: httpx.Client, two: Any):
    a, _ = two
    made = api.post("/endpoints", json={"endpoint": {"branch_id": a["id"], "type": "read_only"}})
    wait(api, made.json()["operations"])
    endpoint = made.json()["endpoint"]
    query = {"endpoint_id": endpoint["id"], "database_name": DB, "role_name": ROLE}
    uri = api.get("/connection_uri", params=query).json()["uri"]
    assert conninfo_to_dict(uri)["host"] == endpoint["host"]
    assert labels(uri) == {a["name"]}
    patched = api.patch(f"/endpoints/{endpoint['id']}", json={"endpoint": {"disabled": True}})
    assert patched.status_code == 200 and patched.json()["endpoint"]["disabled"] is True
    assert "disabled" in refused(uri)
    api.patch(f"/endpoints/{endpoint['id']}", json={"endpoint": {"disabled": False}})
    restarted = api.post(f"/endpoints/{endpoint['id']}/restart")
    assert restarted.status_code == 200, restarted.text
    assert labels(uri) == {a["name"]}
    assert api.delete(f"/endpoints/{endpoint['id']}").status_code == 200
    assert api.get(f"/endpoints/{endpoint['id']}").status_code == 404
    assert api.get("/connection_uri", params=query).status_code == 404
    assert "refused" in refused(uri) or "not found" in refused(uri)


def test_validation_as_neon_does(api: httpx.Client, local_neon: LocalNeonInfo):
    assert api.post("/branches", json={"branch": {"name": ""}}).status_code == 400
    query = {"database_name": DB, "role_name": ROLE, "pooled": "yes"}
    assert api.get("/connection_uri", params=query).status_code == 400
    assert api.get("/branches", params={"include_deleted": "maybe"}).status_code == 400
    with httpx.Client(
        base_url=f"{local_neon.api_host}/projects/{local_neon.project_id}",
        headers={"Authorization": f"bearer {local_neon.token}"},
    ) as lower:
        assert lower.get("/branches").status_code == 200


def test_where_loopback_addresses_cannot_be_bound_endpoints_get_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """macOS has only 127.0.0.1; something may hold *:5432: then 127.0.0.1:<port> per endpoint."""
    from neonflow.local import proxy as proxy_module
    from neonflow.local.tls import Certificates

    real_bind = proxy_module._bind

    def no_other_loopback(address: str, port: int, quiet: bool = True) -> Any:
        if address != "127.0.0.1":
            raise OSError(99, "Cannot assign requested address")
        return real_bind(address, port, quiet)

    monkeypatch.setattr(proxy_module, "_bind", no_other_loopback)
    front = proxy_module.Proxy(None, Certificates(tmp_path / "tls"))  # type: ignore[arg-type]
    front.start()
    try:
        first, second = front.allocate("ep-one"), front.allocate("ep-two")
        assert first.startswith("127.0.0.1:") and second.startswith("127.0.0.1:")
        assert first != second
        assert front.allocate("ep-one") == first  # one listener per endpoint
        front.release("ep-one")
        assert front.allocate("ep-three", wanted=second) != second  # taken: another one
    finally:
        front.stop()


def test_hosts_from_before_the_proxy_move_to_an_address_of_their_own(
    fresh_neon: LocalNeonInfo,
):
    """A state folder whose endpoints still say 127.0.0.1:<PostgreSQL's port> (the old shape)."""
    root = Path(fresh_neon.state_dir).parent
    paths = StatePaths(fresh_neon.state_dir)
    settings, _ = start_local_neon(root)
    service.down(settings)
    state = read_json(paths.metadata)
    for endpoint in state["endpoints"].values():
        endpoint["host"] = f"127.0.0.1:{fresh_neon.pg_port}"
    paths.metadata.write_text(json.dumps(state))
    _, info = start_local_neon(root)
    with http(info) as api:
        (endpoint,) = api.get("/endpoints").json()["endpoints"]
        assert endpoint["host"] != f"127.0.0.1:{fresh_neon.pg_port}"
        uri = api.get("/connection_uri", params={"database_name": DB, "role_name": ROLE}).json()
    with psycopg.connect(uri["uri"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ROLE,)
