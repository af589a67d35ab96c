"""`branch list` and `status` at scale: API requests flat in the number of branches, revisions
read by a bounded pool with a short timeout, suspended computes on Neon cloud left asleep.

Against a local Neon of this module's own (the tests add many branches). A wrapping transport
stands in only for what the real server cannot do: an unreachable compute, a branch whose
password differs from its parent's.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner, Result

from neonflow.cli.main import app
from neonflow.config import Settings, load_settings
from neonflow.local import service
from neonflow.local.service import LocalNeonInfo
from neonflow.neon import Branch, NeonClient
from neonflow.workflow.branches import Branches
from neonflow.workflow.listing import MAX_READERS
from tests.conftest import make_client, start_local_neon


@pytest.fixture(scope="module")
def local_neon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNeonInfo]:
    """This module's own local Neon (its tests add many branches), for conftest's ``project``."""
    settings, info = start_local_neon(tmp_path_factory.mktemp("list-neon"))
    yield info
    service.down(settings)


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(config_file=project / "neonflow.toml")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_branches(client: NeonClient, count: int, prefix: str = "many") -> list[Branch]:
    """``count`` children of main with their computes (not migrated: revision [])."""
    main = client.find_branch("main")
    assert main is not None
    made = []
    for _ in range(count):
        created = client.create_branch(unique(prefix), parent_id=main.id)
        client.wait_for_operations(created.operations)
        made.append(created.branch)
    return made


def count_requests(client: NeonClient) -> list[str]:
    seen: list[str] = []
    client._http.event_hooks["request"].append(  # type: ignore[attr-defined]
        lambda request: seen.append(f"{request.method} {request.url.path.split('/', 5)[-1]}")
    )
    return seen


def endpoint_of(client: NeonClient, branch: Branch) -> str:
    (endpoint,) = client.list_endpoints(branch.id)
    return endpoint.id


class Rewriting(httpx.BaseTransport):
    """The real HTTP transport, with the JSON answers of matching paths changed by ``edit``."""

    def __init__(self, edit: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
        self.inner = httpx.HTTPTransport()
        self.edit = edit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        if response.status_code != 200:
            return response
        return httpx.Response(200, json=self.edit(request.url.path, response.json()))

    def close(self) -> None:
        self.inner.close()


class BlackHole:
    """A TCP port that accepts connections and never answers; counts those open at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.most = 0
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                ready = [key.fileobj for key, _ in sel.select(timeout=0.1)]
                # Goodbyes first: a client closes one attempt before it opens the next.
                for conn in self._open & set(ready):
                    try:
                        gone = not conn.recv(1024)  # its SSLRequest, or its goodbye
                    except OSError:
                        gone = True
                    if gone:
                        sel.unregister(conn)
                        self._open.discard(conn)
                        conn.close()
                if self.sock in ready:
                    conn, _ = self.sock.accept()
                    sel.register(conn, selectors.EVENT_READ)
                    self._open.add(conn)
                    self.most = max(self.most, len(self._open))
        for conn in self._open:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


# -- a constant number of API requests ---------------------------------------------------------


def test_list_and_status_make_the_same_few_requests_for_any_number_of_branches(
    settings: Settings, local_neon: LocalNeonInfo
):
    with make_client(local_neon) as client:
        workflow = Branches(settings, client)
        feature = workflow.start(unique("feat")).branch  # migrated; the app points at it
        seen = count_requests(client)

        small = workflow.list()
        few = list(seen)
        add_branches(client, 6)
        seen.clear()
        large = workflow.list()
        many = list(seen)
        seen.clear()
        status = workflow.status()

    assert len(large) == len(small) + 6
    default = next(r.id for r in large if r.default)
    reveal = f"GET branches/{default}/roles/neondb_owner/reveal_password"
    assert few == many == ["GET branches", "GET endpoints", reveal]
    rows = {r.name: r for r in large}
    assert rows[feature].revision == ["0002"] and rows[feature].current is True
    assert all(r.revision_status == "read" for r in large)
    assert sum(r.current for r in large) == 1
    assert rows["main"].revision == []  # never migrated
    # status: the branch from the same two lists, the revision from the app's own URL.
    assert seen == ["GET branches", "GET endpoints"]
    assert status.branch == feature and status.revision == ["0002"] and status.at_head is True


def test_no_revisions_makes_no_connection_and_no_password_request(
    settings: Settings, local_neon: LocalNeonInfo
):
    with make_client(local_neon) as client:
        seen = count_requests(client)
        rows = Branches(settings, client).list(revisions=False)
        listed = list(seen)
        status = Branches(settings, client).status()  # the app points nowhere yet

    assert listed == ["GET branches", "GET endpoints"]
    assert {r.revision_status for r in rows} == {"not_read"}
    assert all(r.revision is None for r in rows)
    assert status.database_url is None and status.revision_status == "not_read"
    assert len(seen) == len(listed)  # nothing to look up for an app that points nowhere


def test_branches_with_a_password_of_their_own_cost_one_request_each(
    settings: Settings, local_neon: LocalNeonInfo
):
    # On Neon, a protected branch's children (or a branch whose password was reset) have
    # passwords of their own; the local Neon's roles share one. Stand-in: a stale password.
    def stale(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"password": "stale"} if path.endswith("/reveal_password") else body

    said: list[str] = []
    with NeonClient(
        local_neon.api_host, local_neon.token, local_neon.project_id, transport=Rewriting(stale)
    ) as client:
        seen = count_requests(client)
        rows = Branches(settings, client, progress=said.append).list()

    assert {r.revision_status for r in rows} == {"read"}  # read all the same
    uris = [r for r in seen if r.startswith("GET connection_uri")]
    assert len(uris) == len(rows) and len(seen) == 3 + len(rows)
    assert said == [f"{len(rows)} branch(es) whose password changed: one more API request each"]


def test_children_of_a_protected_branch_cost_one_password_request_each(
    settings: Settings, local_neon: LocalNeonInfo
):
    said: list[str] = []
    with make_client(local_neon) as client:
        main = client.find_branch("main")
        assert main is not None
        guarded = client.create_branch(unique("guarded"), parent_id=main.id, protected=True)
        client.wait_for_operations(guarded.operations)
        # Neon gives a protected branch's children new passwords; their own children inherit.
        children = []
        for _ in range(2):
            child = client.create_branch(unique("child"), parent_id=guarded.branch.id)
            client.wait_for_operations(child.operations)
            children.append(child.branch)
        grandchild = client.create_branch(unique("grandchild"), parent_id=children[0].id)
        client.wait_for_operations(grandchild.operations)
        seen = count_requests(client)
        try:
            rows = Branches(settings, client, progress=said.append).list()
            listed = list(seen)
        finally:
            for branch in (grandchild.branch, *children):
                client.wait_for_operations(client.delete_branch(branch.id))
            client.wait_for_operations(
                client.update_branch(guarded.branch.id, protected=False).operations
            )
            client.wait_for_operations(client.delete_branch(guarded.branch.id))

    reveals = sorted(r.split("/")[1] for r in listed if r.endswith("/reveal_password"))
    assert reveals == sorted([main.id, *(c.id for c in children)])  # the guarded one: main's
    assert len(listed) == 2 + len(reveals)
    assert {r.revision_status for r in rows} == {"read"}
    assert said == [
        "2 branch(es) with passwords of their own (children of protected branches): "
        "one more API request each"
    ]


# -- bounded, short, and one branch does not fail the list -------------------------------------


def test_unreachable_branches_are_unknown_read_a_bounded_number_at_a_time(
    settings: Settings, local_neon: LocalNeonInfo
):
    with make_client(local_neon) as client:
        feature = Branches(settings, client).start(unique("feat"), write_env=False).branch
        lost = add_branches(client, MAX_READERS + 2, "lost")
        lost_endpoints = {endpoint_of(client, b) for b in lost}
    hole = BlackHole()

    def unreachable(path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/endpoints"):
            for endpoint in body["endpoints"]:
                if endpoint["id"] in lost_endpoints:
                    endpoint["host"] = f"127.0.0.1:{hole.port}"
        return body

    try:
        with NeonClient(
            local_neon.api_host,
            local_neon.token,
            local_neon.project_id,
            transport=Rewriting(unreachable),
        ) as client:
            rows = {r.name: r for r in Branches(settings, client).list(timeout=2)}
    finally:
        hole.close()

    for branch in lost:
        assert rows[branch.name].revision is None
        assert rows[branch.name].revision_status == "unknown"
    assert rows[feature].revision == ["0002"] and rows[feature].revision_status == "read"
    assert 2 <= hole.most <= MAX_READERS  # concurrent, and never more than the pool's size


def test_a_branch_whose_version_table_is_locked_is_unknown_not_waited_for(
    settings: Settings, local_neon: LocalNeonInfo
):
    with make_client(local_neon) as client:
        workflow = Branches(settings, client)
        calm = workflow.start(unique("calm"), write_env=False).branch
        busy = workflow.start(unique("busy"))  # the app points at it
        # A migration under way: ALTER TABLE alembic_version holds this lock until it commits.
        with psycopg.connect(busy.database_url) as locker:
            locker.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
            rows = {r.name: r for r in workflow.list(timeout=1)}
            status = workflow.status(timeout=1)

    assert rows[busy.branch].revision is None and rows[busy.branch].revision_status == "unknown"
    assert rows[calm].revision == ["0002"]
    assert status.branch == busy.branch and status.revision is None
    assert status.revision_status == "unknown" and status.at_head is None


# -- Neon cloud: a suspended compute is not woken unless asked ---------------------------------


@pytest.fixture
def cloud(project: Path, local_neon: LocalNeonInfo, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The project configured as for Neon cloud (an API host and a key), on the local server."""
    monkeypatch.setenv("NEONFLOW_NEON__API_HOST", local_neon.api_host)
    monkeypatch.setenv("NEONFLOW_NEON__PROJECT_ID", local_neon.project_id)
    monkeypatch.setenv("NEON_API_KEY", local_neon.token)
    settings = load_settings(config_file=project / "neonflow.toml")
    assert not settings.is_local
    return settings


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_on_neon_cloud_idle_computes_are_read_only_with_revisions(
    cloud: Settings, local_neon: LocalNeonInfo
):
    with make_client(local_neon) as client:
        workflow = Branches(cloud, client)
        awake = workflow.start(unique("awake"), write_env=False).branch
        asleep = workflow.start(unique("asleep")).branch  # the app points at it
        branch = client.find_branch(asleep)
        assert branch is not None
        client.wait_for_operations(client.suspend_endpoint(endpoint_of(client, branch)).operations)

        rows = {r.name: r for r in workflow.list()}
        woken = {r.name: r for r in workflow.list(revisions=True)}
        status = workflow.status()
        status_woken = workflow.status(revisions=True)

    assert rows[asleep].revision is None and rows[asleep].revision_status == "idle"
    assert rows[awake].revision == ["0002"] and rows[awake].revision_status == "read"
    assert woken[asleep].revision == ["0002"] and woken[asleep].revision_status == "read"
    assert status.branch == asleep and status.revision_status == "idle"
    assert status.revision is None and status.at_head is None
    assert status_woken.revision == ["0002"] and status_woken.at_head is True

    table = nf("branch", "list")
    assert table.exit_code == 0, table.stderr
    assert "(idle)" in next(line for line in table.stdout.splitlines() if asleep in line)
    assert "revisions not read for idle computes (use --revisions)" in table.stderr
    listed = {r["name"]: r for r in json.loads(nf("branch", "list", "--json").stdout)}
    assert listed[asleep]["revision_status"] == "idle" and listed[asleep]["revision"] is None
    every = nf("branch", "list", "--revisions")
    assert "(idle)" not in every.stdout and "use --revisions" not in every.stderr
    human = nf("branch", "status")
    assert "revision: not read (the compute is idle; use --revisions)" in human.stderr
    assert "(at head)" in nf("branch", "status", "--revisions").stderr


def test_on_the_local_neon_an_idle_compute_is_read(settings: Settings, local_neon: LocalNeonInfo):
    with make_client(local_neon) as client:
        workflow = Branches(settings, client)
        name = workflow.start(unique("idle"), write_env=False).branch
        branch = client.find_branch(name)
        assert branch is not None
        client.wait_for_operations(client.suspend_endpoint(endpoint_of(client, branch)).operations)
        rows = {r.name: r for r in workflow.list()}

    assert rows[name].revision == ["0002"] and rows[name].revision_status == "read"
