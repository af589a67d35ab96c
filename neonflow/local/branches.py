"""The branch model: Neon's branches of one project, as requests read and change them.

A branch is a copy of its parent's databases (see ``cluster``); creating and deleting one answer
at once with operations whose work runs on the queue's workers. A restore (Neon's reset) is in
``restore``.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from neonflow.local import records, shapes
from neonflow.local.cluster import Cluster
from neonflow.local.computes import Computes
from neonflow.local.errors import FEATURE_NOT_SUPPORTED, ApiError
from neonflow.local.operations import Operations
from neonflow.local.postgres import new_password
from neonflow.local.store import Store, neon_id
from neonflow.local.validation import (
    check_annotation,
    check_bool,
    check_branch_name,
    check_expiry,
    parse_time,
    refuse_point_in_time,
)
from neonflow.times import now, rfc3339

log = logging.getLogger("neonflow.local")


@dataclass
class Branches:
    """The project's branches. ``wake`` is set when an expiration is set (the reaper's)."""

    store: Store
    project_id: str
    operations: Operations
    cluster: Cluster
    computes: Computes
    wake: threading.Event

    def branch_json(self, branch: dict[str, Any]) -> dict[str, Any]:
        return shapes.branch_json(branch, self.project_id)

    # -- reads -------------------------------------------------------------------------------

    def get(self, branch_id: str) -> dict[str, Any]:
        with self.store.lock:
            branch = records.branch(self.store, branch_id)
            return {
                "branch": self.branch_json(branch),
                "annotation": shapes.annotation_json(branch),
            }

    def page(
        self,
        search: str | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page of the branches (Neon's list: search, sort, cursor)."""
        if sort_by not in ("name", "created_at", "updated_at"):
            raise ApiError(400, "sort_by must be one of name, created_at, updated_at")
        if sort_order not in ("asc", "desc"):
            raise ApiError(400, "sort_order must be asc or desc")
        if limit is not None and not 1 <= limit <= 10000:
            raise ApiError(400, "limit must be between 1 and 10000")
        with self.store.lock:
            rows = list(records.live_branches(self.store))
            if search:
                needle = search.lower()
                rows = [b for b in rows if needle in b["name"].lower() or needle in b["id"]]
            rows.sort(key=lambda b: (b[sort_by], b["id"]), reverse=sort_order == "desc")
            start = _decode_cursor(cursor, rows) if cursor else 0
            page = rows[start : start + limit] if limit else rows[start:]
            more = limit is not None and start + limit < len(rows)
            pagination: dict[str, Any] = {"sort_by": sort_by, "sort_order": sort_order}
            if more and page:
                pagination["next"] = _encode_cursor(page[-1]["id"])
            return {
                "branches": [self.branch_json(b) for b in page],
                "annotations": {b["id"]: shapes.annotation_json(b) for b in page},
                "pagination": pagination,
            }

    # -- create --------------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("branch") or {}
        if not isinstance(spec, dict):
            raise ApiError(400, "branch must be an object")
        refuse_point_in_time(spec, "parent_lsn", "parent_timestamp")
        endpoints_spec = body.get("endpoints") or []
        if not isinstance(endpoints_spec, list):
            raise ApiError(400, "endpoints must be an array")
        annotation = body.get("annotation_value") or {}
        check_annotation(annotation)
        check_bool(spec, "protected")
        for ep in endpoints_spec:
            if not isinstance(ep, dict) or ep.get("type") not in ("read_write", "read_only"):
                raise ApiError(400, "each endpoint needs a type: read_write or read_only")
        if sum(1 for ep in endpoints_spec if ep["type"] == "read_write") > 1:
            raise ApiError(400, "a branch can have only one read_write endpoint")
        init_source = spec.get("init_source", "parent-data")
        if init_source not in ("parent-data", "schema-only"):
            raise ApiError(
                400, f"init_source {init_source!r} is not supported locally", FEATURE_NOT_SUPPORTED
            )
        store = self.store
        with records.mutation(store):
            parent_id = spec.get("parent_id") or records.default_branch(store)["id"]
            parent = records.branch(store, parent_id)
            if parent.get("expires_at"):
                raise ApiError(400, "cannot create a branch from a branch that has an expiration")
            name = spec.get("name")
            if name is None:
                name = neon_id("br").removeprefix("br-")
            check_branch_name(name)  # an empty name is a 400, as on Neon
            records.check_name_free(store, name)
            expires_at = check_expiry(spec.get("expires_at"), spec.get("protected"))
            branch = records.new_branch(
                name,
                parent=None if init_source == "schema-only" else parent,
                default=False,
                init_source=init_source,
            )
            branch["protected"] = bool(spec.get("protected", False))
            if expires_at is not None:
                branch["expires_at"] = rfc3339(expires_at)
                ttl = expires_at - datetime.now(UTC)
                branch["ttl_interval_seconds"] = max(1, int(ttl.total_seconds()))
                self.wake.set()
            stamp = now()
            branch["_annotation"] = {"value": annotation, "created_at": stamp, "updated_at": stamp}
            branch["_databases"] = [
                records.new_database(branch["id"], d["name"], d["owner_name"])
                for d in parent["_databases"]
            ]
            # The parent's roles, with their passwords, except that the children of a
            # protected branch get new ones (as on Neon).
            roles = branch["_roles"] = copy.deepcopy(records.roles(store, parent))
            if parent.get("protected"):
                for role in roles.values():
                    role["password"] = new_password()
            ops = [self.operations.new("create_branch", branch["id"])]
            endpoints = []
            for ep_spec in endpoints_spec:
                endpoint = self.computes.new_endpoint(branch["id"], ep_spec["type"], ep_spec)
                ops.append(self.operations.new("start_compute", branch["id"], endpoint["id"]))
                endpoints.append(endpoint)
                store.endpoints[endpoint["id"]] = endpoint
            branch["_source"] = parent["id"]
            store.branches[branch["id"]] = branch
            databases = branch["_databases"]
            response = {
                "branch": self.branch_json(branch),
                "endpoints": [self.computes.endpoint_json(e) for e in endpoints],
                "operations": [self.operations.json(op) for op in ops],
                "roles": shapes.roles_json(roles, branch["id"]),
                "databases": [shapes.database_json(branch["id"], d) for d in databases],
            }
            if endpoints and len(databases) == 1 and len(roles) == 1:
                db = databases[0]
                endpoint = records.read_write_endpoint(store, branch["id"]) or endpoints[0]
                password = roles[db["owner_name"]]["password"]
                response["connection_uris"] = [shapes.connection_details(db, password, endpoint)]
        self.operations.submit(ops)
        return response

    def run_create(self, branch_id: str) -> None:
        """The work of ``create_branch``: the branch's databases copied from its source."""
        with self.store.lock:
            branch = self.store.branches[branch_id]
            source = self.store.branches[branch["_source"]]
            pairs = [
                (s["physical"], d["physical"], d["owner_name"])
                for s, d in zip(source["_databases"], branch["_databases"], strict=True)
            ]
        size = 0
        for src, dst, owner in pairs:
            # Run again after a restart whose disk had not caught up, the copy may be there and
            # in use (CREATE DATABASE commits whole or not at all): keep it.
            made = self.cluster.size(dst)
            size += made if made is not None else self.cluster.copy(src, dst, owner)
            if branch.get("init_source") == "schema-only":
                self.cluster.truncate_all(dst)
        with self.store.lock:
            branch.update(
                current_state="ready",
                pending_state=None,
                state_changed_at=now(),
                _logical_size=size,
            )
            branch.pop("_source", None)
            if branch.get("init_source") == "schema-only":
                branch["parent_id"] = None

    def abandon(self, branch_id: str) -> None:
        """A branch whose creation failed goes away: no half-made branch stays in ``init``."""
        with self.store.lock:
            branch = self.store.branches.get(branch_id)
            if branch is None:
                return
            branch["_deleted"] = True
            for endpoint_id in [e["id"] for e in records.branch_endpoints(self.store, branch_id)]:
                del self.store.endpoints[endpoint_id]
        self.run_delete(branch_id)

    # -- update, default, delete -----------------------------------------------------------

    def update(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("branch")
        if not isinstance(spec, dict):
            raise ApiError(400, "request body must contain a branch object")
        check_bool(spec, "protected")
        with records.mutation(self.store):
            branch = records.branch(self.store, branch_id)
            self.operations.check_unlocked(branch_id)
            if "name" in spec:
                check_branch_name(spec["name"])
                records.check_name_free(self.store, spec["name"], exclude=branch_id)
            protected = spec.get("protected", branch["protected"])
            if "expires_at" in spec and spec["expires_at"] is not None:
                if branch["default"]:
                    raise ApiError(400, "the default branch cannot have an expiration")
                if records.children(self.store, branch_id):
                    raise ApiError(400, "a branch with children cannot have an expiration")
                moment = check_expiry(spec["expires_at"], protected)
                assert moment is not None
                branch["expires_at"] = rfc3339(moment)
                branch["ttl_interval_seconds"] = max(
                    1, int((moment - datetime.now(UTC)).total_seconds())
                )
                self.wake.set()
            elif "expires_at" in spec:
                branch.pop("expires_at", None)
                branch.pop("ttl_interval_seconds", None)
            elif protected and branch.get("expires_at"):
                raise ApiError(400, "a branch with an expiration cannot be protected")
            if "name" in spec:
                branch["name"] = spec["name"]
            branch["protected"] = bool(protected)
            branch["updated_at"] = now()
            return {"branch": self.branch_json(branch), "operations": []}

    def set_default(self, branch_id: str) -> dict[str, Any]:
        with records.mutation(self.store):
            branch = records.branch(self.store, branch_id)
            self.operations.check_unlocked(branch_id)
            if branch.get("expires_at"):
                raise ApiError(
                    400, "a branch with an expiration cannot be the default; clear it first"
                )
            if branch["current_state"] != "ready":
                raise ApiError(423, "branch is not ready yet")
            for other in records.live_branches(self.store):
                if other["default"]:
                    other["default"] = False
                    other["updated_at"] = now()
            branch["default"] = True
            branch["updated_at"] = now()
            return {"branch": self.branch_json(branch), "operations": []}

    def delete(self, branch_id: str) -> dict[str, Any] | None:
        """Delete the branch; None when there is no such branch (Neon's 204)."""
        with records.mutation(self.store):
            branch = self.store.branches.get(branch_id)
            if branch is None or branch.get("_deleted"):
                return None
            if branch["default"]:
                raise ApiError(422, "cannot delete the project's default branch")
            if branch["protected"]:
                raise ApiError(422, "cannot delete a protected branch")
            if records.children(self.store, branch_id):
                raise ApiError(422, "cannot delete a branch that has child branches")
            self.operations.check_unlocked(branch_id)
            op = self.operations.new("delete_timeline", branch_id)
            branch["_deleted"] = True
            branch["updated_at"] = now()
            released = [e["id"] for e in records.branch_endpoints(self.store, branch_id)]
            for endpoint_id in released:
                del self.store.endpoints[endpoint_id]
            out = {"branch": self.branch_json(branch), "operations": [self.operations.json(op)]}
        # Only once the delete is on disk: a failed write keeps the endpoints and their hosts.
        self.computes.release(released)
        self.operations.submit([op])
        return out

    def run_delete(self, branch_id: str) -> None:
        """The work of ``delete_timeline``: the branch's databases, then its record, gone."""
        with self.store.lock:
            branch = self.store.branches.get(branch_id)
            physical = [d["physical"] for d in branch["_databases"]] if branch else []
        for name in physical:
            self.cluster.drop(name)
        with self.store.lock:
            self.store.branches.pop(branch_id, None)

    # -- upkeep ----------------------------------------------------------------------------

    def finish_deletes(self) -> None:
        """Finish the deletes whose work failed or whose end could not be saved."""
        with self.store.lock:
            leftovers = [
                b["id"]
                for b in self.store.branches.values()
                if b.get("_deleted") and not self.operations.pending(b["id"])
            ]
        for branch_id in leftovers:
            self.run_delete(branch_id)
            self.store.save_or_defer()

    def reap_expired(self) -> list[str]:
        """Delete branches whose ``expires_at`` has passed (Neon's background job)."""
        moment = datetime.now(UTC)
        gone = []
        with self.store.lock:  # requests change the branches meanwhile
            candidates = list(records.live_branches(self.store))
        for branch in candidates:
            expires = branch.get("expires_at")
            if expires and parse_time(expires, "expires_at") <= moment:
                try:
                    self.delete(branch["id"])
                    gone.append(branch["id"])
                except ApiError as exc:  # busy (423) or a full disk (503): the next tick
                    log.info("expired branch %s not deleted: %s", branch["id"], exc.message)
        return gone

    def next_expiry(self) -> datetime | None:
        """When the next branch expires (the reaper wakes then)."""
        with self.store.lock:
            moments = [
                parse_time(b["expires_at"], "expires_at")
                for b in records.live_branches(self.store)
                if b.get("expires_at")
            ]
        return min(moments, default=None)


def _encode_cursor(branch_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": branch_id}).encode()).decode()


def _decode_cursor(cursor: str, rows: list[dict[str, Any]]) -> int:
    try:
        after = json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "invalid cursor") from None
    for index, row in enumerate(rows):
        if row["id"] == after:
            return index + 1
    raise ApiError(400, "cursor no longer valid: the branch it points after is gone")
