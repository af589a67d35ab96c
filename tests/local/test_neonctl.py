"""The official ``neonctl`` pointed at the local Neon with ``--api-host``.

neonctl is strict about response shapes and resolves branch names itself, so this is the check
that a real Neon client works against the local server. It is installed with npm into pytest's
cache folder (once; later runs reuse it) and skipped only where npm does not exist or its registry
cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from neonflow.local.paths import StatePaths
from neonflow.local.service import LocalNeonInfo
from tests.conftest import make_client

NEONCTL_VERSION = "5.0.1"

Neonctl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def neonctl_bin(request: pytest.FixtureRequest) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    prefix = request.config.cache.mkdir(f"neonctl-{NEONCTL_VERSION}")
    binary = prefix / "node_modules" / ".bin" / "neonctl"
    if not binary.exists():
        package = f"neonctl@{NEONCTL_VERSION}"
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", package],
            capture_output=True,
            text=True,
            timeout=600,
        )
        offline = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET")
        if done.returncode != 0 and any(code in done.stderr for code in offline):
            pytest.skip(f"the npm registry cannot be reached to install {package}")
        assert done.returncode == 0, f"npm install {package} failed: {done.stderr[-2000:]}"
    return binary


def runner(binary: Path, info: LocalNeonInfo, home: Path) -> Neonctl:
    """Run neonctl against ``info``'s server: its own config folder, no analytics, no colour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEON")}
    env["HOME"] = str(home)
    server = ["--api-host", info.api_host, "--api-key", info.token, "--project-id", info.project_id]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(binary), *args, *server, "--config-dir", str(home / "config"), "--no-analytics"],
            capture_output=True,
            text=True,
            env={**env, "NO_COLOR": "1"},
            timeout=120,
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    return run


@pytest.fixture
def neonctl(neonctl_bin: Path, local_neon: LocalNeonInfo, tmp_path: Path) -> Neonctl:
    """neonctl on the session's server (for tests that leave the default branch alone)."""
    return runner(neonctl_bin, local_neon, tmp_path)


@pytest.fixture
def own_neonctl(neonctl_bin: Path, fresh_neon: LocalNeonInfo, tmp_path: Path) -> Neonctl:
    """neonctl on a server of the test's own."""
    return runner(neonctl_bin, fresh_neon, tmp_path)


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def settle(info: LocalNeonInfo, name: str) -> str:
    """neonctl does not wait for operations: wait here for the branch's; return its id."""
    with httpx.Client(
        base_url=f"{info.api_host}/projects/{info.project_id}",
        headers={"Authorization": f"Bearer {info.token}"},
    ) as api:
        found = api.get("/branches", params={"search": name}).json()["branches"]
        branch_id = next(b["id"] for b in found if b["name"] == name)
        deadline = time.monotonic() + 120
        while True:
            ops = api.get("/operations", params={"limit": 100}).json()["operations"]
            mine = [op for op in ops if op.get("branch_id") == branch_id]
            assert all(op["status"] in ("scheduling", "running", "finished") for op in mine), mine
            if all(op["status"] == "finished" for op in mine):
                return str(branch_id)
            assert time.monotonic() < deadline, mine
            time.sleep(0.02)


def rows(uri: str) -> set[str]:
    with psycopg.connect(uri, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT label FROM items")}


def test_neonctl_branch_lifecycle(own_neonctl: Neonctl, fresh_neon: LocalNeonInfo):
    neonctl = own_neonctl
    with make_client(fresh_neon) as client:
        listed = as_json(neonctl("branches", "list", "-o", "json"))
        assert [(b["name"], b["default"]) for b in listed] == [("main", True)]
        main_id = listed[0]["id"]
        main_uri = client.connection_uri(main_id, "neondb", "neondb_owner")
        with psycopg.connect(main_uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (label text)")
            conn.execute("INSERT INTO items VALUES ('main')")

        created = as_json(neonctl("branches", "create", "--name", "nc-feature", "-o", "json"))
        assert created["branch"]["name"] == "nc-feature"
        assert created["branch"]["parent_id"] == main_id
        assert [e["type"] for e in created["endpoints"]] == ["read_write"]
        feature_id = settle(fresh_neon, "nc-feature")
        got = as_json(neonctl("branches", "get", "nc-feature", "-o", "json"))
        assert (got["id"], got["current_state"]) == (feature_id, "ready")

        feature_uri = client.connection_uri(feature_id, "neondb", "neondb_owner")
        with psycopg.connect(feature_uri, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES ('feature')")
        with psycopg.connect(main_uri, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES ('main-later')")
        assert rows(feature_uri) == {"main", "feature"}

        reset = as_json(neonctl("branches", "reset", "nc-feature", "--parent", "-o", "json"))
        assert reset["id"] == feature_id and reset.get("last_reset_at")
        settle(fresh_neon, "nc-feature")
        assert rows(feature_uri) == {"main", "main-later"}

        renamed = as_json(neonctl("branches", "rename", "nc-feature", "nc-renamed", "-o", "json"))
        assert renamed["name"] == "nc-renamed"
        assert client.get_branch(feature_id).name == "nc-renamed"

        uri = neonctl("connection-string", "nc-renamed", "--ssl", "omit").stdout.strip()
        parts = conninfo_to_dict(uri)
        assert parts["host"] == conninfo_to_dict(feature_uri)["host"]
        assert parts["user"] == "neondb_owner"
        assert parts["password"] == client.reveal_password(feature_id, "neondb_owner")
        assert rows(uri) == {"main", "main-later"}

        default = as_json(neonctl("branches", "set-default", "nc-renamed", "-o", "json"))
        assert default["default"] is True
        assert [b.name for b in client.list_branches() if b.default] == ["nc-renamed"]
        neonctl("branches", "set-default", "main", "-o", "json")
        assert [b.name for b in client.list_branches() if b.default] == ["main"]

        # errors come back as neonctl errors, with Neon's message
        missing = neonctl("branches", "get", "no-such-branch", check=False)
        assert missing.returncode != 0 and "not found" in missing.stderr.lower()
        duplicate = neonctl("branches", "create", "--name", "nc-renamed", check=False)
        assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
        undeletable = neonctl("branches", "delete", "main", check=False)
        assert undeletable.returncode != 0 and "default" in undeletable.stderr

        deleted = as_json(neonctl("branches", "delete", "nc-renamed", "-o", "json"))
        assert deleted["id"] == feature_id
        remaining = as_json(neonctl("branches", "list", "-o", "json"))
        assert [b["name"] for b in remaining] == ["main"]


def test_neonctl_projects_and_schema_only_branches(neonctl: Neonctl, local_neon: LocalNeonInfo):
    projects = as_json(neonctl("projects", "list", "-o", "json"))
    assert [p["id"] for p in projects["projects"]] == [local_neon.project_id]
    project = as_json(neonctl("projects", "get", local_neon.project_id, "-o", "json"))
    assert project["id"] == local_neon.project_id
    name = f"nc-schema-{uuid.uuid4().hex[:8]}"

    created = as_json(neonctl("branches", "create", "--name", name, "--schema-only", "-o", "json"))
    assert created["branch"]["init_source"] == "schema-only"
    branch_id = settle(local_neon, name)
    try:
        diff = neonctl("branches", "schema-diff", "main", name)
        assert "Database: neondb" in diff.stdout
    finally:
        neonctl("branches", "delete", branch_id, "-o", "json")


def test_neonctl_connection_string_reaches_the_branch(neonctl: Neonctl):
    listed = as_json(neonctl("branches", "list", "-o", "json"))
    uri = neonctl("connection-string", listed[0]["name"], "--ssl", "omit").stdout.strip()
    with psycopg.connect(uri, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_neonctl_connection_strings_reach_their_branch(
    own_neonctl: Neonctl, fresh_neon: LocalNeonInfo
):
    """Every variant of ``connection-string`` connects, over TLS, to that branch's data."""
    neonctl = own_neonctl
    ca = StatePaths(fresh_neon.state_dir).tls / "ca.crt"
    with make_client(fresh_neon) as client:
        main_id = next(b.id for b in client.list_branches() if b.default)
        with psycopg.connect(client.connection_uri(main_id, "neondb", "neondb_owner")) as conn:
            conn.execute("CREATE TABLE items (label text)")
            conn.execute("INSERT INTO items VALUES ('main')")
    neonctl("branches", "create", "--name", "nc-cs", "-o", "json")
    branch_id = settle(fresh_neon, "nc-cs")
    with make_client(fresh_neon) as client:
        with psycopg.connect(client.connection_uri(branch_id, "neondb", "neondb_owner")) as conn:
            conn.execute("INSERT INTO items VALUES ('nc-cs')")

    def cs(*flags: str) -> str:
        return neonctl("connection-string", "nc-cs", *flags).stdout.strip()

    default = cs()
    assert "sslmode=require" in default and "channel_binding=require" in default
    for uri in (default, cs("--pooled"), cs("--prisma"), cs("--ssl", "omit")):
        assert rows(uri) == {"main", "nc-cs"}, uri
    with psycopg.connect(cs("--ssl", "verify-full"), sslrootcert=str(ca)) as conn:
        assert conn.pgconn.ssl_in_use
    assert rows(neonctl("connection-string", "main").stdout.strip()) == {"main"}

    # another database and another role, made with neonctl, reached the same way
    neonctl("databases", "create", "--name", "other", "--branch", "nc-cs", "-o", "json")
    neonctl("roles", "create", "--name", "reader", "--branch", "nc-cs", "-o", "json")
    settle(fresh_neon, "nc-cs")
    listed = as_json(neonctl("databases", "list", "--branch", "nc-cs", "-o", "json"))
    assert {d["name"] for d in listed} == {"neondb", "other"}
    roles = as_json(neonctl("roles", "list", "--branch", "nc-cs", "-o", "json"))
    assert {"neondb_owner", "reader"} <= {r["name"] for r in roles}
    other = cs("--database-name", "other", "--role-name", "neondb_owner")
    with psycopg.connect(other, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'items'").fetchone() == (
            0,
        )
    reader = cs("--database-name", "neondb", "--role-name", "reader")
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("reader",)

    neonctl("databases", "delete", "other", "--branch", "nc-cs", "-o", "json")
    neonctl("roles", "delete", "reader", "--branch", "nc-cs", "-o", "json")
    settle(fresh_neon, "nc-cs")
    listed = as_json(neonctl("databases", "list", "--branch", "nc-cs", "-o", "json"))
    assert [d["name"] for d in listed] == ["neondb"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(reader, connect_timeout=10).close()


SDK_SCRIPT = """
import { createNeonClient } from %(sdk)s;
const [baseUrl, apiKey, projectId, name] = process.argv.slice(2);
const neon = createNeonClient({ apiKey, baseUrl, throwOnError: true });
const made = await neon.branches.createAndConnect({ projectId, name, pooled: true });
const direct = await neon.postgres.connectionString({
  projectId, branchId: made.branch.id, pooled: false,
});
const viaEndpoint = await neon.postgres.connectionString({
  projectId, branchId: made.branch.id, endpointId: made.endpoint.id,
});
const out = { id: made.branch.id, pooled: made.connectionString, direct, viaEndpoint };
console.log(JSON.stringify(out));
"""


def test_the_neon_sdk_connection_strings_reach_the_branch(
    neonctl_bin: Path, local_neon: LocalNeonInfo, tmp_path: Path
):
    """Neon's TypeScript SDK (@neon/sdk, shipped inside neonctl): its URIs connect over TLS."""
    sdk = neonctl_bin.parent.parent / "@neon" / "sdk" / "dist" / "index.js"
    if not sdk.exists():
        pytest.skip(f"this neonctl does not ship @neon/sdk ({sdk})")
    script = tmp_path / "sdk.mjs"
    script.write_text(SDK_SCRIPT % {"sdk": json.dumps(sdk.as_uri())})
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        ["node", str(script), local_neon.api_host, local_neon.token, local_neon.project_id, name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    try:
        for key in ("pooled", "direct", "viaEndpoint"):
            with psycopg.connect(got[key]) as conn:
                assert conn.pgconn.ssl_in_use
                row = conn.execute("SELECT current_database()").fetchone()
                assert row == (f"neondb_{got['id']}",), key
    finally:
        with make_client(local_neon) as client:
            client.delete_branch(got["id"])
