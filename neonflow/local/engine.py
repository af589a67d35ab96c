"""The local Neon's behaviour: Neon's branch model over one embedded PostgreSQL cluster.

A branch owns one PostgreSQL database per Neon database (``neondb`` on branch ``br-x`` is the
physical database ``neondb_br-x``). Branching copies the parent's databases with
``CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY``. Mutations answer at once with operations that
a worker thread then runs, so clients wait as they must on Neon.
"""

from __future__ import annotations

import base64
import difflib
import fcntl
import json
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import psycopg
from psycopg import sql

from neonflow.config import FaultSettings
from neonflow.local.postgres import EmbeddedPostgres, bin_dir, new_password
from neonflow.local.scram import internal_password
from neonflow.local.store import Store, StoreWriteError, neon_id, operation_id
from neonflow.times import now, rfc3339

log = logging.getLogger("neonflow.local")

REGION = "local"
DEFAULT_DATABASE = "neondb"
DEFAULT_ROLE = "neondb_owner"
PENDING = ("scheduling", "running")
MAX_EXPIRY = timedelta(days=30)
WAL_LOG_BELOW_BYTES = 32 * 1024 * 1024
WAL_HEADROOM_BYTES = 16 * 1024 * 1024  # one WAL segment
HOLD_PENDING_SECONDS = 0.5
_NAME_PATTERN = re.compile(r"^[a-z0-9-]{1,60}$")
# The spec bounds an annotation to 50 string properties (AnnotationValueData.maxProperties) and
# states no string lengths; the lengths are the local Neon's own, roomy for what clients store
# (git refs, a commit message) and small enough that a branch's metadata stays small.
MAX_ANNOTATIONS = 50
MAX_ANNOTATION_KEY = 256
MAX_ANNOTATION_VALUE = 4096


class Hosts(Protocol):
    """Where endpoints are reached: the proxy binds an address per endpoint."""

    def allocate(self, endpoint_id: str, wanted: str | None = None) -> str: ...

    def release(self, endpoint_id: str) -> None: ...


class ApiError(Exception):
    """An error answer: Neon's ``{code, message}`` body with an HTTP status."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", "RESOURCE_NOT_FOUND")


def refuse_point_in_time(values: Mapping[str, Any], *names: str) -> None:
    """A 400 when any of ``names`` is given: one cluster keeps no history to go back to."""
    given = [n for n in names if values.get(n)]
    if given:
        raise ApiError(
            400,
            f"point-in-time ({', '.join(given)}) is not available on the local Neon",
            "FEATURE_NOT_SUPPORTED",
        )


def parse_time(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp with a time zone, or a 400."""
    if not isinstance(value, str):
        raise ApiError(400, f"{field} must be an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{field} is not a valid RFC 3339 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, f"{field} must include a time zone")
    return parsed.astimezone(UTC)


class LocalNeon:
    """One local project. Public methods take and return JSON-shaped dicts, or raise ApiError."""

    def __init__(
        self,
        store: Store,
        pg: EmbeddedPostgres,
        project_id: str,
        faults: FaultSettings | None = None,
        workers: int = 4,
    ) -> None:
        self.store = store
        self.pg = pg
        self.project_id = project_id
        self.faults = faults or FaultSettings()
        self._random = random.Random(self.faults.seed)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neon-op")
        self._copy_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._clone = False
        self._stop = threading.Event()
        self._changed = threading.Condition(self.store.lock)
        self.wake = threading.Event()  # the reaper's: an expiration was set
        self.hosts: Hosts | None = None  # the proxy, attached by the server before bootstrap

    # -- lifecycle -------------------------------------------------------------------------

    def bootstrap(self) -> None:
        """Create the project, its owner role and the default branch on first start."""
        self._clone = self._probe_clone()
        with self.store.lock:
            if self.store.data["project"]:
                self._resume()
                return
            stamp = now()
            self.store.data["project"] = {
                "id": self.project_id,
                "name": self.project_id,
                "created_at": stamp,
                "updated_at": stamp,
            }
            password = new_password()
            self.store.roles[DEFAULT_ROLE] = {"password": password, "created_at": stamp}
        # PostgreSQL knows only the proxy's internal password: the API's works at the proxy only.
        self._sql(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(DEFAULT_ROLE),
                sql.Literal(internal_password(self.pg.password, DEFAULT_ROLE)),
            ),
            ignore="already exists",
        )
        branch = self._new_branch("main", parent=None, default=True, init_source="parent-data")
        db = self._database_record(branch["id"], DEFAULT_DATABASE, DEFAULT_ROLE)
        branch["_databases"] = [db]
        self._sql(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(db["physical"]), sql.Identifier(DEFAULT_ROLE)
            ),
            ignore="already exists",
        )
        branch.update(current_state="ready", pending_state=None)
        endpoint = self._new_endpoint(branch["id"], "read_write")
        endpoint.update(current_state="active", pending_state=None, started_at=now())
        with self.store.lock:
            self.store.branches[branch["id"]] = branch
            self.store.endpoints[endpoint["id"]] = endpoint
            self.store.save()

    def _resume(self) -> None:
        """Run again the operations a crash or a stop interrupted (each one is idempotent)."""
        pending = [op for op in self.store.operations.values() if op["status"] in PENDING]
        for op in sorted(pending, key=lambda o: o["created_at"]):
            work = self._work_for(op)
            if work is not None:
                self._executor.submit(self._run_chain, [(op, work)])

    def close(self) -> None:
        self._stop.set()
        self._executor.shutdown(wait=True, cancel_futures=False)
        self.store.flush()  # what a full disk kept in memory, if there is room now

    def reap_expired(self) -> list[str]:
        """Delete branches whose ``expires_at`` has passed (Neon's background job)."""
        moment = datetime.now(UTC)
        gone = []
        with self.store.lock:  # requests change the branches meanwhile
            candidates = list(self._live_branches())
        for branch in candidates:
            expires = branch.get("expires_at")
            if expires and parse_time(expires, "expires_at") <= moment:
                try:
                    self.delete_branch(branch["id"])
                    gone.append(branch["id"])
                except ApiError as exc:  # busy (423) or a full disk (503): the next tick
                    log.info("expired branch %s not deleted: %s", branch["id"], exc.message)
        return gone

    # -- projects --------------------------------------------------------------------------

    def project(self) -> dict[str, Any]:
        p = self.store.data["project"]
        period_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0)
        return {
            "id": p["id"],
            "platform_id": "local",
            "region_id": REGION,
            "name": p["name"],
            "provisioner": "k8s-neonvm",
            "default_endpoint_settings": {
                "autoscaling_limit_min_cu": 0.25,
                "autoscaling_limit_max_cu": 1,
                "suspend_timeout_seconds": 0,
            },
            "settings": {"allowed_ips": {"ips": [], "protected_branches_only": False}},
            "pg_version": 18,
            "proxy_host": "127.0.0.1",
            "branch_logical_size_limit": 0,
            "branch_logical_size_limit_bytes": 0,
            "store_passwords": True,
            "active_time": 0,
            "active_time_seconds": 0,
            "compute_time_seconds": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "data_storage_bytes_hour": 0,
            "cpu_used_sec": 0,
            "creation_source": "neonflow-local",
            "history_retention_seconds": 0,
            "created_at": p["created_at"],
            "updated_at": p["updated_at"],
            "consumption_period_start": rfc3339(period_start),
            "consumption_period_end": rfc3339(period_start + timedelta(days=31)),
            "owner_id": "local",
        }

    def check_project(self, project_id: str) -> None:
        if project_id != self.project_id:
            raise not_found(f"project {project_id}")

    @contextmanager
    def _mutation(self) -> Iterator[None]:
        """A request's change: kept once on disk, undone (and a 503) when it cannot be saved."""
        try:
            with self.store.transaction():
                yield
        except StoreWriteError as exc:
            raise ApiError(
                503, f"{exc}; nothing was changed: free space there and retry", "UNAVAILABLE"
            ) from None

    # -- branches: reads -------------------------------------------------------------------

    def _live_branches(self) -> Iterator[dict[str, Any]]:
        return (b for b in self.store.branches.values() if not b.get("_deleted"))

    def _branch(self, branch_id: str) -> dict[str, Any]:
        branch = self.store.branches.get(branch_id)
        if branch is None or branch.get("_deleted"):
            raise not_found(f"branch {branch_id}")
        return branch

    def branch_json(self, branch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in branch.items() if not k.startswith("_") and v is not None}
        out.update(
            project_id=self.project_id,
            primary=branch["default"],
            cpu_used_sec=0,
            active_time_seconds=0,
            compute_time_seconds=0,
            written_data_bytes=0,
            data_transfer_bytes=0,
            logical_size=branch.get("_logical_size", 0),
        )
        return out

    def annotation_json(self, branch: dict[str, Any]) -> dict[str, Any]:
        ann = branch.get("_annotation") or {}
        return {
            "object": {"type": "console/branch", "id": branch["id"]},
            "value": ann.get("value", {}),
            "created_at": ann.get("created_at", branch["created_at"]),
            "updated_at": ann.get("updated_at", branch["updated_at"]),
        }

    def get_branch(self, branch_id: str) -> dict[str, Any]:
        with self.store.lock:
            branch = self._branch(branch_id)
            return {"branch": self.branch_json(branch), "annotation": self.annotation_json(branch)}

    def list_branches(
        self,
        search: str | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        if sort_by not in ("name", "created_at", "updated_at"):
            raise ApiError(400, "sort_by must be one of name, created_at, updated_at")
        if sort_order not in ("asc", "desc"):
            raise ApiError(400, "sort_order must be asc or desc")
        if limit is not None and not 1 <= limit <= 10000:
            raise ApiError(400, "limit must be between 1 and 10000")
        with self.store.lock:
            rows = list(self._live_branches())
            if search:
                needle = search.lower()
                rows = [b for b in rows if needle in b["name"].lower() or needle in b["id"]]
            rows.sort(key=lambda b: (b[sort_by], b["id"]), reverse=sort_order == "desc")
            start = 0
            if cursor:
                start = self._decode_cursor(cursor, rows)
            page = rows[start : start + limit] if limit else rows[start:]
            more = limit is not None and start + limit < len(rows)
            pagination: dict[str, Any] = {"sort_by": sort_by, "sort_order": sort_order}
            if more and page:
                pagination["next"] = self._encode_cursor(page[-1]["id"])
            return {
                "branches": [self.branch_json(b) for b in page],
                "annotations": {b["id"]: self.annotation_json(b) for b in page},
                "pagination": pagination,
            }

    @staticmethod
    def _encode_cursor(branch_id: str) -> str:
        return base64.urlsafe_b64encode(json.dumps({"after": branch_id}).encode()).decode()

    @staticmethod
    def _decode_cursor(cursor: str, rows: list[dict[str, Any]]) -> int:
        try:
            after = json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, "invalid cursor") from None
        for index, row in enumerate(rows):
            if row["id"] == after:
                return index + 1
        raise ApiError(400, "cursor no longer valid: the branch it points after is gone")

    # -- branches: create ------------------------------------------------------------------

    def create_branch(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("branch") or {}
        if not isinstance(spec, dict):
            raise ApiError(400, "branch must be an object")
        refuse_point_in_time(spec, "parent_lsn", "parent_timestamp")
        endpoints_spec = body.get("endpoints") or []
        if not isinstance(endpoints_spec, list):
            raise ApiError(400, "endpoints must be an array")
        annotation = body.get("annotation_value") or {}
        self._validate_annotation(annotation)
        _check_bool(spec, "protected")
        for ep in endpoints_spec:
            if not isinstance(ep, dict) or ep.get("type") not in ("read_write", "read_only"):
                raise ApiError(400, "each endpoint needs a type: read_write or read_only")
        if sum(1 for ep in endpoints_spec if ep["type"] == "read_write") > 1:
            raise ApiError(400, "a branch can have only one read_write endpoint")
        init_source = spec.get("init_source", "parent-data")
        if init_source not in ("parent-data", "schema-only"):
            raise ApiError(400, f"init_source {init_source!r} is not supported locally")
        with self._mutation():
            parent_id = spec.get("parent_id") or self._default_branch()["id"]
            parent = self._branch(parent_id)
            if parent.get("expires_at"):
                raise ApiError(400, "cannot create a branch from a branch that has an expiration")
            name = spec.get("name")
            if name is None:
                name = neon_id("br").removeprefix("br-")
            self._validate_name(name)  # an empty name is a 400, as on Neon
            self._check_name_free(name)
            expires_at = self._validate_expiry(spec.get("expires_at"), spec.get("protected"))
            branch = self._new_branch(
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
                self._database_record(branch["id"], d["name"], d["owner_name"])
                for d in parent["_databases"]
            ]
            create_op = self._new_operation("create_branch", branch["id"])
            chain: list[tuple[dict[str, Any], Callable[[], None]]] = [
                (create_op, self._work_for(create_op) or _nothing)
            ]
            endpoints = []
            for ep_spec in endpoints_spec:
                endpoint = self._new_endpoint(branch["id"], ep_spec["type"], ep_spec)
                start_op = self._new_operation("start_compute", branch["id"], endpoint["id"])
                chain.append((start_op, self._work_for(start_op) or _nothing))
                endpoints.append(endpoint)
                self.store.endpoints[endpoint["id"]] = endpoint
            branch["_source"] = parent["id"]
            self.store.branches[branch["id"]] = branch
            response = {
                "branch": self.branch_json(branch),
                "endpoints": [self.endpoint_json(e) for e in endpoints],
                "operations": [self.operation_json(op) for op, _ in chain],
                "roles": self._roles_json(branch["id"]),
                "databases": [self.database_json(branch["id"], d) for d in branch["_databases"]],
            }
            if endpoints and len(branch["_databases"]) == 1 and len(self.store.roles) == 1:
                response["connection_uris"] = [self._connection_details(branch)]
        self._executor.submit(self._run_chain, chain)
        return response

    def _new_branch(
        self, name: str, parent: dict[str, Any] | None, default: bool, init_source: str
    ) -> dict[str, Any]:
        stamp = now()
        return {
            "id": neon_id("br"),
            "name": name,
            "parent_id": parent["id"] if parent else None,
            "parent_timestamp": stamp if parent else None,
            "parent_lsn": None,
            "current_state": "init",
            "pending_state": "ready",
            "state_changed_at": stamp,
            "creation_source": "neonflow-local",
            "created_at": stamp,
            "updated_at": stamp,
            "default": default,
            "protected": False,
            "init_source": init_source,
            "created_by": {"name": "local"},
        }

    def _database_record(self, branch_id: str, name: str, owner: str) -> dict[str, Any]:
        stamp = now()
        return {
            "id": random.randint(1, 2**31),
            "name": name,
            "owner_name": owner,
            "physical": f"{name}_{branch_id}",
            "created_at": stamp,
            "updated_at": stamp,
        }

    def _default_branch(self) -> dict[str, Any]:
        for branch in self._live_branches():
            if branch["default"]:
                return branch
        raise ApiError(500, "the project has no default branch")

    def _validate_name(self, name: Any) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= 256:
            raise ApiError(400, "branch name must be a string of 1 to 256 characters")

    def _check_name_free(self, name: str, exclude: str | None = None) -> None:
        for branch in self._live_branches():
            if branch["name"] == name and branch["id"] != exclude:
                raise ApiError(409, f"branch with name {name!r} already exists", "BRANCH_EXISTS")

    @staticmethod
    def _validate_annotation(value: Any) -> None:
        if not isinstance(value, dict) or len(value) > MAX_ANNOTATIONS:
            raise ApiError(
                400, f"annotation_value must be an object of at most {MAX_ANNOTATIONS} strings"
            )
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ApiError(400, "annotation_value keys and values must be strings")
        for key, text in value.items():
            if not 1 <= len(key) <= MAX_ANNOTATION_KEY:
                raise ApiError(
                    400, f"annotation_value keys must be 1 to {MAX_ANNOTATION_KEY} characters"
                )
            if len(text) > MAX_ANNOTATION_VALUE:
                raise ApiError(
                    400,
                    f"annotation_value[{key[:40]!r}] is longer than "
                    f"{MAX_ANNOTATION_VALUE} characters",
                )

    def _validate_expiry(self, value: Any, protected: Any) -> datetime | None:
        if value is None:
            return None
        moment = parse_time(value, "expires_at")
        current = datetime.now(UTC)
        if moment <= current:
            raise ApiError(400, "expires_at must be in the future")
        if moment - current > MAX_EXPIRY:
            raise ApiError(400, "expires_at must be at most 30 days in the future")
        if protected:
            raise ApiError(400, "a protected branch cannot have an expiration")
        return moment

    # -- branches: update, delete, default, restore ----------------------------------------

    def update_branch(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("branch")
        if not isinstance(spec, dict):
            raise ApiError(400, "request body must contain a branch object")
        _check_bool(spec, "protected")
        with self._mutation():
            branch = self._branch(branch_id)
            self._check_unlocked(branch_id)
            if "name" in spec:
                self._validate_name(spec["name"])
                self._check_name_free(spec["name"], exclude=branch_id)
            protected = spec.get("protected", branch["protected"])
            if "expires_at" in spec and spec["expires_at"] is not None:
                if branch["default"]:
                    raise ApiError(400, "the default branch cannot have an expiration")
                if self._children(branch_id):
                    raise ApiError(400, "a branch with children cannot have an expiration")
                moment = self._validate_expiry(spec["expires_at"], protected)
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

    def delete_branch(self, branch_id: str) -> dict[str, Any] | None:
        with self._mutation():
            branch = self.store.branches.get(branch_id)
            if branch is None or branch.get("_deleted"):
                return None
            if branch["default"]:
                raise ApiError(422, "cannot delete the project's default branch")
            if branch["protected"]:
                raise ApiError(422, "cannot delete a protected branch")
            if self._children(branch_id):
                raise ApiError(422, "cannot delete a branch that has child branches")
            self._check_unlocked(branch_id)
            op = self._new_operation("delete_timeline", branch_id)
            branch["_deleted"] = True
            branch["updated_at"] = now()
            released = [e["id"] for e in self._branch_endpoints(branch_id)]
            for endpoint_id in released:
                del self.store.endpoints[endpoint_id]
            out = {"branch": self.branch_json(branch), "operations": [self.operation_json(op)]}
        # Only once the delete is on disk: a failed write keeps the endpoints and their hosts.
        if self.hosts is not None:
            for endpoint_id in released:
                self.hosts.release(endpoint_id)
        self._executor.submit(self._run_chain, [(op, self._work_for(op) or _nothing)])
        return out

    def set_default(self, branch_id: str) -> dict[str, Any]:
        with self._mutation():
            branch = self._branch(branch_id)
            self._check_unlocked(branch_id)
            if branch.get("expires_at"):
                raise ApiError(
                    400, "a branch with an expiration cannot be the default; clear it first"
                )
            if branch["current_state"] != "ready":
                raise ApiError(423, "branch is not ready yet", "LOCKED")
            for other in self._live_branches():
                if other["default"]:
                    other["default"] = False
                    other["updated_at"] = now()
            branch["default"] = True
            branch["updated_at"] = now()
            return {"branch": self.branch_json(branch), "operations": []}

    def restore_branch(self, branch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        source_id = body.get("source_branch_id")
        if not isinstance(source_id, str) or not _NAME_PATTERN.match(source_id):
            raise ApiError(400, "source_branch_id is required")
        refuse_point_in_time(body, "source_lsn", "source_timestamp")
        if source_id == branch_id:
            raise ApiError(
                400, "restoring a branch from itself needs source_lsn or source_timestamp"
            )
        preserve = body.get("preserve_under_name")
        with self._mutation():
            branch = self._branch(branch_id)
            self._branch(source_id)
            if branch["protected"]:
                raise ApiError(422, "cannot restore a protected branch")
            if branch["default"] and not preserve and source_id == branch.get("parent_id"):
                raise ApiError(422, "the default branch has no parent to reset from")
            self._check_unlocked(branch_id)
            self._check_unlocked(source_id)
            children = self._children(branch_id)
            if children and not preserve:
                raise ApiError(
                    400, "the branch has children: preserve_under_name is required to restore it"
                )
            if source_id in {c["id"] for c in children} and not preserve:
                raise ApiError(400, "preserve_under_name is required to restore from a child")
            if preserve:
                # Before the operation exists: a refused request must leave nothing pending.
                self._validate_name(preserve)
                self._check_name_free(preserve)
            op = self._new_operation("create_timeline", branch_id)
            op["_source"] = source_id
            from_parent = source_id == branch.get("parent_id")
            if preserve:
                kept = self._new_branch(
                    preserve,
                    parent=self.store.branches.get(branch.get("parent_id") or ""),
                    default=False,
                    init_source=branch.get("init_source", "parent-data"),
                )
                kept.update(current_state="ready", pending_state=None)
                kept["_databases"] = [
                    {**d, "physical": f"{d['name']}_{kept['id']}"} for d in branch["_databases"]
                ]
                kept["_annotation"] = branch.get("_annotation")
                for child in children:
                    child["parent_id"] = kept["id"]
                self.store.branches[kept["id"]] = kept
                op["_preserve"] = [
                    [old["physical"], new["physical"]]
                    for old, new in zip(branch["_databases"], kept["_databases"], strict=True)
                ]
                branch["restored_as"] = kept["id"]
                # As on Neon: the backup becomes the restored branch's parent (neonctl reads the
                # backup from parent_id).
                branch["parent_id"] = kept["id"]
            if from_parent:
                branch["last_reset_at"] = now()
                if branch.get("ttl_interval_seconds"):
                    ttl = timedelta(seconds=branch["ttl_interval_seconds"])
                    branch["expires_at"] = rfc3339(datetime.now(UTC) + ttl)
            branch.update(current_state="resetting", pending_state="ready", state_changed_at=now())
            branch["updated_at"] = now()
            out = {"branch": self.branch_json(branch), "operations": [self.operation_json(op)]}
        self._executor.submit(self._run_chain, [(op, self._work_for(op) or _nothing)])
        return out

    def _children(self, branch_id: str) -> list[dict[str, Any]]:
        return [b for b in self._live_branches() if b.get("parent_id") == branch_id]

    def _pending(self, branch_id: str) -> dict[str, Any] | None:
        for op in self.store.operations.values():
            if op.get("branch_id") == branch_id and op["status"] in PENDING:
                return op
        return None

    def _check_unlocked(self, branch_id: str) -> None:
        op = self._pending(branch_id)
        if op is not None:
            raise ApiError(
                423,
                f"branch {branch_id} has an operation in progress ({op['action']}); "
                "retry when it finishes",
                "LOCKED",
            )

    # -- schema ----------------------------------------------------------------------------

    def schema(self, branch_id: str, db_name: str | None) -> dict[str, Any]:
        with self.store.lock:
            physical = self._physical(self._branch(branch_id), db_name)
        return {"sql": self._dump_schema(physical)}

    def compare_schema(
        self, branch_id: str, db_name: str | None, base_branch_id: str | None
    ) -> dict[str, Any]:
        with self.store.lock:
            branch = self._branch(branch_id)
            base_id = base_branch_id or branch.get("parent_id")
            if not base_id:
                raise ApiError(400, "the branch has no parent: give base_branch_id")
            base = self._branch(base_id)
            target_db = self._physical(branch, db_name)
            base_db = self._physical(base, db_name)
        before = self._dump_schema(base_db).splitlines(keepends=True)
        after = self._dump_schema(target_db).splitlines(keepends=True)
        diff = difflib.unified_diff(before, after, f"a/{db_name}", f"b/{db_name}")
        return {"diff": "".join(diff)}

    def _physical(self, branch: dict[str, Any], db_name: str | None) -> str:
        if not db_name:
            raise ApiError(400, "db_name is required")
        for db in branch["_databases"]:
            if db["name"] == db_name:
                return str(db["physical"])
        raise not_found(f"database {db_name}")

    def _dump_schema(self, physical: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.pg.password, "LC_ALL": "C.UTF-8"}
        cmd = [
            str(bin_dir() / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.pg.port),
            "-U",
            "postgres",
            physical,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise ApiError(500, f"pg_dump failed: {done.stderr.strip()[:200]}")
        # Lines that change from one dump to the next would show up in every diff.
        keep = [
            line
            for line in done.stdout.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped "))
        ]
        return "\n".join(keep).strip() + "\n"

    # -- endpoints -------------------------------------------------------------------------

    def _new_endpoint(
        self, branch_id: str, kind: str, spec: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        spec = spec or {}
        stamp = now()
        endpoint_id = neon_id("ep")
        return {
            "id": endpoint_id,
            "host": (
                self.hosts.allocate(endpoint_id)
                if self.hosts is not None
                else f"127.0.0.1:{self.pg.port}"
            ),
            "branch_id": branch_id,
            "type": kind,
            "current_state": "init",
            "pending_state": "active",
            "region_id": REGION,
            "autoscaling_limit_min_cu": spec.get("autoscaling_limit_min_cu", 0.25),
            "autoscaling_limit_max_cu": spec.get("autoscaling_limit_max_cu", 1),
            "settings": spec.get("settings", {}),
            "pooler_enabled": False,
            "pooler_mode": "transaction",
            "disabled": False,
            "passwordless_access": False,
            "creation_source": "neonflow-local",
            "created_at": stamp,
            "updated_at": stamp,
            "last_active": stamp,
            "proxy_host": "127.0.0.1",
            "suspend_timeout_seconds": spec.get("suspend_timeout_seconds", 0),
            "provisioner": spec.get("provisioner", "k8s-neonvm"),
            "name": spec.get("name"),
        }

    def endpoint_json(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in endpoint.items() if v is not None}
        out["project_id"] = self.project_id
        return out

    def _branch_endpoints(self, branch_id: str) -> list[dict[str, Any]]:
        return [e for e in self.store.endpoints.values() if e["branch_id"] == branch_id]

    def list_endpoints(self, branch_id: str | None = None) -> dict[str, Any]:
        with self.store.lock:
            if branch_id is not None:
                self._branch(branch_id)
                rows = self._branch_endpoints(branch_id)
            else:
                rows = list(self.store.endpoints.values())
            return {"endpoints": [self.endpoint_json(e) for e in rows]}

    def _endpoint(self, endpoint_id: str) -> dict[str, Any]:
        endpoint = self.store.endpoints.get(endpoint_id)
        if endpoint is None:
            raise not_found(f"endpoint {endpoint_id}")
        return endpoint

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        with self.store.lock:
            return {"endpoint": self.endpoint_json(self._endpoint(endpoint_id))}

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("endpoint")
        if not isinstance(spec, dict) or not spec.get("branch_id") or not spec.get("type"):
            raise ApiError(400, "endpoint.branch_id and endpoint.type are required")
        if spec["type"] not in ("read_write", "read_only"):
            raise ApiError(400, "endpoint.type must be read_write or read_only")
        with self._mutation():
            self._branch(spec["branch_id"])
            existing = self._branch_endpoints(spec["branch_id"])
            if spec["type"] == "read_write" and any(e["type"] == "read_write" for e in existing):
                raise ApiError(409, "the branch already has a read_write endpoint")
            endpoint = self._new_endpoint(spec["branch_id"], spec["type"], spec)
            op = self._new_operation("start_compute", spec["branch_id"], endpoint["id"])
            self.store.endpoints[endpoint["id"]] = endpoint
            out = {
                "endpoint": self.endpoint_json(endpoint),
                "operations": [self.operation_json(op)],
            }
        self._executor.submit(self._run_chain, [(op, self._work_for(op) or _nothing)])
        return out

    def endpoint_action(self, endpoint_id: str, action: str) -> dict[str, Any]:
        """``start`` or ``suspend`` a compute (locally, connections work either way)."""
        with self._mutation():
            endpoint = self._endpoint(endpoint_id)
            self._check_unlocked(endpoint["branch_id"])
            kind = "start_compute" if action == "start" else "suspend_compute"
            target = "active" if action == "start" else "idle"
            endpoint["pending_state"] = target
            op = self._new_operation(kind, endpoint["branch_id"], endpoint_id)
            out = {
                "endpoint": self.endpoint_json(endpoint),
                "operations": [self.operation_json(op)],
            }
        self._executor.submit(self._run_chain, [(op, self._work_for(op) or _nothing)])
        return out

    # -- databases, roles, connection strings ----------------------------------------------

    def database_json(self, branch_id: str, db: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": db["id"],
            "branch_id": branch_id,
            "name": db["name"],
            "owner_name": db["owner_name"],
            "created_at": db["created_at"],
            "updated_at": db["updated_at"],
        }

    def list_databases(self, branch_id: str) -> dict[str, Any]:
        with self.store.lock:
            branch = self._branch(branch_id)
            return {"databases": [self.database_json(branch_id, d) for d in branch["_databases"]]}

    def get_database(self, branch_id: str, name: str) -> dict[str, Any]:
        with self.store.lock:
            branch = self._branch(branch_id)
            for db in branch["_databases"]:
                if db["name"] == name:
                    return {"database": self.database_json(branch_id, db)}
        raise not_found(f"database {name}")

    def _roles_json(self, branch_id: str) -> list[dict[str, Any]]:
        return [
            {
                "branch_id": branch_id,
                "name": name,
                "protected": False,
                "authentication_method": "password",
                "created_at": role["created_at"],
                "updated_at": role["created_at"],
            }
            for name, role in self.store.roles.items()
        ]

    def list_roles(self, branch_id: str) -> dict[str, Any]:
        with self.store.lock:
            self._branch(branch_id)
            return {"roles": self._roles_json(branch_id)}

    def get_role(self, branch_id: str, name: str) -> dict[str, Any]:
        with self.store.lock:
            for role in self.list_roles(branch_id)["roles"]:
                if role["name"] == name:
                    return {"role": role}
        raise not_found(f"role {name}")

    def reveal_password(self, branch_id: str, role_name: str) -> dict[str, Any]:
        with self.store.lock:
            self._branch(branch_id)
            role = self.store.roles.get(role_name)
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
        with self.store.lock:
            if endpoint_id:
                endpoint = self._endpoint(endpoint_id)
                if branch_id and endpoint["branch_id"] != branch_id:
                    raise ApiError(400, f"endpoint {endpoint_id} is not on branch {branch_id}")
                branch = self._branch(endpoint["branch_id"])
            else:
                branch = self._branch(branch_id) if branch_id else self._default_branch()
                found = self._read_write_endpoint(branch["id"])
                if found is None:
                    raise ApiError(404, f"branch {branch['id']} has no read_write endpoint")
                endpoint = found
            self._physical(branch, database_name)
            role = self.store.roles.get(role_name)
            if role is None:
                raise not_found(f"role {role_name}")
            host = self._pooler_host(endpoint) if pooled else endpoint["host"]
            return {"uri": self._uri(role_name, role["password"], host, database_name)}

    def _read_write_endpoint(self, branch_id: str) -> dict[str, Any] | None:
        return next(
            (e for e in self._branch_endpoints(branch_id) if e["type"] == "read_write"), None
        )

    @staticmethod
    def _pooler_host(endpoint: dict[str, Any]) -> str:
        # As Neon's clients build it; an IP literal has no endpoint id in it, so locally the
        # pooled host is the direct one (a session, not PgBouncer's transaction mode).
        return str(endpoint["host"]).replace(endpoint["id"], f"{endpoint['id']}-pooler")

    @staticmethod
    def _uri(role: str, password: str, host: str, database: str) -> str:
        """A URI shaped as Neon's and neonctl's (TLS with channel binding)."""
        return (
            f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
            f"@{host}/{quote(database, safe='')}?sslmode=require&channel_binding=require"
        )

    def _connection_details(self, branch: dict[str, Any]) -> dict[str, Any]:
        db = branch["_databases"][0]
        role = self.store.roles[db["owner_name"]]
        endpoints = self._branch_endpoints(branch["id"])
        endpoint = self._read_write_endpoint(branch["id"]) or endpoints[0]
        return {
            "connection_uri": self._uri(
                db["owner_name"], role["password"], endpoint["host"], db["name"]
            ),
            "connection_parameters": {
                "database": db["name"],
                "password": role["password"],
                "role": db["owner_name"],
                "host": endpoint["host"],
                "pooler_host": self._pooler_host(endpoint),
            },
        }

    # -- operations ------------------------------------------------------------------------

    def _new_operation(
        self, action: str, branch_id: str, endpoint_id: str | None = None
    ) -> dict[str, Any]:
        stamp = now()
        op: dict[str, Any] = {
            "id": operation_id(),
            "branch_id": branch_id,
            "endpoint_id": endpoint_id,
            "action": action,
            "status": "scheduling",
            "failures_count": 0,
            "created_at": stamp,
            "updated_at": stamp,
            "total_duration_ms": 0,
        }
        self.store.operations[op["id"]] = op
        return op

    def operation_json(self, op: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in op.items() if not k.startswith("_") and v is not None}
        out["project_id"] = self.project_id
        return out

    def get_operation(
        self, operation_id_: str, hold: float = HOLD_PENDING_SECONDS
    ) -> dict[str, Any]:
        """The operation; one still pending is answered when it ends or after ``hold`` seconds.

        Holding the answer a moment is invisible to clients (they poll as they would on Neon)
        but lets them see the end of an operation when it happens rather than at their next poll.
        """
        with self._changed:
            op = self.store.operations.get(operation_id_)
            if op is None:
                raise not_found(f"operation {operation_id_}")
            if hold > 0:
                self._changed.wait_for(lambda: op["status"] not in PENDING, timeout=hold)
            return {"operation": self.operation_json(op)}

    def list_operations(
        self, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        if limit is not None and not 1 <= limit <= 1000:
            raise ApiError(400, "limit must be between 1 and 1000")
        with self.store.lock:
            rows = sorted(
                self.store.operations.values(),
                key=lambda o: (o["created_at"], o["id"]),
                reverse=True,
            )
            if cursor and not cursor.isdigit():
                raise ApiError(400, "invalid cursor")
            start = int(cursor) if cursor else 0
            page = rows[start : start + limit] if limit else rows[start:]
            # The spec wants a non-empty cursor; past the end it gives an empty page.
            return {
                "operations": [self.operation_json(op) for op in page],
                "pagination": {"cursor": str(start + len(page))},
            }

    def _run_chain(self, chain: list[tuple[dict[str, Any], Callable[[], None]]]) -> None:
        """Run operations in order; a failure fails the rest of the chain."""
        failed: str | None = None
        for op, work in chain:
            started = time.monotonic()
            with self.store.lock:
                op.update(status="running", updated_at=now())
            try:
                if failed is not None:
                    raise RuntimeError(f"an earlier operation failed: {failed}")
                if self._random.random() < self.faults.rate_failed_operation:
                    raise RuntimeError("injected failure (fault mode)")
                work()
                status, error = "finished", None
            except Exception as exc:  # an operation reports its failure, it never kills the worker
                log.exception("operation %s (%s) failed", op["id"], op["action"])
                # The first line: PostgreSQL adds a HINT on the next, the client shows one line.
                status, error = "failed", (str(exc).strip().splitlines() or ["failed"])[0][:500]
                failed = failed or error
                self._undo(op)
            with self.store.lock:
                op.update(
                    status=status,
                    error=error,
                    updated_at=now(),
                    total_duration_ms=int((time.monotonic() - started) * 1000),
                )
                if error:
                    op["failures_count"] += 1
                # The work is done (or undone): memory says so now, the disk when it can.
                self.store.save_or_defer()
                self._changed.notify_all()

    def _undo(self, op: dict[str, Any]) -> None:
        """After a failed operation, leave the branch as a client can use or delete it."""
        try:
            if op["action"] == "create_branch":
                self._abandon(op["branch_id"])
            elif op["action"] == "create_timeline":
                self._restore_failed(op)
        except Exception:  # the sweep (tick) finishes what could not be undone now
            log.exception("could not undo operation %s (%s)", op["id"], op["action"])

    def _abandon(self, branch_id: str) -> None:
        """A branch whose creation failed goes away: no half-made branch stays in ``init``."""
        with self.store.lock:
            branch = self.store.branches.get(branch_id)
            if branch is None:
                return
            branch["_deleted"] = True
            for endpoint_id in [e["id"] for e in self._branch_endpoints(branch_id)]:
                del self.store.endpoints[endpoint_id]
        self._do_delete(branch_id)

    def _restore_failed(self, op: dict[str, Any]) -> None:
        """A failed restore staged its copies aside, so the branch keeps its data: ready again."""
        with self.store.lock:
            branch = self.store.branches.get(op["branch_id"])
            if branch is None:
                return
            kept = self.store.branches.get(branch.get("restored_as") or "")
            if kept is not None and op.get("_preserve") and not op.get("_renamed"):
                # The old data was never moved under the preserved name: forget that branch.
                for child in self._children(kept["id"]):
                    child["parent_id"] = branch["id"]
                del self.store.branches[kept["id"]]
                del branch["restored_as"]
            branch.update(current_state="ready", pending_state=None, state_changed_at=now())

    def tick(self) -> None:
        """Background upkeep: write what a full disk kept in memory, finish deletes that failed,
        delete expired branches. Never raises (it runs on the reaper thread)."""
        try:
            if not self.pg.running() and not self._stop.is_set():
                # It stops itself when its disk fills up (a PANIC); start it once it can.
                log.warning("PostgreSQL is not running; starting it again")
                self.pg.start()
            self.store.flush()
            with self.store.lock:
                leftovers = [
                    b["id"]
                    for b in self.store.branches.values()
                    if b.get("_deleted") and not self._pending(b["id"])
                ]
            for branch_id in leftovers:
                self._do_delete(branch_id)
                self.store.save_or_defer()
            self.reap_expired()
        except Exception:
            log.exception("background upkeep failed; retrying later")

    def next_expiry(self) -> datetime | None:
        """When the next branch expires (the reaper wakes then)."""
        with self.store.lock:
            moments = [
                parse_time(b["expires_at"], "expires_at")
                for b in self._live_branches()
                if b.get("expires_at")
            ]
        return min(moments, default=None)

    def _work_for(self, op: dict[str, Any]) -> Callable[[], None] | None:
        action = op["action"]
        if action == "create_branch":
            return lambda: self._do_create(op["branch_id"])
        if action == "start_compute":
            return lambda: self._do_endpoint(op["endpoint_id"], "active")
        if action == "suspend_compute":
            return lambda: self._do_endpoint(op["endpoint_id"], "idle")
        if action == "delete_timeline":
            return lambda: self._do_delete(op["branch_id"])
        if action == "create_timeline":
            return lambda: self._do_restore(op)
        return None

    # -- the work itself (runs on worker threads) ------------------------------------------

    def _do_create(self, branch_id: str) -> None:
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
            made = self._database_size(dst)
            size += made if made is not None else self._copy_database(src, dst, owner)
            if branch.get("init_source") == "schema-only":
                self._truncate_all(dst)
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

    def _do_endpoint(self, endpoint_id: str, state: str) -> None:
        with self.store.lock:
            endpoint = self.store.endpoints.get(endpoint_id)
            if endpoint is None:
                return
            endpoint.update(current_state=state, pending_state=None, updated_at=now())
            endpoint["started_at" if state == "active" else "suspended_at"] = now()

    def _do_delete(self, branch_id: str) -> None:
        with self.store.lock:
            branch = self.store.branches.get(branch_id)
            physical = [d["physical"] for d in branch["_databases"]] if branch else []
        for name in physical:
            self._sql(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        with self.store.lock:
            self.store.branches.pop(branch_id, None)

    def _do_restore(self, op: dict[str, Any]) -> None:
        with self.store.lock:
            branch = self.store.branches[op["branch_id"]]
            source = self.store.branches[op["_source"]]
            pairs = [
                (s["physical"], d["physical"], d["owner_name"])
                for s, d in zip(source["_databases"], branch["_databases"], strict=True)
            ]
        # Each restored database is marked with the operation, so a run again after a restart
        # (the disk had not caught up) leaves alone what this restore already replaced.
        marker = f"neonflow restore {op['id']}"
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            done = {dst for _, dst, _ in pairs if self._comment(conn, dst) == marker}
        # The copies are made aside first: should one fail (a full disk), the branch still has
        # its data, and nothing was renamed for preserve_under_name yet.
        todo = [(src, dst, owner) for src, dst, owner in pairs if dst not in done]
        staged = [(f"nf_stage_{op['id'][:8]}_{i}", dst) for i, (_, dst, _) in enumerate(todo)]
        try:
            for (src, _, owner), (stage, _) in zip(todo, staged, strict=True):
                self._copy_database(src, stage, owner)
        except BaseException:
            for stage, _ in staged:
                with suppress(psycopg.Error):  # the failure itself is what the operation reports
                    self._sql(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(stage)
                        )
                    )
            raise
        for old, new in op.get("_preserve", []):
            with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
                if not self._exists(conn, old) or self._exists(conn, new):
                    continue  # renamed already, before an interruption
                with self._no_connections(conn, old):
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(old), sql.Identifier(new)
                        )
                    )
                conn.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(new))
                )
        with self.store.lock:
            op["_renamed"] = True
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            for stage, dst in staged:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dst))
                )
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(stage), sql.Identifier(dst)
                    )
                )
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(dst), sql.Literal(marker)
                    )
                )
        with self.store.lock:
            branch.update(current_state="ready", pending_state=None, state_changed_at=now())

    def _copy_database(self, src: str, dst: str, owner: str) -> int:
        """``dst`` becomes a fresh copy of ``src`` (replacing any ``dst``); returns its size.

        Idempotent, so an operation interrupted by a stop can simply run again.
        """
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dst))
            )
            row = conn.execute("SELECT pg_database_size(%s)", (src,)).fetchone()
            size = int(row[0]) if row else 0
            self._check_room(src, 0 if self._clone else size)
            with self._copy_locks[src], self._no_connections(conn, src):
                if self._clone:
                    conn.execute("SET file_copy_method = clone")
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {} OWNER {}").format(
                        sql.Identifier(dst),
                        sql.Identifier(src),
                        sql.SQL(self._strategy(size)),
                        sql.Identifier(owner),
                    )
                )
        return size

    def _check_room(self, src: str, size: int) -> None:
        """Refuse a copy the disk cannot hold: PostgreSQL fails a data file that cannot grow
        with an error, but stops the whole cluster (PANIC) when its WAL cannot grow."""
        free = shutil.disk_usage(self.pg.data_dir).free
        need = size + WAL_HEADROOM_BYTES
        if free < need:
            mb = 1024 * 1024
            raise RuntimeError(
                f"No space left on device: a copy of {src} needs about {need // mb} MB, "
                f"{free // mb} MB are free in {self.pg.data_dir}"
            )

    def _strategy(self, size: int) -> str:
        """FILE_COPY copies files but checkpoints twice; WAL_LOG writes the copy through the WAL.

        Measured here, WAL_LOG wins below a few tens of MB and FILE_COPY above (by far at 1 GB);
        a copy-on-write clone wins at every size.
        """
        return "FILE_COPY" if self._clone or size >= WAL_LOG_BELOW_BYTES else "WAL_LOG"

    @contextmanager
    def _no_connections(
        self, conn: psycopg.Connection[Any], database: str
    ) -> Iterator[psycopg.Connection[Any]]:
        """Refuse new sessions on ``database``, end the current ones, and let them back after.

        A template must have no other sessions, and PostgreSQL would otherwise wait 5 seconds
        before failing; Neon also interrupts sessions when it resets a branch.
        """
        ident = sql.Identifier(database)
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        try:
            deadline = time.monotonic() + 10
            while True:
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchone()
                if not row or row[0] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            yield conn
        finally:
            if self._exists(conn, database):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))

    @staticmethod
    def _comment(conn: psycopg.Connection[Any], database: str) -> str | None:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (database,),
        ).fetchone()
        return row[0] if row else None

    def _database_size(self, database: str) -> int | None:
        """The size of ``database``, or None when there is no such database."""
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def _exists(conn: psycopg.Connection[Any], database: str) -> bool:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        return row is not None

    def _truncate_all(self, database: str) -> None:
        with psycopg.connect(self.pg.dsn(database), autocommit=True) as conn:
            tables = conn.execute(
                "SELECT schemaname, tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            if tables:
                names = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)
                conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))

    def _sql(self, statement: sql.Composed, ignore: str | None = None) -> None:
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                if ignore is None or ignore not in str(exc):
                    raise

    def _probe_clone(self) -> bool:
        """Whether ``file_copy_method = clone`` really clones (a copy-on-write file system).

        PostgreSQL 18 clones with ``copy_file_range()``, which ext4 also accepts as a plain
        in-kernel copy that is slower than ``copy``: so ask the file system itself (FICLONE)
        whether it shares extents, and only then whether PostgreSQL takes the setting.
        """
        if not reflink_supported(self.pg.data_dir.parent):
            return False
        probe = "neonflow_clone_probe"
        try:
            with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(probe)))
                conn.execute("SET file_copy_method = clone")
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY").format(
                        sql.Identifier(probe)
                    )
                )
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(probe)))
            return True
        except psycopg.Error:
            return False


_FICLONE = 0x40049409  # linux/fs.h: share the source's extents (a reflink)


def reflink_supported(folder: Path) -> bool:
    """Whether the file system of ``folder`` can clone a file (btrfs, XFS with reflink, …)."""
    try:
        with (
            tempfile.NamedTemporaryFile(dir=folder) as src,
            tempfile.NamedTemporaryFile(dir=folder) as dst,
        ):
            src.write(b"x" * 4096)
            src.flush()
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        return True
    except OSError:
        return False


def _nothing() -> None:
    return None


def _check_bool(spec: dict[str, Any], field: str) -> None:
    if field in spec and not isinstance(spec[field], bool):
        raise ApiError(400, f"{field} must be a boolean")
