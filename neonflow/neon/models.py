"""Typed models of the Neon API v2 objects neonflow uses.

Lenient to fields they don't name (Neon adds fields over time), strict about the ones they do.
State and action names stay plain strings: Neon's lists of them grow between spec versions.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "OPERATION_FAILED",
    "OPERATION_SUCCEEDED",
    "Branch",
    "BranchWithOperations",
    "ConnectionDetails",
    "ConnectionParameters",
    "ConnectionURI",
    "CreatedBranch",
    "Database",
    "Endpoint",
    "EndpointWithOperations",
    "Operation",
    "Project",
    "Role",
]

OPERATION_SUCCEEDED = frozenset({"finished", "skipped"})
OPERATION_FAILED = frozenset({"failed", "error", "cancelled"})


class NeonModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Branch(NeonModel):
    """A branch; ``annotations`` holds its annotation values when the response carried them."""

    id: str
    project_id: str
    name: str
    parent_id: str | None = None
    parent_lsn: str | None = None
    parent_timestamp: str | None = None
    default: bool = False
    protected: bool = False
    current_state: str
    pending_state: str | None = None
    state_changed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    ttl_interval_seconds: int | None = None
    last_reset_at: datetime | None = None
    init_source: str | None = None
    creation_source: str | None = None
    logical_size: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class Endpoint(NeonModel):
    """A compute endpoint (``type`` is ``read_write`` or ``read_only``)."""

    id: str
    project_id: str | None = None
    branch_id: str
    host: str
    type: str
    current_state: str
    pending_state: str | None = None
    name: str | None = None
    region_id: str | None = None
    disabled: bool = False
    pooler_enabled: bool = False
    suspend_timeout_seconds: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def pooler_host(self) -> str:
        """The pooled host: ``-pooler`` after the endpoint id, as Neon names it."""
        return self.host.replace(self.id, f"{self.id}-pooler", 1)


class Operation(NeonModel):
    """An asynchronous Neon operation started by a mutation."""

    id: str
    project_id: str | None = None
    branch_id: str | None = None
    endpoint_id: str | None = None
    action: str
    status: str
    error: str | None = None
    failures_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    total_duration_ms: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.status in OPERATION_SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.status in OPERATION_FAILED

    @property
    def done(self) -> bool:
        return self.succeeded or self.failed


class Database(NeonModel):
    id: int | None = None
    branch_id: str
    name: str
    owner_name: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Role(NeonModel):
    branch_id: str
    name: str
    password: str | None = Field(default=None, repr=False)
    protected: bool = False
    authentication_method: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ConnectionParameters(NeonModel):
    database: str
    role: str
    password: str = Field(repr=False)
    host: str
    pooler_host: str


class ConnectionDetails(NeonModel):
    """One entry of a created branch's ``connection_uris``."""

    connection_uri: str = Field(repr=False)
    connection_parameters: ConnectionParameters


ConnectionURI = ConnectionDetails
"""Alias: the spec names the object ``ConnectionDetails``; responses call it ``connection_uris``."""


class CreatedBranch(NeonModel):
    """The answer to a branch creation: the branch and what was created with it."""

    branch: Branch
    endpoints: list[Endpoint] = Field(default_factory=list)
    operations: list[Operation] = Field(default_factory=list)
    roles: list[Role] = Field(default_factory=list)
    databases: list[Database] = Field(default_factory=list)
    # Neon omits it when the parent has more than one role or database.
    connection_uris: list[ConnectionDetails] | None = None

    @property
    def read_write_endpoint(self) -> Endpoint | None:
        return next((e for e in self.endpoints if e.type == "read_write"), None)


class BranchWithOperations(NeonModel):
    branch: Branch
    operations: list[Operation] = Field(default_factory=list)


class EndpointWithOperations(NeonModel):
    endpoint: Endpoint
    operations: list[Operation] = Field(default_factory=list)


class Project(NeonModel):
    id: str
    name: str
    region_id: str | None = None
    pg_version: int | None = None
    store_passwords: bool | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AnnotationData(NeonModel):
    """The ``annotations[branch_id]`` of a list response (``annotation`` of a get)."""

    value: dict[str, str] = Field(default_factory=dict)
