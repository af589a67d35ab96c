"""A state folder from before roles were per branch keeps its branches, passwords and URIs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psycopg

from neonflow.local import service
from neonflow.local.paths import StatePaths
from tests.conftest import make_client, start_local_neon

DB, ROLE = "neondb", "neondb_owner"


def _as_before_per_branch_roles(state: Path) -> None:
    """Rewrite state.json as older local Neons kept it: one set of roles for the project."""
    path = StatePaths(state).metadata
    data = json.loads(path.read_text())
    main = next(b for b in data["branches"].values() if b.get("default"))
    data["roles"] = main["_roles"]
    for branch in data["branches"].values():
        del branch["_roles"]
    path.write_text(json.dumps(data))


def test_an_older_state_folder_gets_per_branch_roles(tmp_path: Path):
    settings, info = start_local_neon(tmp_path / "project")
    try:
        with make_client(info) as client:
            created = client.create_branch("older")
            client.wait_for_operations(created.operations)
            child = created.branch.id
            main = next(b for b in client.list_branches() if b.default).id
            uris = {b: client.connection_uri(b, DB, ROLE) for b in (main, child)}
        assert service.down(settings) is True
        _as_before_per_branch_roles(settings.state_dir)

        again, started = service.up(settings)
        assert started
        headers = {"Authorization": f"Bearer {again.token}"}
        with httpx.Client(base_url=again.api_host, headers=headers) as http:
            base = f"/projects/{again.project_id}/branches"
            # First thing after the upgrade, before main is looked at.
            made = http.post(f"{base}/{child}/roles", json={"role": {"name": "app_user"}})
            assert made.status_code == 201, made.text
            names = {
                b: {r["name"] for r in http.get(f"{base}/{b}/roles").json()["roles"]} for b in uris
            }
        with make_client(again) as client:
            # The same passwords, so every URI handed out before still connects.
            assert {b: client.connection_uri(b, DB, ROLE) for b in uris} == uris
        # A role made on the child after the upgrade is the child's alone.
        assert names == {main: {ROLE}, child: {ROLE, "app_user"}}
        for uri in uris.values():
            with psycopg.connect(uri) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (ROLE,)
    finally:
        service.down(settings)
