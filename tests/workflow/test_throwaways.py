"""Throw-away branches (check's copies, promote's rehearsals) that outlive their process.

They expire after ``[check] expires_in``; the local Neon's reaper deletes them when they do, and
``branch prune`` sweeps the ones still listed after their expiry (as Neon cloud may show them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner, Result

from neonflow.cli.main import app
from neonflow.config import load_settings
from neonflow.errors import ConfigError
from neonflow.local import service
from neonflow.local.service import LocalNeonInfo
from neonflow.neon import NeonClient
from neonflow.workflow.base import A_CREATED_BY, A_PURPOSE
from neonflow.workflow.branches import Branches
from tests.conftest import make_client, start_local_neon

SLOW_SET = Path(__file__).parents[1] / "migration_sets" / "slow" / "alembic.ini"


def nf(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def physical_databases(info: LocalNeonInfo, branch_id: str) -> list[str]:
    config = json.loads((info.state_dir / "local.json").read_text())
    dsn = (
        f"host=127.0.0.1 port={config['pg_port']} user=postgres "
        f"password={config['pg_password']} dbname=postgres"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"%{branch_id}",)
        ).fetchall()
    return [row[0] for row in rows]


def gone_by(info: LocalNeonInfo, branch_id: str, deadline: datetime) -> bool:
    """Poll until the branch is neither listed nor in PostgreSQL, or the deadline passes."""
    with make_client(info) as client:
        while datetime.now(UTC) < deadline:
            listed = branch_id in {b.id for b in client.list_branches()}
            if not listed and not physical_databases(info, branch_id):
                return True
            time.sleep(0.1)
    return False


# -- configuration -----------------------------------------------------------------------------


def test_throwaways_expire_after_check_expires_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("NEONFLOW_"):
            monkeypatch.delenv(name)
    config = tmp_path / "neonflow.toml"
    config.write_text("")
    settings = load_settings(config_file=config)
    assert settings.check.expires_in == "1h"
    wf = Branches(settings, NeonClient("http://127.0.0.1:9/api/v2", "key", "project"))
    expires = wf.expires_at(throwaway=True)
    assert expires is not None
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    config.write_text('[check]\nexpires_in = "6h"\n')
    wf = Branches(load_settings(config_file=config), wf.client)
    expires = wf.expires_at(throwaway=True)
    assert expires is not None and expires - datetime.now(UTC) > timedelta(hours=5)

    for bad, words in (("0s", "must expire"), ("31d", "30 days"), ("", "not a duration")):
        config.write_text(f'[check]\nexpires_in = "{bad}"\n')
        with pytest.raises(ConfigError) as raised:
            load_settings(config_file=config)
        assert "check.expires_in" in str(raised.value) and words in str(raised.value)


def test_bad_fault_settings_are_a_config_error_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "neonflow.toml").write_text(f'[local]\nstate_dir = "{tmp_path / "state"}"\n')
    for name, value in (("LATENCY_MS", "-100"), ("RATE_503", "1.5")):
        monkeypatch.setenv(f"NEONFLOW_LOCAL__FAULTS__{name}", value)
        result = nf("local", "up")
        assert result.exit_code == 2, result.output
        assert f"local.faults.{name.lower()}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        monkeypatch.delenv(f"NEONFLOW_LOCAL__FAULTS__{name}")
    assert not (tmp_path / "state" / "server.pid").exists()


# -- the local Neon's reaper -------------------------------------------------------------------


@pytest.fixture
def slow_project(tmp_path: Path, local_neon: LocalNeonInfo) -> Iterator[Path]:
    root = tmp_path / "project"
    root.mkdir()
    (root / "neonflow.toml").write_text(
        f"""
[app]
env_file = ".env"

[migrations]
alembic_ini = "{SLOW_SET}"

[check]
expires_in = "8s"

[local]
state_dir = "{local_neon.state_dir}"
"""
    )
    yield root


def test_a_check_killed_with_kill_9_leaves_a_copy_that_goes_when_it_expires(
    slow_project: Path, local_neon: LocalNeonInfo
):
    neonflow = Path(sys.executable).parent / "neonflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEONFLOW_")}
    env.pop("NEON_API_KEY", None)
    with (
        make_client(local_neon) as client,
        subprocess.Popen(
            [str(neonflow), "check"], cwd=slow_project, stderr=subprocess.PIPE, text=True, env=env
        ) as proc,
    ):
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # 0002 sleeps 30 s in PostgreSQL: the check is busy
                if line.startswith("upgrading"):
                    break
            copies = [b for b in client.list_branches() if b.name.startswith("check-")]
            assert len(copies) == 1, "the check made its copy"
            proc.send_signal(signal.SIGKILL)  # nothing of the check runs any more
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        copy = copies[0]
        assert copy.annotations[A_PURPOSE] == "check"
        assert copy.expires_at is not None
        assert copy.expires_at - copy.created_at <= timedelta(seconds=8)
        assert physical_databases(local_neon, copy.id), "the copy is there after the kill"

    assert gone_by(local_neon, copy.id, copy.expires_at + timedelta(seconds=15)), (
        "the reaper deletes the copy (and its databases) once it expires"
    )


def test_a_throwaway_that_expired_while_the_server_was_killed_goes_at_the_next_start(
    tmp_path: Path,
):
    settings, info = start_local_neon(tmp_path / "project")
    try:
        with make_client(info) as client:
            expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            created = client.create_branch(
                "check-orphan",
                annotations={A_CREATED_BY: "true", A_PURPOSE: "check"},
                expires_at=expires,
            )
            client.wait_for_operations(created.operations)
        os.kill(info.pid, signal.SIGKILL)
        while datetime.now(UTC) <= expires:  # the expiry passes while nothing runs
            time.sleep(0.1)
        again, started = service.up(settings)
        assert started
        assert gone_by(again, created.branch.id, datetime.now(UTC) + timedelta(seconds=15))
    finally:
        service.down(settings)


# -- branch prune ------------------------------------------------------------------------------


def fake_neon(branches: list[dict[str, Any]], deleted: list[str]) -> httpx.MockTransport:
    """Neon cloud as it lists branches, some past their expiry but not deleted yet."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v2/projects/proj")
        if request.method == "GET" and path == "/branches":
            return httpx.Response(
                200,
                json={
                    "branches": [b["branch"] for b in branches],
                    "annotations": {
                        b["branch"]["id"]: {
                            "object": {"type": "console/branch", "id": b["branch"]["id"]},
                            "value": b["annotations"],
                        }
                        for b in branches
                    },
                    "pagination": {},
                },
            )
        if request.method == "DELETE" and path.startswith("/branches/"):
            deleted.append(path.removeprefix("/branches/"))
            return httpx.Response(204)
        return httpx.Response(404, json={"code": "", "message": f"no {path}"})

    return httpx.MockTransport(handle)


def cloud_branch(
    name: str, annotations: dict[str, str], age: timedelta, expires_in: timedelta | None = None
) -> dict[str, Any]:
    moment = datetime.now(UTC)
    branch = {
        "id": f"br-{name}",
        "project_id": "proj",
        "name": name,
        "parent_id": None if name == "main" else "br-main",
        "current_state": "ready",
        "default": name == "main",
        "protected": False,
        "created_at": (moment - age).isoformat(),
        "updated_at": (moment - age).isoformat(),
    }
    if expires_in is not None:
        branch["expires_at"] = (moment + expires_in).isoformat()
    return {"branch": branch, "annotations": annotations}


def test_prune_sweeps_expired_throwaways_on_neon_cloud(tmp_path: Path):
    ours = {A_CREATED_BY: "true"}
    check = {**ours, A_PURPOSE: "check"}
    listing = [
        cloud_branch("main", {}, timedelta(days=90)),
        cloud_branch("check-expired", check, timedelta(hours=2), timedelta(minutes=-5)),
        cloud_branch(
            "rehearsal-expired",
            {**ours, A_PURPOSE: "rehearsal"},
            timedelta(hours=3),
            timedelta(minutes=-1),
        ),
        cloud_branch("check-running", check, timedelta(minutes=5), timedelta(minutes=55)),
        cloud_branch("check-dead", check, timedelta(hours=3), timedelta(hours=3)),
        cloud_branch("feature", ours, timedelta(days=10), timedelta(days=-1)),
        cloud_branch("theirs", {A_PURPOSE: "check"}, timedelta(days=10), timedelta(days=-1)),
    ]
    settings = load_settings(config_file=None, root=tmp_path)

    def prune(**kwargs: Any) -> tuple[list[str], list[str]]:
        deleted: list[str] = []
        client = NeonClient(
            "http://neon.test/api/v2", "key", "proj", transport=fake_neon(listing, deleted)
        )
        with client:
            args = {"older_than": None, "merged": False, "dry_run": False, **kwargs}
            result = Branches(settings, client).prune(**args)
        assert sorted(result.deleted) == sorted(d.removeprefix("br-") for d in deleted)
        return sorted(result.deleted), sorted(k["branch"] for k in result.kept)

    # --throwaways: the expired ones only; the running check, the feature and theirs stay
    deleted, kept = prune(throwaways=True)
    assert deleted == ["check-expired", "rehearsal-expired"]
    assert kept == ["check-dead", "check-running", "feature"]

    # --throwaways --older-than 1h: also a throw-away whose process died before it expired
    deleted, _ = prune(throwaways=True, older_than="1h")
    assert deleted == ["check-dead", "check-expired", "rehearsal-expired"]

    # every prune takes the expired throw-aways along
    deleted, _ = prune(older_than="30d")
    assert deleted == ["check-expired", "rehearsal-expired"]
    deleted, _ = prune(older_than="7d")
    assert deleted == ["check-expired", "feature", "rehearsal-expired"]


def test_prune_through_the_cli_keeps_a_throwaway_that_has_not_expired(project: Path, neon_client):
    result = nf("branch", "prune")
    assert result.exit_code == 2 and "--throwaways" in result.stderr

    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    created = neon_client.create_branch(
        "check-in-use", annotations={A_CREATED_BY: "true", A_PURPOSE: "check"}, expires_at=expires
    )
    neon_client.wait_for_operations(created.operations)
    try:
        result = nf("branch", "prune", "--throwaways", "--yes", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert "check-in-use" not in report["deleted"]
        assert {"branch": "check-in-use", "reason": "a throw-away branch that has not expired"} in (
            report["kept"]
        )
        assert neon_client.find_branch("check-in-use") is not None
    finally:
        neon_client.wait_for_operations(neon_client.delete_branch(created.branch.id))
