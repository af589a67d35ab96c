"""``start`` on a project whose env.py cannot run leaves nothing behind: a branch it created for
nothing (env.py failed, or pointed elsewhere, or a revision file did not load, before any revision
ran) is deleted and the env file is as it was; a branch that was there before is kept. A delete
that Neon accepted but that did not finish (its operation failed, or outlasted the wait) still
puts the env file back: the branch is going."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from neonflow import polling
from neonflow.config import load_settings
from neonflow.errors import (
    EnvPyError,
    NetworkError,
    RevisionLoadError,
    WrongTargetError,
)
from neonflow.local.postgres import free_port
from neonflow.local.service import LocalNeonInfo
from neonflow.migrations.probe import read_heads
from neonflow.neon import NeonClient
from neonflow.workflow.branches import Branches
from tests.conftest import make_client
from tests.migrations.test_projects import going_its_own_way

PROJECTS = Path(__file__).parents[1] / "projects"
ENV_BEFORE = "# the developer's own database\r\nDATABASE_URL=postgresql://me@localhost/dev\r\n"


def generic_project(root: Path, info: LocalNeonInfo) -> Path:
    """The stock ``alembic init`` project with one revision, on ``info``'s local Neon."""
    shutil.copytree(PROJECTS / "generic", root)
    versions = root / "alembic" / "versions"
    versions.mkdir(exist_ok=True)
    shutil.copy(PROJECTS / "_revisions" / "0001_create_items.py", versions)
    (root / "neonflow.toml").write_text(
        f'[app]\nenv_file = ".env"\n\n[migrations]\nalembic_ini = "alembic.ini"\n\n'
        f'[local]\nstate_dir = "{info.state_dir}"\n'
    )
    (root / ".env").write_bytes(ENV_BEFORE.encode())
    return root


def edit_env_py(root: Path, old: str, new: str) -> None:
    env_py = root / "alembic" / "env.py"
    text = env_py.read_text()
    assert old in text
    env_py.write_text(text.replace(old, new, 1))


def main_url(client: NeonClient) -> str:
    main = client.find_branch("main")
    assert main is not None
    return client.connection_uri(main.id, "neondb", "neondb_owner")


@pytest.fixture
def client(local_neon: LocalNeonInfo) -> NeonClient:
    with make_client(local_neon) as client:
        yield client


def test_a_new_branch_is_deleted_when_env_py_points_at_the_parent(
    tmp_path: Path, local_neon: LocalNeonInfo, client: NeonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    root = generic_project(tmp_path / "p", local_neon)
    parent = main_url(client)
    before = read_heads(parent)
    going_its_own_way(root, parent.replace("postgresql:", "postgresql+psycopg:", 1))
    name = f"rogue-{uuid.uuid4().hex[:6]}"
    workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client)

    with pytest.raises(WrongTargetError) as raised:
        workflow.start(name)

    assert_no_orphan(str(raised.value), name, client, root)
    assert read_heads(parent) == before  # and nothing ran on the parent


def test_a_new_branch_is_deleted_when_env_py_fails_to_import(
    tmp_path: Path, local_neon: LocalNeonInfo, client: NeonClient
) -> None:
    root = generic_project(tmp_path / "p", local_neon)
    (root / ".env").unlink()
    edit_env_py(root, "from models import metadata", "from modles import metadata")
    name = f"typo-{uuid.uuid4().hex[:6]}"
    workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client)

    with pytest.raises(EnvPyError) as raised:
        workflow.start(name)

    assert "No module named 'modles'" in str(raised.value)
    assert f"branch {name} was deleted (nothing ran on it)" in str(raised.value)
    assert client.find_branch(name) is None
    assert not (root / ".env").exists()  # it did not exist before
    assert [p.name for p in root.iterdir() if p.name.startswith(".env")] == []


def test_a_new_branch_is_deleted_when_env_py_cannot_connect(
    tmp_path: Path, local_neon: LocalNeonInfo, client: NeonClient
) -> None:
    """env.py hard-codes the developer's own database, which is not running: exit 7."""
    root = generic_project(tmp_path / "p", local_neon)
    going_its_own_way(root, f"postgresql+psycopg://dev:dev@127.0.0.1:{free_port()}/dev")
    name = f"offline-{uuid.uuid4().hex[:6]}"
    workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client)

    with pytest.raises(NetworkError) as raised:
        workflow.start(name)

    assert "env.py failed: connection failed" in str(raised.value)
    assert_no_orphan(str(raised.value), name, client, root)


def test_a_branch_that_was_there_is_kept_when_env_py_fails(
    tmp_path: Path, local_neon: LocalNeonInfo, client: NeonClient
) -> None:
    root = generic_project(tmp_path / "p", local_neon)
    name = f"kept-{uuid.uuid4().hex[:6]}"
    workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client)
    assert workflow.start(name).revision == ["0001"]
    edit_env_py(root, "from models import metadata", "from modles import metadata")

    with pytest.raises(EnvPyError) as raised:
        workflow.start(name)

    assert f"branch {name} is kept (not migrated) and the app points at it" in str(raised.value)
    branch = client.find_branch(name)
    assert branch is not None
    workflow.delete(name)


def test_a_revision_file_with_a_syntax_error_is_refused_before_any_branch(
    tmp_path: Path, local_neon: LocalNeonInfo, client: NeonClient
) -> None:
    """env.py is fine, a revision file does not compile: found before a branch is created."""
    root = generic_project(tmp_path / "p", local_neon)
    broken = root / "alembic" / "versions" / "0002_broken.py"
    broken.write_text('revision = "0002"\ndown_revision = "0001"\n\n\ndef upgrade(:\n    pass\n')
    name = f"syntax-{uuid.uuid4().hex[:6]}"
    workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client)

    with pytest.raises(RevisionLoadError) as raised:
        workflow.start(name)

    assert "0002_broken.py" in str(raised.value) and "line 5" in str(raised.value)
    assert client.find_branch(name) is None  # never created
    assert (root / ".env").read_bytes() == ENV_BEFORE.encode()


def test_a_new_branch_is_deleted_when_a_revision_file_does_not_load(
    tmp_path: Path, local_neon: LocalNeonInfo, client: NeonClient
) -> None:
    """A revision file that compiles but fails on import (a module it names is not installed):
    only Alembic finds that, on the branch; nothing ran on it, so it goes again."""
    root = generic_project(tmp_path / "p", local_neon)
    (root / "alembic" / "versions" / "0002_needs_geo.py").write_text(
        'import geoalchemy_not_installed\n\nrevision = "0002"\ndown_revision = "0001"\n\n\n'
        "def upgrade() -> None:\n    pass\n"
    )
    name = f"noload-{uuid.uuid4().hex[:6]}"
    workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client)

    with pytest.raises(RevisionLoadError) as raised:
        workflow.start(name)

    assert "geoalchemy_not_installed" in str(raised.value)
    assert_no_orphan(str(raised.value), name, client, root)


def assert_no_orphan(message: str, name: str, client: NeonClient, root: Path) -> None:
    """The branch start made is gone again, and the app points where it did."""
    assert f"branch {name} was deleted (nothing ran on it)" in message
    assert client.find_branch(name) is None
    assert (root / ".env").read_bytes() == ENV_BEFORE.encode()


def gone(client: NeonClient, name: str) -> bool:
    """Whether ``name`` is gone, waiting for a delete under way to end (at most 30 s)."""
    return polling.until(lambda: client.find_branch(name) is None or None, 30) is True


def test_a_delete_whose_operation_fails_still_puts_the_env_file_back(
    tmp_path: Path, fresh_neon: LocalNeonInfo
) -> None:
    """The local Neon's fault mode fails the delete's operation, after Neon accepted the
    delete: the branch is on its way out, so the app must not be left pointing at it."""
    root = generic_project(tmp_path / "p", fresh_neon)
    edit_env_py(root, "from models import metadata", "from modles import metadata")
    name = f"fails-{uuid.uuid4().hex[:6]}"
    faults = f"{fresh_neon.api_host}/_local/faults"
    headers = {"Authorization": f"Bearer {fresh_neon.token}"}

    def progress(message: str) -> None:
        if message.startswith(f"deleting branch {name}"):  # the create went through
            answer = httpx.put(faults, json={"rate_failed_operation": 1}, headers=headers)
            assert answer.status_code == 200

    with make_client(fresh_neon) as client:
        workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client, progress)
        with pytest.raises(EnvPyError) as raised:
            workflow.start(name)

        assert f"branch {name} is being deleted (nothing ran on it)" in str(raised.value)
        assert (root / ".env").read_bytes() == ENV_BEFORE.encode()
        assert gone(client, name)  # the local Neon finishes a failed delete by itself


class DeletesNeverFinish(httpx.BaseTransport):
    """The real HTTP transport, except that the operations of a branch delete read ``running``
    for ever (Neon cloud, a delete outlasting the wait); the server still does them."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.deletes: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        if request.method == "DELETE" and response.status_code == 200:
            self.deletes |= {op["id"] for op in response.json().get("operations", [])}
        elif request.method == "GET" and request.url.path.rsplit("/", 1)[-1] in self.deletes:
            body: dict[str, Any] = response.json()
            body["operation"]["status"] = "running"
            return httpx.Response(200, json=body)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_delete_that_outlasts_the_wait_still_puts_the_env_file_back(
    tmp_path: Path, local_neon: LocalNeonInfo
) -> None:
    root = generic_project(tmp_path / "p", local_neon)
    edit_env_py(root, "from models import metadata", "from modles import metadata")
    name = f"slow-{uuid.uuid4().hex[:6]}"
    transport = DeletesNeverFinish()

    def sleep(seconds: float) -> None:
        # Waits pass in real time until the delete; the wait for the delete is counted only.
        if not transport.deletes:
            time.sleep(seconds)

    said: list[str] = []
    settings = load_settings(config_file=root / "neonflow.toml")
    with NeonClient(
        local_neon.api_host,
        local_neon.token,
        local_neon.project_id,
        transport=transport,
        sleep=sleep,
    ) as client:
        with pytest.raises(EnvPyError) as raised:
            Branches(settings, client, said.append).start(name)

    assert transport.deletes  # the delete was accepted
    assert any("timed out" in line for line in said)
    assert f"branch {name} is being deleted (nothing ran on it)" in str(raised.value)
    assert (root / ".env").read_bytes() == ENV_BEFORE.encode()
    with make_client(local_neon) as plain:
        assert gone(plain, name)


def test_a_delete_neon_refuses_leaves_the_branch_and_says_so(
    tmp_path: Path, local_neon: LocalNeonInfo, client: NeonClient
) -> None:
    """When the delete itself is refused (another command gave the branch a child meanwhile),
    the branch stays and the app points at it, as the message says."""
    root = generic_project(tmp_path / "p", local_neon)
    edit_env_py(root, "from models import metadata", "from modles import metadata")
    toml = root / "neonflow.toml"
    toml.write_text(toml.read_text() + '\n[branch]\nexpires_in = ""\n')  # a parent-to-be
    name = f"stays-{uuid.uuid4().hex[:6]}"
    children = []

    def progress(message: str) -> None:
        if message.startswith(f"deleting branch {name}"):
            branch = client.find_branch(name)
            assert branch is not None
            child = client.create_branch(f"{name}-child", parent_id=branch.id)
            client.wait_for_operations(child.operations)
            children.append(child.branch)

    workflow = Branches(load_settings(config_file=root / "neonflow.toml"), client, progress)
    with pytest.raises(EnvPyError) as raised:
        workflow.start(name)

    assert f"branch {name} is kept (not migrated) and the app points at it" in str(raised.value)
    assert (root / ".env").read_bytes() != ENV_BEFORE.encode()
    branch = client.find_branch(name)
    assert branch is not None
    for leftover in (*children, branch):
        client.wait_for_operations(client.delete_branch(leftover.id))
