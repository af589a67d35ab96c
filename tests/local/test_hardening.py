"""The local Neon against a hostile user: a full disk, an unusable state folder, hostile bodies.

Write errors are injected into an in-process local Neon (a real PostgreSQL, a real HTTP server
on loopback, the store's writer failing on demand); the full disk is a real small tmpfs where
the machine lets us mount one, driven through the CLI as a user does.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner, Result
from werkzeug.serving import make_server

from neonflow.cli.main import app
from neonflow.local import cluster as cluster_module
from neonflow.local import store as store_module
from neonflow.local.api import create_api
from neonflow.local.engine import LocalNeon
from neonflow.local.postgres import EmbeddedPostgres
from neonflow.local.service import LocalNeonInfo
from neonflow.local.store import Store
from tests.conftest import SAMPLE_INI

PENDING = ("scheduling", "running")
ENOSPC = "No space left on device"


# -- an in-process local Neon whose state writes fail on demand -------------------------------


@dataclass
class Harness:
    neon: LocalNeon
    store: Store
    api: httpx.Client
    pg: EmbeddedPostgres
    # None: writes work; "all": every write fails; "workers": only the operations' writes
    failing: dict[str, str | None]

    @property
    def faults_url(self) -> str:
        return str(self.api.base_url).split("/projects/")[0] + "/_local/faults"

    @property
    def on_disk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.store.path.read_text())
        return data

    def physical(self) -> set[str]:
        """The branch databases PostgreSQL really has (this harness's project only)."""
        ids = set(self.store.branches)
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
        return {n for n in names if n.rsplit("_", 1)[-1] in ids or n.startswith("nf_stage_")}

    def recorded(self) -> set[str]:
        """The physical databases the metadata says exist (live branches)."""
        return {
            db["physical"]
            for b in self.store.branches.values()
            if not b.get("_deleted")
            for db in b["_databases"]
        }


def wait(api: httpx.Client, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Poll each operation until it ends (bounded); return their final states."""
    final = []
    for op in operations:
        deadline = time.monotonic() + 60
        while True:
            got = api.get(f"/operations/{op['id']}").json()["operation"]
            if got["status"] not in PENDING:
                break
            assert time.monotonic() < deadline, f"operation {op['id']} hangs: {got}"
            time.sleep(0.02)
        final.append(got)
    return final


def neon_error(response: httpx.Response, status: int, words: str) -> None:
    """Neon's error body ``{code, message, request_id}`` with ``status``."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["code"], str) and body["request_id"]
    assert words.lower() in body["message"].lower(), body


@pytest.fixture
def harness(
    pg_server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    failing: dict[str, str | None] = {"mode": None}
    real_write = store_module.write_private

    def write(path: Path, text: str) -> None:
        mode = failing["mode"]
        worker = threading.current_thread().name.startswith("neon-op")
        if mode == "all" or (mode == "workers" and worker):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, text)

    monkeypatch.setattr(store_module, "write_private", write)
    store = Store(tmp_path / "state.json")
    neon = LocalNeon(store, pg_server, "hardening")
    neon.bootstrap()
    server = make_server("127.0.0.1", 0, create_api(neon, "token"), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{server.port}/api/v2/projects/hardening",
        headers={"Authorization": "Bearer token"},
        timeout=60,
    )
    try:
        yield Harness(neon, store, api, pg_server, failing)
    finally:
        failing["mode"] = None
        api.close()
        server.shutdown()
        neon.close()
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            for name in Harness(neon, store, api, pg_server, failing).physical():
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def create(api: httpx.Client, name: str, endpoint: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"branch": {"name": name}}
    if endpoint:
        body["endpoints"] = [{"type": "read_write"}]
    response = api.post("/branches", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert all(op["status"] == "finished" for op in wait(api, created["operations"]))
    return created


def snapshot(api: httpx.Client) -> dict[str, Any]:
    return {path: api.get(path).json() for path in ("/branches", "/endpoints", "/operations")}


def test_a_request_that_cannot_be_saved_changes_nothing_and_answers_503(harness: Harness):
    api = harness.api
    main_id = next(b["id"] for b in api.get("/branches").json()["branches"] if b["default"])
    feature = create(api, "disk-1")
    feature_id = feature["branch"]["id"]
    endpoint_id = feature["endpoints"][0]["id"]
    before, disk_before = snapshot(api), harness.store.path.read_bytes()
    databases_before = harness.physical()

    harness.failing["mode"] = "all"
    requests: list[tuple[str, str, Any]] = [
        (
            "POST",
            "/branches",
            {"branch": {"name": "disk-2"}, "endpoints": [{"type": "read_write"}]},
        ),
        ("PATCH", f"/branches/{feature_id}", {"branch": {"name": "renamed"}}),
        ("DELETE", f"/branches/{feature_id}", None),
        ("POST", f"/branches/{feature_id}/restore", {"source_branch_id": main_id}),
        ("POST", f"/branches/{feature_id}/set_as_default", None),
        ("POST", "/endpoints", {"endpoint": {"branch_id": feature_id, "type": "read_only"}}),
        ("POST", f"/endpoints/{endpoint_id}/suspend", None),
    ]
    for method, path, body in requests:
        neon_error(api.request(method, path, json=body), 503, ENOSPC)

    assert snapshot(api) == before, "memory holds only what is on disk"
    assert harness.store.path.read_bytes() == disk_before
    assert harness.physical() == databases_before == harness.recorded()

    # space returns: the same requests work, with no restart
    harness.failing["mode"] = None
    again = create(api, "disk-2")
    response = api.delete(f"/branches/{feature_id}")
    assert response.status_code == 200, response.text
    wait(api, response.json()["operations"])
    names = {b["name"] for b in api.get("/branches").json()["branches"]}
    assert names == {"main", "disk-2"}
    assert harness.physical() == harness.recorded()
    on_disk = harness.on_disk["branches"]
    assert set(on_disk) == {main_id, again["branch"]["id"]}


def test_operations_whose_result_cannot_be_saved_yet_converge_when_space_returns(
    harness: Harness, tmp_path: Path
):
    api = harness.api
    main_id = next(b["id"] for b in api.get("/branches").json()["branches"] if b["default"])
    copies = iter(range(10))

    def restart_from_disk() -> Store:
        """Run a second local Neon from the disk as it is now (a restart), on the same cluster."""
        copy = tmp_path / f"restart-{next(copies)}" / "state.json"
        copy.parent.mkdir()
        shutil.copy(harness.store.path, copy)
        restarted = LocalNeon(Store(copy), harness.pg, "hardening")
        restarted.bootstrap()  # runs again the operations the disk holds as pending
        restarted.close()
        return restarted.store

    def rows(branch_id: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(harness.pg.dsn(f"neondb_{branch_id}"), autocommit=True) as conn:
            return conn.execute("SELECT v FROM notes ORDER BY v").fetchall()

    def write(branch_id: str, value: str) -> None:
        with psycopg.connect(harness.pg.dsn(f"neondb_{branch_id}"), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS notes (v text)")
            conn.execute("INSERT INTO notes VALUES (%s)", (value,))

    harness.failing["mode"] = "workers"  # the request is saved, the operation's end is not
    created = create(api, "lagging")
    branch_id = created["branch"]["id"]
    op_id = created["operations"][0]["id"]
    assert api.get(f"/branches/{branch_id}").json()["branch"]["current_state"] == "ready"
    assert harness.on_disk["operations"][op_id]["status"] in PENDING  # a restart runs it again
    write(branch_id, "after the create")
    assert restart_from_disk().branches[branch_id]["current_state"] == "ready"
    assert rows(branch_id) == [("after the create",)], "running the create again kept the copy"

    response = api.post(f"/branches/{branch_id}/restore", json={"source_branch_id": main_id})
    assert [op["status"] for op in wait(api, response.json()["operations"])] == ["finished"]
    [restore] = response.json()["operations"]
    assert harness.on_disk["operations"][restore["id"]]["status"] in PENDING
    write(branch_id, "after the reset")
    restart_from_disk()
    assert rows(branch_id) == [("after the reset",)], "running the reset again reset nothing"

    response = api.delete(f"/branches/{branch_id}")
    assert response.status_code == 200, response.text
    assert [op["status"] for op in wait(api, response.json()["operations"])] == ["finished"]
    assert api.get(f"/branches/{branch_id}").status_code == 404
    assert harness.physical() == harness.recorded()  # the database is really gone
    assert branch_id in harness.on_disk["branches"]  # the disk lags behind
    assert branch_id not in restart_from_disk().branches  # a restart deletes it again

    harness.failing["mode"] = None
    harness.neon.tick()  # the server's reaper thread does this every 30 s
    assert branch_id not in harness.on_disk["branches"]
    assert all(op["status"] not in PENDING for op in harness.on_disk["operations"].values())


def test_a_failed_create_leaves_no_branch_and_a_failed_reset_keeps_the_data(harness: Harness):
    api = harness.api
    feature = create(api, "keeps-data", endpoint=False)
    feature_id = feature["branch"]["id"]
    physical = f"neondb_{feature_id}"
    with psycopg.connect(harness.pg.dsn(physical), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('mine')")
    faults = api.put(harness.faults_url, json={"rate_failed_operation": 1.0})
    assert faults.status_code == 200, faults.text

    response = api.post(
        "/branches", json={"branch": {"name": "never"}, "endpoints": [{"type": "read_write"}]}
    )
    assert response.status_code == 201, response.text
    assert [op["status"] for op in wait(api, response.json()["operations"])] == ["failed"] * 2
    assert api.get(f"/branches/{response.json()['branch']['id']}").status_code == 404
    live = {b["id"]: b["name"] for b in api.get("/branches").json()["branches"]}
    assert "never" not in live.values()
    assert {e["branch_id"] for e in api.get("/endpoints").json()["endpoints"]} <= set(live)

    main_id = next(b["id"] for b in api.get("/branches").json()["branches"] if b["default"])
    response = api.post(f"/branches/{feature_id}/restore", json={"source_branch_id": main_id})
    assert response.status_code == 200, response.text
    assert [op["status"] for op in wait(api, response.json()["operations"])] == ["failed"]
    assert api.get(f"/branches/{feature_id}").json()["branch"]["current_state"] == "ready"
    with psycopg.connect(harness.pg.dsn(physical), autocommit=True) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("mine",)]
    assert harness.physical() == harness.recorded()


def test_copies_the_disk_cannot_hold_fail_before_postgresql_would(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
):
    api = harness.api
    main_id = next(b["id"] for b in api.get("/branches").json()["branches"] if b["default"])
    feature = create(api, "full", endpoint=False)
    feature_id = feature["branch"]["id"]
    with psycopg.connect(harness.pg.dsn(f"neondb_{feature_id}"), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
    real_usage = shutil.disk_usage
    monkeypatch.setattr(
        cluster_module.shutil, "disk_usage", lambda path: real_usage(path)._replace(free=4096)
    )

    response = api.post("/branches", json={"branch": {"name": "no-room"}})
    assert response.status_code == 201, response.text
    [op] = wait(api, response.json()["operations"])
    assert op["status"] == "failed" and ENOSPC in op["error"] and "\n" not in op["error"]
    assert api.get(f"/branches/{response.json()['branch']['id']}").status_code == 404

    response = api.post(f"/branches/{feature_id}/restore", json={"source_branch_id": main_id})
    [op] = wait(api, response.json()["operations"])
    assert op["status"] == "failed" and ENOSPC in op["error"]
    assert api.get(f"/branches/{feature_id}").json()["branch"]["current_state"] == "ready"
    with psycopg.connect(harness.pg.dsn(f"neondb_{feature_id}"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,), "not reset"
    assert harness.physical() == harness.recorded()

    monkeypatch.setattr(cluster_module.shutil, "disk_usage", real_usage)  # space returns
    create(api, "no-room")
    response = api.post(f"/branches/{feature_id}/restore", json={"source_branch_id": main_id})
    assert [op["status"] for op in wait(api, response.json()["operations"])] == ["finished"]
    with psycopg.connect(harness.pg.dsn(f"neondb_{feature_id}"), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,), "reset now"
    assert harness.physical() == harness.recorded()


# -- the API takes only what Neon takes ---------------------------------------------------------


@pytest.fixture(scope="module")
def api(local_neon: LocalNeonInfo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{local_neon.api_host}/projects/{local_neon.project_id}",
        headers={"Authorization": f"Bearer {local_neon.token}"},
        timeout=60,
    ) as client:
        yield client


def deep(levels: int) -> str:
    return '{"branch": ' + "[" * levels + "]" * levels + "}"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"annotation_value": {"big": "x" * (2 * 1024 * 1024)}}, 413, "larger than"),
        ({"annotation_value": {"big": "x" * 5000}}, 400, "longer than 4096"),
        ({"annotation_value": {"k" * 300: "v"}}, 400, "keys must be 1 to 256"),
        ({"annotation_value": {"": "v"}}, 400, "keys must be 1 to 256"),
        (deep(100_000), 400, "not valid JSON: nested too deeply"),
        (deep(40), 400, "deeper than 32"),
        ('{"branch": ', 400, "not valid JSON"),
    ],
)
def test_hostile_bodies_are_refused_with_neons_error_body(
    api: httpx.Client, body: Any, status: int, words: str
):
    before = api.get("/branches/count").json()["count"]
    if isinstance(body, str):
        response = api.post("/branches", content=body, headers={"Content-Type": "application/json"})
    else:
        response = api.post("/branches", json=body)
    neon_error(response, status, words)
    assert api.get("/branches/count").json()["count"] == before, "nothing was created"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"latency_ms": -100}, "latency_ms"),
        ({"rate_503": 2}, "rate_503"),
        ({"rate_429": 0.6, "rate_503": 0.6}, "at most 1"),
        ({"rate_drop": "often"}, "rate_drop"),
        ({"bogus": 1}, "bogus"),
        ("[", "not valid JSON"),
    ],
)
def test_bad_fault_settings_are_a_400_and_change_nothing(
    api: httpx.Client, local_neon: LocalNeonInfo, body: Any, words: str
):
    url = f"{local_neon.api_host}/_local/faults"
    before = api.get(url).json()
    if isinstance(body, str):
        response = api.put(url, content=body, headers={"Content-Type": "application/json"})
    else:
        response = api.put(url, json=body)
    neon_error(response, 400, words)
    assert api.get(url).json() == before
    assert api.get("/branches").status_code == 200


# -- through the CLI: an unusable state folder, a full disk -----------------------------------


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_error_line(result: Result) -> str:
    """The command's last stderr line: an error, and never a traceback or a bug report."""
    assert "Traceback" not in result.output and "a bug" not in result.output, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), result.stderr
    return line


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], Path]]:
    """A project of the sample app's migrations; call it with the state folder to use."""
    root = tmp_path / "project"
    root.mkdir()
    for name in list(os.environ):
        if name.startswith("NEONFLOW_") or name in ("NEON_API_KEY", "NEON_API_HOST"):
            monkeypatch.delenv(name)
    (root / "neonflow.toml").write_text(
        f'[app]\nenv_file = ".env"\n\n[migrations]\nalembic_ini = "{SAMPLE_INI}"\n'
    )
    monkeypatch.chdir(root)
    used: list[Path] = []

    def use(state: Path) -> Path:
        monkeypatch.setenv("NEONFLOW_LOCAL__STATE_DIR", str(state))
        used.append(state)
        return root

    yield use
    for _ in used:
        nf("local", "down")


@contextmanager
def tmpfs(where: Path, size: str, *options: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where`` (skips the test where the machine allows none)."""
    where.mkdir(parents=True)
    opts = ",".join((f"size={size}", *options))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        nf("local", "down")
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_state_folder_that_is_a_file_is_a_config_error(
    user: Callable[[Path], Path], tmp_path: Path
):
    state = tmp_path / "state"
    state.write_text("not a folder")
    user(state)

    for command in (("local", "up"), ("branch", "list")):
        result = nf(*command)
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert str(state) in line and "is not a folder" in line
    status = nf("local", "status")
    assert status.exit_code == 0 and "not running" in status.stderr
    down = nf("local", "down")
    assert down.exit_code == 0 and "not running" in down.stderr
    assert state.read_text() == "not a folder"


def test_a_read_only_state_folder_is_a_config_error(user: Callable[[Path], Path], tmp_path: Path):
    with tmpfs(tmp_path / "state", "1m", "ro") as state:
        user(state)
        result = nf("local", "up")
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert str(state) in line and "cannot be written: Read-only file system" in line
        assert nf("local", "status").exit_code == 0
        assert nf("local", "down").exit_code == 0


def test_initdb_on_a_full_disk_says_why(user: Callable[[Path], Path], tmp_path: Path):
    with tmpfs(tmp_path / "disk", "12m") as disk:
        user(disk / "state")
        result = nf("local", "up")
        assert result.exit_code == 9, result.output
        line = one_error_line(result)
        assert "initdb failed" in line and ENOSPC in line
        assert nf("local", "status").exit_code == 0
        assert nf("local", "down").exit_code == 0


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up to ``leave`` bytes of free space."""
    filler = disk / "filler"
    with open(filler, "ab") as fh:
        while True:
            room = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - leave
            if room <= 0:
                break
            try:
                fh.write(b"\0" * min(room, 1024 * 1024))
                fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def agreement(state: Path) -> tuple[set[str], set[str], set[str]]:
    """Branch names on disk, and the physical databases: recorded, and in PostgreSQL."""
    config = json.loads((state / "local.json").read_text())
    data = json.loads((state / "state.json").read_text())
    live = [b for b in data["branches"].values() if not b.get("_deleted")]
    recorded = {db["physical"] for b in live for db in b["_databases"]}
    dsn = f"host=127.0.0.1 port={config['pg_port']} user=postgres password={config['pg_password']}"
    with psycopg.connect(f"{dsn} dbname=postgres", autocommit=True) as conn:
        real = {
            row[0]
            for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%br-%'")
        }
    return {b["name"] for b in live}, recorded, real


def listed(names_of: Callable[[], Result]) -> set[str]:
    result = names_of()
    assert result.exit_code == 0, result.output
    return {row["name"] for row in json.loads(result.stdout)}


def test_a_full_disk_fails_cleanly_and_converges_when_space_returns(
    user: Callable[[Path], Path], tmp_path: Path
):
    with tmpfs(tmp_path / "disk", "100m") as disk:
        state = disk / "state"
        user(state)

        def names() -> set[str]:
            return listed(lambda: nf("branch", "list", "--json"))

        assert nf("branch", "start", "disk-1").exit_code == 0
        filler = fill(disk)

        result = nf("branch", "start", "disk-2")  # state.json cannot be written
        assert result.exit_code == 4, result.output
        assert ENOSPC in one_error_line(result)
        result = nf("branch", "delete", "disk-1", "--yes")
        assert result.exit_code == 4, result.output
        assert ENOSPC in one_error_line(result)
        assert names() == {"main", "disk-1"}
        on_disk, recorded, real = agreement(state)
        assert on_disk == {"main", "disk-1"} and recorded == real

        filler.unlink()
        filler = fill(disk, leave=1024 * 1024)  # room for state.json, none for a copy
        result = nf("branch", "start", "disk-3")
        assert result.exit_code == 4, result.output
        assert ENOSPC in one_error_line(result)
        result = nf("branch", "reset", "disk-1", "--yes")
        assert result.exit_code == 4, result.output
        assert ENOSPC in one_error_line(result)
        assert names() == {"main", "disk-1"}
        rows = json.loads(nf("branch", "list", "--json").stdout)
        assert {r["name"]: r["revision"] for r in rows}["disk-1"] == ["0002"], "data kept"
        on_disk, recorded, real = agreement(state)
        assert on_disk == {"main", "disk-1"} and recorded == real

        filler.unlink()  # space returns; the same server goes on
        for command in (
            ("branch", "start", "disk-2"),
            ("branch", "start", "disk-3"),
            ("branch", "reset", "disk-1", "--yes"),
            ("branch", "delete", "disk-1", "--yes"),
        ):
            result = nf(*command)
            assert result.exit_code == 0, result.output
        assert names() == {"main", "disk-2", "disk-3"}
        on_disk, recorded, real = agreement(state)
        assert on_disk == {"main", "disk-2", "disk-3"} and recorded == real
