"""Endpoints (Neon's computes), and what a client reads to reach a branch's data: its databases,
roles, connection URIs and schema.

Locally every endpoint reaches the same cluster through the proxy, which gives each one a host
of its own; starting and suspending one are operations, as on Neon, that change only its state.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Protocol

from neonflow.local import records, shapes
from neonflow.local.cluster import Cluster
from neonflow.local.errors import ApiError, not_found
from neonflow.local.operations import Operations
from neonflow.local.store import Store, neon_id
from neonflow.times import now


class Hosts(Protocol):
    """Where endpoints are reached: the proxy binds an address per endpoint."""

    def allocate(self, endpoint_id: str, wanted: str | None = None) -> str: ...

    def release(self, endpoint_id: str) -> None: ...


@dataclass
class Computes:
    """The endpoints of the project's branches, and the reads of a branch's contents."""

    store: Store
    project_id: str
    operations: Operations
    cluster: Cluster
    hosts: Hosts | None = None  # the proxy, attached by the server before bootstrap

    # -- endpoints -------------------------------------------------------------------------

    def new_endpoint(
        self, branch_id: str, kind: str, spec: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A new endpoint's record, with a host of its own (the caller stores it)."""
        endpoint_id = neon_id("ep")
        host = (
            self.hosts.allocate(endpoint_id)
            if self.hosts is not None
            else f"127.0.0.1:{self.cluster.pg.port}"
        )
        return records.new_endpoint(endpoint_id, branch_id, kind, host, spec)

    def release(self, endpoint_ids: list[str]) -> None:
        """Give back the hosts of deleted endpoints (once their deletion is on disk)."""
        if self.hosts is not None:
            for endpoint_id in endpoint_ids:
                self.hosts.release(endpoint_id)

    def endpoint_json(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        return shapes.endpoint_json(endpoint, self.project_id)

    def list_endpoints(self, branch_id: str | None = None) -> dict[str, Any]:
        with self.store.lock:
            if branch_id is not None:
                records.branch(self.store, branch_id)
                rows = records.branch_endpoints(self.store, branch_id)
            else:
                rows = list(self.store.endpoints.values())
            return {"endpoints": [self.endpoint_json(e) for e in rows]}

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        with self.store.lock:
            return {"endpoint": self.endpoint_json(records.endpoint(self.store, endpoint_id))}

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("endpoint")
        if not isinstance(spec, dict) or not spec.get("branch_id") or not spec.get("type"):
            raise ApiError(400, "endpoint.branch_id and endpoint.type are required")
        if spec["type"] not in ("read_write", "read_only"):
            raise ApiError(400, "endpoint.type must be read_write or read_only")
        with records.mutation(self.store):
            records.branch(self.store, spec["branch_id"])
            existing = records.branch_endpoints(self.store, spec["branch_id"])
            if spec["type"] == "read_write" and any(e["type"] == "read_write" for e in existing):
                raise ApiError(409, "the branch already has a read_write endpoint")
            endpoint = self.new_endpoint(spec["branch_id"], spec["type"], spec)
            op = self.operations.new("start_compute", spec["branch_id"], endpoint["id"])
            self.store.endpoints[endpoint["id"]] = endpoint
            out = {
                "endpoint": self.endpoint_json(endpoint),
                "operations": [self.operations.json(op)],
            }
        self.operations.submit([op])
        return out

    def endpoint_action(self, endpoint_id: str, action: str) -> dict[str, Any]:
        """``start`` or ``suspend`` a compute (locally, connections work either way)."""
        with records.mutation(self.store):
            endpoint = records.endpoint(self.store, endpoint_id)
            self.operations.check_unlocked(endpoint["branch_id"])
            kind = "start_compute" if action == "start" else "suspend_compute"
            endpoint["pending_state"] = "active" if action == "start" else "idle"
            op = self.operations.new(kind, endpoint["branch_id"], endpoint_id)
            out = {
                "endpoint": self.endpoint_json(endpoint),
                "operations": [self.operations.json(op)],
            }
        self.operations.submit([op])
        return out

    def run_state(self, endpoint_id: str, state: str) -> None:
        """The work of ``start_compute`` and ``suspend_compute``: the endpoint is in ``state``."""
        with self.store.lock:
            endpoint = self.store.endpoints.get(endpoint_id)
            if endpoint is None:
                return
            endpoint.update(current_state=state, pending_state=None, updated_at=now())
            endpoint["started_at" if state == "active" else "suspended_at"] = now()

    # -- databases, roles, connection strings ----------------------------------------------

    def list_databases(self, branch_id: str) -> dict[str, Any]:
        with self.store.lock:
            branch = records.branch(self.store, branch_id)
            return {"databases": [shapes.database_json(branch_id, d) for d in branch["_databases"]]}

    def get_database(self, branch_id: str, name: str) -> dict[str, Any]:
        with self.store.lock:
            branch = records.branch(self.store, branch_id)
            for db in branch["_databases"]:
                if db["name"] == name:
                    return {"database": shapes.database_json(branch_id, db)}
        raise not_found(f"database {name}")

    def list_roles(self, branch_id: str) -> dict[str, Any]:
        with self.store.lock:
            branch = records.branch(self.store, branch_id)
            return {"roles": shapes.roles_json(records.roles(self.store, branch), branch_id)}

    def get_role(self, branch_id: str, name: str) -> dict[str, Any]:
        with self.store.lock:
            for role in self.list_roles(branch_id)["roles"]:
                if role["name"] == name:
                    return {"role": role}
        raise not_found(f"role {name}")

    def reveal_password(self, branch_id: str, role_name: str) -> dict[str, Any]:
        with self.store.lock:
            branch = records.branch(self.store, branch_id)
            role = records.roles(self.store, branch).get(role_name)
            if role is None:
                raise not_found(f"role {role_name}")
            return {"password": role["password"]}

    def connection_uri(
        self,
        branch_id: str | None,
        database_name: str | None,
        role_name: str | None,
        pooled: bool = False,
        endpoint_id: str | None = None,
    ) -> dict[str, Any]:
        if not database_name or not role_name:
            raise ApiError(400, "database_name and role_name are required")
        store = self.store
        with store.lock:
            if endpoint_id:
                endpoint = records.endpoint(store, endpoint_id)
                if branch_id and endpoint["branch_id"] != branch_id:
                    raise ApiError(400, f"endpoint {endpoint_id} is not on branch {branch_id}")
                branch = records.branch(store, endpoint["branch_id"])
            else:
                branch = (
                    records.branch(store, branch_id) if branch_id else records.default_branch(store)
                )
                found = records.read_write_endpoint(store, branch["id"])
                if found is None:
                    raise ApiError(404, f"branch {branch['id']} has no read_write endpoint")
                endpoint = found
            records.physical(branch, database_name)
            role = records.roles(store, branch).get(role_name)
            if role is None:
                raise not_found(f"role {role_name}")
            host = shapes.pooler_host(endpoint) if pooled else endpoint["host"]
            return {"uri": shapes.uri(role_name, role["password"], host, database_name)}

    # -- schema ----------------------------------------------------------------------------

    def schema(self, branch_id: str, db_name: str | None) -> dict[str, Any]:
        with self.store.lock:
            physical = records.physical(records.branch(self.store, branch_id), db_name)
        return {"sql": self._dump_schema(physical)}

    def compare_schema(
        self, branch_id: str, db_name: str | None, base_branch_id: str | None
    ) -> dict[str, Any]:
        with self.store.lock:
            branch = records.branch(self.store, branch_id)
            base_id = base_branch_id or branch.get("parent_id")
            if not base_id:
                raise ApiError(400, "the branch has no parent: give base_branch_id")
            base = records.branch(self.store, base_id)
            target_db = records.physical(branch, db_name)
            base_db = records.physical(base, db_name)
        before = self._dump_schema(base_db).splitlines(keepends=True)
        after = self._dump_schema(target_db).splitlines(keepends=True)
        diff = difflib.unified_diff(before, after, f"a/{db_name}", f"b/{db_name}")
        return {"diff": "".join(diff)}

    def _dump_schema(self, physical: str) -> str:
        try:
            return self.cluster.dump_schema(physical)
        except RuntimeError as exc:  # pg_dump failed
            raise ApiError(500, str(exc)) from None
