"""What the branch use cases return: one dataclass per use case; ``to_json()`` is the
``--json`` document."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RevisionStatus = Literal["read", "unknown", "idle", "no_compute", "not_read"]
"""Whether a branch's revision was read: ``read``; ``unknown`` (the connection failed or timed
out); not read because ``idle`` (a suspended compute on Neon cloud), ``no_compute``, or
``not_read`` (not asked for)."""


@dataclass
class Result:
    """Base of the use cases' results: ``to_json()`` gives the ``--json`` document."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StartResult(Result):
    """``start``: the branch, whether it was created, its URL and revision."""

    branch: str
    branch_id: str
    parent: str
    created: bool
    database_url: str
    app_url: str | None  # read back from the env file, its driver kept; None: not written
    env_file: str
    env_var: str
    revision: list[str]
    expires_at: str | None
    renamed_from: str | None = None


@dataclass
class SwitchResult(Result):
    """``switch``: the branch the app's env file now points at."""

    branch: str
    branch_id: str
    database_url: str
    env_file: str


@dataclass
class ResetResult(Result):
    """``reset``: the branch, reset from its parent and migrated again."""

    branch: str
    branch_id: str
    parent: str
    revision: list[str]


@dataclass
class DiffResult(Result):
    """``diff``: the branch's schema against its parent's, as a unified diff."""

    branch: str
    base: str
    database: str
    diff: str


@dataclass
class DeleteResult(Result):
    """``delete``: deleted, or already gone; where the app points now."""

    branch: str
    branch_id: str | None
    deleted: bool
    already_gone: bool
    app_repointed_to: str | None = None


@dataclass
class PromoteResult(Result):
    """``promote``: how the parent got the branch's migrations, and the timings."""

    branch: str
    parent: str
    mode: str
    parent_revision_before: list[str] = field(default_factory=list)
    parent_revision_after: list[str] = field(default_factory=list)
    rehearsal_seconds: float | None = None
    migrate_seconds: float | None = None
    deleted: bool = False
    app_repointed: bool = False


@dataclass
class PruneResult(Result):
    """``prune``: the branches deleted (or that would be), and those kept with why."""

    dry_run: bool
    deleted: list[str]
    kept: list[dict[str, str]]


@dataclass
class BranchRow(Result):
    """One branch of ``list``: names, state, dates, revision, whether the app points at it."""

    name: str
    id: str
    parent: str | None
    state: str
    created_at: str
    expires_at: str | None
    default: bool
    protected: bool
    neonflow: bool
    revision: list[str] | None
    current: bool
    revision_status: RevisionStatus = "read"


@dataclass
class StatusResult(Result):
    """``status``: where the app points, that branch's revision against head."""

    env_file: str
    database_url: str | None
    branch: str | None
    branch_id: str | None
    parent: str | None
    expires_at: str | None
    revision: list[str] | None
    head: list[str]
    at_head: bool | None
    problem: str | None = None  # why the head could not be read (a broken revision file)
    env_vars: str = "DATABASE_URL"  # the app's variable(s), as a person reads them
    revision_status: RevisionStatus = "read"
