"""``branch start`` under stress: killed mid-way, run concurrently, and against a faulty API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from neonflow import envfile
from neonflow.config import load_settings
from neonflow.local.service import LocalNeonInfo
from neonflow.migrations.probe import read_heads
from neonflow.neon import NeonClient
from neonflow.urls import same_database
from neonflow.workflow.branches import Branches
from tests.conftest import make_client, write_project

CLI = [sys.executable, "-m", "neonflow.cli.main"]


def run_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=project, capture_output=True, text=True, timeout=120, env=_env()
    )


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NEONFLOW_")}


def branches_named(client: NeonClient, name: str) -> list[str]:
    return [b.id for b in client.list_branches() if b.name == name]


@pytest.mark.parametrize(
    "marker", ["creating branch", "DATABASE_URL in", "running alembic upgrade head"]
)
def test_start_killed_at_each_step_converges_on_rerun(
    tmp_path: Path, local_neon: LocalNeonInfo, neon_client: NeonClient, marker: str
):
    project = write_project(tmp_path / "p", local_neon)
    name = f"kill-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        [*CLI, "branch", "start", name],
        cwd=project,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, seen

    rerun = run_cli(project, "branch", "start", name)

    assert rerun.returncode == 0, rerun.stderr
    ids = branches_named(neon_client, name)
    assert len(ids) == 1  # no orphan, no duplicate
    url = envfile.read_var(project / ".env", "DATABASE_URL")
    assert url is not None
    assert same_database(url, neon_client.connection_uri(ids[0], "neondb", "neondb_owner"))
    assert read_heads(url) == ("0002",)
    assert [p.name for p in project.iterdir() if p.name.startswith(".env.")] == []


def test_concurrent_starts_make_one_branch_per_name(
    tmp_path: Path, local_neon: LocalNeonInfo, neon_client: NeonClient
):
    tag = uuid.uuid4().hex[:6]
    distinct = [f"conc-{tag}-{i}" for i in range(10)]
    shared = f"conc-{tag}-same"
    # Each command in a project folder of its own, so each has its own env file to check.
    jobs = [(write_project(tmp_path / f"p{i}", local_neon), n) for i, n in enumerate(distinct)]
    jobs += [(write_project(tmp_path / f"s{i}", local_neon), shared) for i in range(5)]

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: run_cli(job[0], "branch", "start", job[1]), jobs))

    assert [r.returncode for r in results] == [0] * len(jobs), [r.stderr for r in results]
    for name in distinct:
        assert len(branches_named(neon_client, name)) == 1
    shared_ids = branches_named(neon_client, shared)
    assert len(shared_ids) == 1
    shared_uri = neon_client.connection_uri(shared_ids[0], "neondb", "neondb_owner")
    for project, name in jobs:
        url = envfile.read_var(project / ".env", "DATABASE_URL")
        assert url is not None and read_heads(url) == ("0002",)
        if name == shared:
            assert same_database(url, shared_uri)


def test_start_and_delete_succeed_against_a_faulty_api(tmp_path: Path, fresh_neon: LocalNeonInfo):
    faults = {
        "rate_503": 0.1,
        "rate_429": 0.1,
        "rate_423": 0.1,
        "rate_drop": 0.1,
        "latency_ms": 30,
        "seed": 11,
    }
    admin = httpx.put(
        f"{fresh_neon.api_host}/_local/faults",
        json=faults,
        headers={"Authorization": f"Bearer {fresh_neon.token}"},
    )
    assert admin.status_code == 200
    project = write_project(tmp_path / "p", fresh_neon)
    settings = load_settings(config_file=project / "neonflow.toml")
    names = [f"faulty-{i}" for i in range(4)]

    with make_client(fresh_neon, backoff_base=0.01, backoff_cap=0.1) as client:
        workflow = Branches(settings, client)
        for name in names:
            assert workflow.start(name).revision == ["0002"]
        for name in names:
            assert workflow.start(name).created is False
        faulty_requests = client.request_count

    with make_client(fresh_neon) as clean:
        httpx.put(
            f"{fresh_neon.api_host}/_local/faults",
            json={},
            headers={"Authorization": f"Bearer {fresh_neon.token}"},
        )
        listed = sorted(b.name for b in clean.list_branches())
        assert listed == sorted(["main", *names])  # exactly one per name, no orphans

    with make_client(fresh_neon, backoff_base=0.01, backoff_cap=0.1) as client:
        httpx.put(
            f"{fresh_neon.api_host}/_local/faults",
            json=faults,
            headers={"Authorization": f"Bearer {fresh_neon.token}"},
        )
        workflow = Branches(settings, client)
        for name in names:
            assert workflow.delete(name).branch == name
        for name in names:
            assert workflow.delete(name).already_gone is True

    with make_client(fresh_neon) as clean:
        httpx.put(
            f"{fresh_neon.api_host}/_local/faults",
            json={},
            headers={"Authorization": f"Bearer {fresh_neon.token}"},
        )
        assert [b.name for b in clean.list_branches()] == ["main"]
    assert faulty_requests > 8 * 2  # the faults really made the client retry


def test_one_start_makes_the_fewest_requests(tmp_path: Path, local_neon: LocalNeonInfo):
    project = write_project(tmp_path / "p", local_neon)
    settings = load_settings(config_file=project / "neonflow.toml")
    seen: list[str] = []
    with make_client(local_neon) as client:
        client._http.event_hooks["request"].append(  # type: ignore[attr-defined]
            lambda request: seen.append(f"{request.method} {request.url.path.split('/', 5)[-1]}")
        )
        Branches(settings, client).start(f"count-{uuid.uuid4().hex[:6]}")

    polls = [r for r in seen if r.startswith("GET operations/")]
    others = [r for r in seen if r not in polls]
    # One list (target and parent together), one create; the URI comes in the create answer.
    assert others == ["GET branches", "POST branches"]
    assert 1 <= len(polls) <= 6
    print(f"requests for one start: {len(seen)} ({len(polls)} operation polls)")
