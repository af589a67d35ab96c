"""The Neon API v2 client: one ``httpx.Client``, typed answers, safe retries, operation waits.

The same code talks to Neon cloud and to the local Neon; only ``api_host`` differs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from neonflow import errors, polling
from neonflow.neon.models import (
    AnnotationData,
    Branch,
    BranchWithOperations,
    CreatedBranch,
    Database,
    Endpoint,
    EndpointWithOperations,
    Operation,
    Project,
    Role,
)
from neonflow.neon.transport import Json, OutcomeUnknown, Transport, seg
from neonflow.times import rfc3339

__all__ = ["UNSET", "NeonClient", "endpoint_uri"]


class _Unset(enum.Enum):
    UNSET = "UNSET"


UNSET = _Unset.UNSET
"""Default of ``update_branch(expires_at=...)``: leave the value alone (``None`` clears it)."""

MAX_POLL_INTERVAL = 2.0
MAX_PAGE_SIZE = 10_000  # Neon's bound for the branches ``limit``


class NeonClient(Transport):
    """Neon API v2 for one project, on a single ``httpx.Client``.

    Retries 423/429/503 and connect errors with jittered backoff (``Retry-After`` honoured), and
    read errors for GET/HEAD/DELETE only; maps error answers to :mod:`neonflow.errors`.
    ``timeout`` bounds each call, its retries included: a host that accepts and never answers
    costs ``timeout`` seconds, not ``timeout`` per try.
    """

    # -- projects ---------------------------------------------------------------------------------

    def list_projects(self) -> list[Project]:
        """Every project the key can see (all pages)."""
        projects: list[Project] = []
        cursor: str | None = None
        while True:
            data = self._json("GET", "/projects", params={"limit": 400, "cursor": cursor})
            page = [self._parse(Project, p) for p in data.get("projects") or []]
            projects += page
            next_cursor = (data.get("pagination") or {}).get("cursor")
            if not page or not next_cursor or next_cursor == cursor:
                return projects
            cursor = next_cursor

    def get_project(self) -> Project:
        """This client's project."""
        return self._parse(Project, self._json("GET", self._project).get("project"))

    # -- branches ---------------------------------------------------------------------------------

    def list_branches(
        self,
        search: str | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int | None = None,
    ) -> list[Branch]:
        """Branches with their annotations, all pages; ``limit`` caps the count (and page size)."""
        branches: list[Branch] = []
        for branch in self._iter_branches(search, sort_by, sort_order, limit):
            branches.append(branch)
            if limit is not None and len(branches) >= limit:
                break
        return branches

    def find_branch(self, name_or_id: str) -> Branch | None:
        """The branch whose id or name is exactly ``name_or_id``, or None."""
        return next(
            (b for b in self._iter_branches(name_or_id) if name_or_id in (b.id, b.name)), None
        )

    def get_branch(self, branch_id: str) -> Branch:
        """One branch by id, with its annotations."""
        data = self._json("GET", self._branch_path(branch_id))
        return self._branch(data.get("branch"), data.get("annotation"))

    def create_branch(
        self,
        name: str,
        *,
        parent_id: str | None = None,
        annotations: dict[str, str] | None = None,
        expires_at: datetime | None = None,
        protected: bool | None = None,
        init_source: str | None = None,
        endpoint: bool = True,
    ) -> CreatedBranch:
        """Create a branch (with a read_write endpoint unless ``endpoint=False``).

        If the connection breaks after the request may have been applied, the branch is looked up
        by name first and returned if it exists; only otherwise is the request sent again.
        """
        spec = _without_none(
            name=name,
            parent_id=parent_id,
            expires_at=rfc3339(expires_at) if expires_at is not None else None,
            protected=protected,
            init_source=init_source,
        )
        body: Json = {"branch": spec}
        if endpoint:
            body["endpoints"] = [{"type": "read_write"}]
        if annotations:
            body["annotation_value"] = dict(annotations)
        attempt = 0
        with self._budget():
            while True:
                created = self._try_create(name, body, attempt)
                if isinstance(created, CreatedBranch):
                    if annotations and not created.branch.annotations:
                        created.branch.annotations = dict(annotations)
                    return created
                attempt = created

    def _try_create(self, name: str, body: Json, attempt: int) -> CreatedBranch | int:
        """One create (with its own retries): the branch, or the next attempt's number."""
        try:
            data = self._json("POST", f"{self._project}/branches", json=body, attempt=attempt)
        except OutcomeUnknown as exc:
            found = self._recover_created(name)
            if found is not None:
                return found
            delay = self._backoff(exc.attempt)
            if exc.attempt >= self.max_retries or not self._time_left(delay):
                raise errors.NetworkError(
                    f"creating branch {name!r}: no answer from the Neon API at {self._host} "
                    f"after {exc.attempt + 1} attempts; the branch was not created"
                ) from exc
            self._sleep(delay)
            return exc.attempt + 1
        return self._parse(CreatedBranch, data)

    def update_branch(
        self,
        branch_id: str,
        *,
        name: str | None = None,
        protected: bool | None = None,
        expires_at: datetime | None | _Unset = UNSET,
    ) -> BranchWithOperations:
        """Rename, (un)protect, or set the expiration (``expires_at=None`` removes it)."""
        spec = _without_none(name=name, protected=protected)
        if not isinstance(expires_at, _Unset):
            spec["expires_at"] = rfc3339(expires_at) if expires_at is not None else None
        data = self._json("PATCH", self._branch_path(branch_id), json={"branch": spec})
        return self._parse(BranchWithOperations, data)

    def delete_branch(self, branch_id: str) -> list[Operation]:
        """Delete a branch; one already gone (204 or 404) gives ``[]``."""
        try:
            response = self._request("DELETE", self._branch_path(branch_id))
        except errors.NotFoundError:
            return []
        if response.status_code == 204 or not response.content:
            return []
        return self._operations(self._decode(response))

    def set_default(self, branch_id: str) -> BranchWithOperations:
        """Make the branch the project's default branch."""
        data = self._json("POST", f"{self._branch_path(branch_id)}/set_as_default")
        return self._parse(BranchWithOperations, data)

    def restore_branch(
        self, branch_id: str, source_branch_id: str, *, preserve_under_name: str | None = None
    ) -> BranchWithOperations:
        """Restore a branch to the head of ``source_branch_id`` (reset from parent, promote)."""
        body = _without_none(
            source_branch_id=source_branch_id, preserve_under_name=preserve_under_name
        )
        data = self._json("POST", f"{self._branch_path(branch_id)}/restore", json=body)
        return self._parse(BranchWithOperations, data)

    def get_schema(self, branch_id: str, db_name: str) -> str:
        """The database's schema as SQL."""
        params = {"db_name": db_name, "format": "sql"}
        data = self._json("GET", f"{self._branch_path(branch_id)}/schema", params=params)
        return str(data.get("sql") or "")

    def compare_schema(
        self, branch_id: str, db_name: str, base_branch_id: str | None = None
    ) -> str:
        """Unified diff of the schema against ``base_branch_id`` (default: the parent)."""
        params = {"db_name": db_name, "base_branch_id": base_branch_id}
        data = self._json("GET", f"{self._branch_path(branch_id)}/compare_schema", params=params)
        return str(data.get("diff") or "")

    # -- endpoints, databases, roles, connection strings -------------------------------------------

    def list_endpoints(self, branch_id: str | None = None) -> list[Endpoint]:
        """The branch's endpoints, or the project's when ``branch_id`` is None."""
        path = (
            f"{self._branch_path(branch_id)}/endpoints"
            if branch_id
            else f"{self._project}/endpoints"
        )
        return [self._parse(Endpoint, e) for e in self._json("GET", path).get("endpoints") or []]

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        data = self._json("GET", f"{self._project}/endpoints/{seg(endpoint_id)}")
        return self._parse(Endpoint, data.get("endpoint"))

    def start_endpoint(self, endpoint_id: str) -> EndpointWithOperations:
        """Start an idle compute; wait for the returned operations before connecting."""
        data = self._json("POST", f"{self._project}/endpoints/{seg(endpoint_id)}/start")
        return self._parse(EndpointWithOperations, data)

    def suspend_endpoint(self, endpoint_id: str) -> EndpointWithOperations:
        """Suspend a compute (scale it to zero); a connection to it starts it again."""
        data = self._json("POST", f"{self._project}/endpoints/{seg(endpoint_id)}/suspend")
        return self._parse(EndpointWithOperations, data)

    def list_databases(self, branch_id: str) -> list[Database]:
        data = self._json("GET", f"{self._branch_path(branch_id)}/databases")
        return [self._parse(Database, d) for d in data.get("databases") or []]

    def list_roles(self, branch_id: str) -> list[Role]:
        data = self._json("GET", f"{self._branch_path(branch_id)}/roles")
        return [self._parse(Role, r) for r in data.get("roles") or []]

    def reveal_password(self, branch_id: str, role_name: str) -> str:
        """The role's password (412 ConflictError when the project doesn't store passwords)."""
        path = f"{self._branch_path(branch_id)}/roles/{seg(role_name)}/reveal_password"
        return self._string(self._json("GET", path), "password")

    def connection_uri(
        self, branch_id: str, database_name: str, role_name: str, pooled: bool = False
    ) -> str:
        """A ``postgresql://`` URI for the branch's read_write endpoint."""
        params = {
            "branch_id": branch_id,
            "database_name": database_name,
            "role_name": role_name,
            "pooled": "true" if pooled else "false",
        }
        return self._string(
            self._json("GET", f"{self._project}/connection_uri", params=params), "uri"
        )

    # -- operations -------------------------------------------------------------------------------

    def get_operation(self, operation_id: str) -> Operation:
        data = self._json("GET", f"{self._project}/operations/{seg(operation_id)}")
        return self._parse(Operation, data.get("operation"))

    def wait_for_operations(
        self, operations: Iterable[Operation], timeout: float = 300, poll_interval: float = 0.05
    ) -> list[Operation]:
        """Poll until every operation is finished or skipped; return their final states.

        Raises :class:`~neonflow.errors.OperationFailedError` when one fails, and
        :class:`~neonflow.errors.NeonAPIError` naming the operation still pending after ``timeout``.
        """
        ops = list(operations)
        for op in ops:
            _check_operation(op)
        pending = [i for i, op in enumerate(ops) if not op.done]

        def finished() -> list[Operation] | None:
            # Poll in order and stop at the first one still running: Neon runs them in sequence.
            while pending:
                ops[pending[0]] = op = self.get_operation(ops[pending[0]].id)
                _check_operation(op)
                if not op.done:
                    return None
                pending.pop(0)
            return ops

        if not pending:
            return ops
        done = polling.until(
            finished,
            timeout,
            interval=poll_interval,
            max_interval=MAX_POLL_INTERVAL,
            wait_first=True,
            sleep=self._sleep,
        )
        if done is None:
            op = ops[pending[0]]
            raise errors.NeonAPIError(
                f"timed out after {timeout:g} s waiting for operation {op.id} "
                f"({op.action}, still {op.status})"
            )
        return done

    # -- internals --------------------------------------------------------------------------------

    def _branch_path(self, branch_id: str) -> str:
        return f"{self._project}/branches/{seg(branch_id)}"

    def _iter_branches(
        self,
        search: str | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int | None = None,
    ) -> Iterator[Branch]:
        params: Json = {"search": search, "sort_by": sort_by, "sort_order": sort_order}
        if limit is not None:
            params["limit"] = min(limit, MAX_PAGE_SIZE)
        cursor: str | None = None
        while True:
            data = self._json(
                "GET", f"{self._project}/branches", params={**params, "cursor": cursor}
            )
            page = data.get("branches") or []
            notes = data.get("annotations") or {}
            for raw in page:
                yield self._branch(raw, notes.get(raw.get("id")) if isinstance(raw, dict) else None)
            # Neon may send a `next` even on the last page: an empty page ends the list too.
            next_cursor = (data.get("pagination") or {}).get("next")
            if not page or not next_cursor or next_cursor == cursor:
                return
            cursor = next_cursor

    def _branch(self, raw: Any, annotation: Any) -> Branch:
        branch = self._parse(Branch, raw)
        if annotation:
            branch.annotations = self._parse(AnnotationData, annotation).value
        return branch

    def _recover_created(self, name: str) -> CreatedBranch | None:
        """After a create whose answer was lost: the branch by exact name, as if just created."""
        branch = next((b for b in self._iter_branches(name) if b.name == name), None)
        if branch is None:
            return None
        endpoints = self.list_endpoints(branch.id)
        settled = (
            branch.current_state == "ready"
            and branch.pending_state is None
            and all(e.pending_state is None and e.current_state != "init" for e in endpoints)
        )
        operations: list[Operation] = []
        if not settled:
            data = self._json("GET", f"{self._project}/operations", params={"limit": 50})
            operations = [op for op in self._operations(data) if op.branch_id == branch.id]
        return CreatedBranch(branch=branch, endpoints=endpoints, operations=operations)

    def _operations(self, data: Json) -> list[Operation]:
        return [self._parse(Operation, op) for op in data.get("operations") or []]


def endpoint_uri(
    endpoint: Endpoint, database: str, role: str, password: str, pooled: bool = False
) -> str:
    """The URI ``connection_uri`` answers for this endpoint, built here as neonctl builds it
    (no request): the endpoint's host (its pooler's with ``pooled``), TLS with channel binding."""
    host = endpoint.pooler_host if pooled else endpoint.host
    return (
        f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
        f"@{host}/{quote(database, safe='')}?sslmode=require&channel_binding=require"
    )


def _check_operation(op: Operation) -> None:
    if op.failed:
        raise errors.OperationFailedError(
            f"operation {op.id} ({op.action}) {op.status}: {op.error or 'no error given'}",
            code=op.status,
        )


def _without_none(**values: Any) -> Json:
    return {k: v for k, v in values.items() if v is not None}
