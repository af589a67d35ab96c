"""The branch lifecycle: start, switch, reset, diff, delete, promote, prune, list, status.

Each use case returns a result object; nothing here prints. ``progress`` receives one-line
messages for people (the CLI sends them to stderr).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from neonflow import envfile, polling
from neonflow.config import Settings, parse_duration
from neonflow.errors import (
    ConfigError,
    ConflictError,
    EnvPyError,
    MigrationError,
    NeonAPIError,
    NeonflowError,
    NetworkError,
    NotFoundError,
    RefusedError,
    UsageError,
    WrongTargetError,
)
from neonflow.times import rfc3339_or_none
from neonflow.urls import same_database
from neonflow.workflow import names

if TYPE_CHECKING:
    from neonflow.migrations import Project
    from neonflow.migrations.history import History
    from neonflow.migrations.runner import Runner
    from neonflow.neon import Branch, CreatedBranch, Endpoint, NeonClient

Progress = Callable[[str], None]
Expiry = Literal["default", "throwaway", "none"]
RevisionStatus = Literal["read", "unknown", "idle", "no_compute", "not_read"]
"""Whether a branch's revision was read: ``read``; ``unknown`` (the connection failed or timed
out); not read because ``idle`` (a suspended compute on Neon cloud), ``no_compute``, or
``not_read`` (not asked for)."""

# Annotations neonflow puts on the branches it creates (Neon keeps them as strings).
A_CREATED_BY = "neonflow"
A_GIT_BRANCH = "neonflow-git-branch"
A_GIT_COMMIT = "neonflow-git-commit"
A_USER = "neonflow-user"
A_PURPOSE = "neonflow-purpose"
READY_TIMEOUT = 300.0
READ_TIMEOUT = 5.0  # seconds to connect to a branch to read its revision, and for the query
MAX_READERS = 8  # connections a listing opens at once


def _quiet(message: str) -> None:
    return None


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


class Branches:
    """The branch use cases over one Neon client and the project's settings."""

    def __init__(self, settings: Settings, client: NeonClient, progress: Progress = _quiet) -> None:
        self.settings = settings
        self.client = client
        self.progress = progress
        self._project: Project | None = None

    @property
    def project(self) -> Project:
        """The Alembic project (its ini must exist: a ConfigError otherwise)."""
        if self._project is None:
            from neonflow.migrations import Project

            self._project = Project.from_settings(self.settings)
        return self._project

    def runner(self) -> Runner:
        """An Alembic process for one target, warming up at once (see migrations.runner)."""
        from neonflow.migrations.runner import Runner

        return Runner(self.project)

    def preflight(self) -> None:
        """Refuse, before any branch exists, what the migrations cannot do: a revision file
        that does not compile, several heads."""
        heads = self.project.preflight()
        if heads is not None and len(heads) > 1:
            from neonflow.migrations import multiple_heads

            raise multiple_heads(heads)

    def history(self) -> History:
        """The revision history, read by an Alembic process of its own (offline)."""
        with self.runner() as offline:
            offline.offline()
            return offline.history()

    def migrate(
        self, runner: Runner, url: str, intended: str, **session_settings: str
    ) -> tuple[str, ...]:
        """Upgrade the database at ``url`` to head; verified on neonflow's own connection."""
        runner.target(url, intended, **session_settings)
        return runner.upgrade("heads").after

    # -- lookups ---------------------------------------------------------------------------

    def full_name(self, name: str | None) -> tuple[str, str | None]:
        """The Neon name for ``name`` (None: the git branch): ``[branch] prefix`` + the name as
        typed. The second item is always None (names are no longer rewritten)."""
        given = names.git_branch(self.settings.root) if name is None else name
        if given is None:
            raise UsageError("give a branch name (the current folder is not on a git branch)")
        names.check_name(given)
        full = names.check_name(self.settings.branch.prefix + given)
        if full.startswith(("br-", "ep-")):
            raise UsageError(
                f"{full!r} would read as a Neon id: choose a name not starting with br- or ep-"
            )
        return full, None

    def _lookup(self, name: str) -> str:
        """A name as given on the command line, as neonflow would have created it."""
        if name.startswith("br-"):
            return name
        try:
            return self.full_name(name)[0]
        except UsageError:
            return name

    def find(
        self, name: str, branches: list[Branch] | None = None, literal: bool = False
    ) -> Branch | None:
        """By id, else by the name neonflow would give it (with the prefix), else as given.

        ``literal`` names (the configured parent, ``--base``) match by id or exact name only:
        ``main`` must never resolve to a feature branch called ``preview/main``.
        """
        rows = branches if branches is not None else self.client.list_branches()
        candidates = [(name, "id"), (name, "name")]
        if not literal:
            candidates.insert(1, (self._lookup(name), "name"))
        for wanted, attribute in candidates:
            for branch in rows:
                if getattr(branch, attribute) == wanted:
                    return branch
        return None

    def require(
        self, name: str, branches: list[Branch] | None = None, literal: bool = False
    ) -> Branch:
        """Like :meth:`find`, but a NotFoundError when there is no such branch."""
        branch = self.find(name, branches, literal)
        if branch is None:
            raise NotFoundError(
                f"branch {name!r} not found; see `neonflow branch list` for the branches there are"
            )
        return branch

    @contextmanager
    def unchanged(self, *watched: Branch) -> Iterator[None]:
        """Work on the ``watched`` branches; if that fails because one was deleted or reset
        meanwhile (another command won a race), say so with the not-found code, rather than
        pass on the database's "does not exist" or "terminating connection"."""
        try:
            yield
        except (NetworkError, MigrationError, NeonAPIError) as exc:
            for branch in watched:
                change = self._change(branch)
                if change:
                    raise NotFoundError(
                        f"branch {branch.name!r} was {change} meanwhile, by another command "
                        f"({_first_line(exc)}); see `neonflow branch list` and run this again"
                    ) from None
            raise

    def _change(self, branch: Branch) -> str | None:
        """How ``branch`` changed since it was read ("deleted", "reset"), or None."""
        try:
            now = self.client.get_branch(branch.id)
        except NotFoundError:
            return "deleted"
        except NeonflowError:
            return None  # cannot tell: the original error stands
        if now.last_reset_at != branch.last_reset_at or now.current_state == "resetting":
            return "reset"
        return None

    def parent_of(self, branch: Branch, branches: list[Branch]) -> Branch:
        """The branch's parent among ``branches``; a RefusedError for a root branch."""
        for candidate in branches:
            if candidate.id == branch.parent_id:
                return candidate
        raise RefusedError(f"branch {branch.name!r} has no parent branch")

    def url(self, branch: Branch, pooled: bool = False) -> str:
        """The branch's URI for ``[neon] database`` and ``role``."""
        neon = self.settings.neon
        return self.client.connection_uri(branch.id, neon.database, neon.role, pooled=pooled)

    def url_or_none(self, branch: Branch) -> str | None:
        """The branch's URL, or None when it has no compute (or not our database) to reach."""
        try:
            return self.url(branch)
        except NotFoundError:
            return None

    def app_url(self) -> str | None:
        """The URL the app's env file points at (through ``[app.env]`` when set)."""
        variables = self.settings.app.variables
        return variables.url(envfile.read_vars(self.settings.env_file, variables.names))

    def point_app(self, url: str) -> None:
        """Write the app's variables for ``url``, keeping the driver its URL variable names."""
        variables = self.settings.app.variables
        try:
            driver = self.project.url_driver()
        except ConfigError:
            driver = None
        envfile.set_vars(self.settings.env_file, variables.values(url, driver), warn=self.progress)

    def wait_ready(self, branch: Branch) -> Branch:
        """The branch, read again until it is ``ready``."""
        if branch.current_state == "ready":
            return branch

        def read_again() -> Branch | None:
            again = self.client.get_branch(branch.id)
            return again if again.current_state == "ready" else None

        ready = polling.until(read_again, READY_TIMEOUT, wait_first=True)
        if ready is None:
            raise NeonAPIError(f"branch {branch.name!r} did not become ready")
        return ready

    def _discard(self, branch: Branch) -> None:
        """Delete a branch this command created and cannot use; best effort."""
        self.progress(f"deleting branch {branch.name}: it did not become ready")
        try:
            self.client.delete_branch(branch.id)
        except NeonflowError as exc:
            self.progress(f"could not delete {branch.name} ({exc}); `neonflow branch delete` it")

    @staticmethod
    def _refuse_parent(branch: Branch, branches: list[Branch], verb: str) -> None:
        children = [b.name for b in branches if b.parent_id == branch.id]
        if children:
            raise RefusedError(
                f"refusing to {verb} {branch.name!r}: it has child branches ({', '.join(children)})"
            )

    def _refuse_precious(self, branch: Branch, verb: str) -> None:
        if branch.default:
            raise RefusedError(f"refusing to {verb} {branch.name!r}: it is the default branch")
        if branch.protected:
            raise RefusedError(f"refusing to {verb} {branch.name!r}: it is a protected branch")

    # -- start -----------------------------------------------------------------------------

    def start(
        self,
        name: str | None,
        parent: str | None = None,
        *,
        migrate: bool = True,
        write_env: bool = True,
        purpose: str | None = None,
        expiry: Expiry = "default",
        schema_only: bool = False,
    ) -> StartResult:
        """Get or create the branch, point the app at it (``write_env``), migrate it to head.

        A new branch is tagged with ``purpose`` (e.g. ``"pytest"``: a throw-away branch) and
        expires as :meth:`expires_at` says (``expiry="default"``, or ``"throwaway"``: by itself
        should its process die) or never (``"none"``: Neon branches from no expiring branch).
        ``schema_only`` copies the parent's schema and no data.
        """
        full, renamed_from = self.full_name(name)
        # What would fail after the branch exists, checked before it does.
        if write_env:
            envfile.check_writable(self.settings.env_file)
        if migrate:
            self.preflight()
        options = (parent or self.settings.neon.parent, write_env, purpose, expiry, schema_only)
        if not migrate:
            return self._start(full, renamed_from, None, *options)
        # Alembic and what env.py imports load in their own process while we wait on Neon.
        with self.runner() as runner:
            return self._start(full, renamed_from, runner, *options)

    def _start(
        self,
        full: str,
        renamed_from: str | None,
        runner: Runner | None,
        parent_name: str,
        write_env: bool,
        purpose: str | None,
        expiry: Expiry,
        schema_only: bool,
    ) -> StartResult:
        branches = self.client.list_branches()
        parent = self.require(parent_name, branches, literal=True)
        branch = self.find(full, branches)
        created: CreatedBranch | None = None
        if branch is not None and (branch.default or branch.protected):
            raise RefusedError(
                f"refusing to start on {branch.name!r}: it is the default or a protected branch; "
                f"`neonflow branch switch {branch.name}` points the app at it, and "
                "`neonflow branch promote` ships migrations to it"
            )
        if branch is not None:
            self.progress(f"reusing branch {full} ({branch.id})")
        else:
            self.progress(f"creating branch {full} from {parent.name}")
            try:
                created = self._create(full, parent, purpose, expiry, schema_only)
                branch = created.branch
            except ConflictError:
                # Another `start` created it between our look and our create: reuse theirs.
                branch = self.client.find_branch(full)
                if branch is None:
                    raise
                self.progress(f"reusing branch {full} ({branch.id}), created meanwhile")
            else:
                # Once its operations finished, a new branch is ready: no need to read it again.
                try:
                    self.client.wait_for_operations(created.operations)
                except BaseException:
                    # It never became usable (failed, timed out, Ctrl-C): leave no orphan.
                    self._discard(created.branch)
                    raise
        if created is None:
            branch = self.wait_ready(branch)
        with self.unchanged(branch):
            url = self.created_url(created) or self.url(branch)
            if write_env:
                self.point_app(url)
                label = self.settings.app.variables.label
                self.progress(f"{label} in {self.settings.app.env_file} -> {full}")
            try:
                if runner is None:
                    revision = tuple(_revision(url) or ())
                else:
                    self.progress("running alembic upgrade head")
                    revision = self.migrate(runner, url, f"branch {full}")
            except MigrationError as exc:
                if purpose is not None:  # the caller's branch to keep or delete
                    raise
                raise type(exc)(
                    f"{exc}; branch {full} is kept and the app points at it: fix it "
                    "and run `neonflow branch start` again",
                    revision=exc.revision,
                ) from None
            except (EnvPyError, WrongTargetError) as exc:
                raise type(exc)(
                    f"{exc}; branch {full} is kept (not migrated) and the app points at it: "
                    "fix it and run `neonflow branch start` again"
                ) from None
        return StartResult(
            branch=full,
            branch_id=branch.id,
            parent=parent.name,
            created=created is not None,
            database_url=url,
            env_file=str(self.settings.env_file),
            env_var=self.settings.app.variables.label,
            revision=list(revision),
            expires_at=rfc3339_or_none(branch.expires_at),
            renamed_from=renamed_from,
        )

    def annotations(self, purpose: str | None = None) -> dict[str, str]:
        """What neonflow tags its branches with: itself, the git branch and commit, the user."""
        root = self.settings.root
        tags = {A_CREATED_BY: "true", A_USER: names.user_name()}
        # In a pull request's CI job the checkout is detached; GitHub names the branch.
        git_branch = os.environ.get("GITHUB_HEAD_REF") or names.git_branch(root)
        commit = names.git_commit(root)
        if git_branch:
            tags[A_GIT_BRANCH] = git_branch
        if commit:
            tags[A_GIT_COMMIT] = commit
        if purpose:
            tags[A_PURPOSE] = purpose
        return tags

    def expires_at(self, throwaway: bool = False) -> datetime | None:
        """When a new branch should expire: ``[check] expires_in`` for throw-away ones (they go
        by themselves should their process die), else ``[branch] expires_in``."""
        now = datetime.now(UTC).replace(microsecond=0)
        if throwaway:
            return now + parse_duration(self.settings.check.expires_in)
        expires_in = self.settings.branch.expires_in
        return now + parse_duration(expires_in) if expires_in else None

    def _create(
        self,
        full: str,
        parent: Branch,
        purpose: str | None = None,
        expiry: Expiry = "default",
        schema_only: bool = False,
    ) -> CreatedBranch:
        expires_at = None if expiry == "none" else self.expires_at(expiry == "throwaway")
        return self.client.create_branch(
            full,
            parent_id=parent.id,
            annotations=self.annotations(purpose),
            expires_at=expires_at,
            init_source="schema-only" if schema_only else None,
        )

    def create_throwaway(
        self, name: str, parent: Branch, purpose: str, expires_at: datetime | None
    ) -> CreatedBranch:
        """Create a branch that will be deleted after use; an interrupted create leaves none."""
        try:
            return self.client.create_branch(
                name,
                parent_id=parent.id,
                annotations=self.annotations(purpose),
                expires_at=expires_at,
            )
        except ConflictError:
            raise  # the name was taken before us: that branch is not ours to delete
        except BaseException:
            # The create may have been applied before the error (or the Ctrl-C): look once.
            self.delete_quietly(name)
            raise

    def delete_quietly(self, name: str) -> None:
        """Delete ``name`` if it exists and wait; best effort (throw-away branches expire)."""
        try:
            found = self.client.find_branch(name)
            if found is not None:
                self.client.wait_for_operations(self.client.delete_branch(found.id))
        except Exception:
            self.progress(f"could not make sure branch {name} is gone; see `neonflow branch list`")

    def created_url(self, created: CreatedBranch | None) -> str | None:
        """The URI in the create answer, when it is for our database and role."""
        if created is None or not created.connection_uris:
            return None
        # Neon sends connection_uris only when the branch has one database and one role.
        neon = self.settings.neon
        databases = [d.name for d in created.databases]
        roles = [r.name for r in created.roles]
        if databases == [neon.database] and roles == [neon.role]:
            return created.connection_uris[0].connection_uri
        return None

    # -- switch, reset, diff, connection string ---------------------------------------------

    def switch(self, name: str) -> SwitchResult:
        """Point the app's env file at the branch ``name``."""
        branch = self.require(name)
        url = self.url(branch)
        self.point_app(url)
        return SwitchResult(branch.name, branch.id, url, str(self.settings.env_file))

    def reset(self, name: str) -> ResetResult:
        """Reset the branch from its parent's current data, then migrate it to head again."""
        branches = self.client.list_branches()
        branch = self.require(name, branches)
        self._refuse_precious(branch, "reset")
        parent = self.parent_of(branch, branches)
        self.preflight()
        with self.runner() as runner:
            self.progress(f"resetting {branch.name} from {parent.name}")
            restored = self.client.restore_branch(branch.id, parent.id)
            self.client.wait_for_operations(restored.operations)
            fresh = self.wait_ready(self.client.get_branch(branch.id))
            self.progress("running alembic upgrade head")
            with self.unchanged(fresh):
                revision = self.migrate(runner, self.url(branch), f"branch {branch.name}")
        return ResetResult(branch.name, branch.id, parent.name, list(revision))

    def diff(self, name: str) -> DiffResult:
        """The branch's schema against its parent's."""
        branches = self.client.list_branches()
        branch = self.require(name, branches)
        parent = self.parent_of(branch, branches)
        database = self.settings.neon.database
        with self.unchanged(branch, parent):
            text = self.client.compare_schema(branch.id, database, base_branch_id=parent.id)
        return DiffResult(branch.name, parent.name, database, text)

    def connection_string(self, name: str, pooled: bool = False) -> str:
        """The URI of the branch ``name`` (its pooler's with ``pooled``), password included."""
        return self.url(self.require(name), pooled=pooled)

    # -- delete ----------------------------------------------------------------------------

    def delete(self, name: str) -> DeleteResult:
        """Delete the branch (one already gone is success); an app pointing at it goes to
        the parent."""
        branches = self.client.list_branches()
        branch = self.find(name, branches)
        if branch is None:
            return DeleteResult(self._lookup(name), None, deleted=False, already_gone=True)
        self._refuse_precious(branch, "delete")
        self._refuse_parent(branch, branches, "delete")
        app_url = self.app_url()
        pointed = app_url is not None and same_database(app_url, self.url_or_none(branch))
        self.progress(f"deleting branch {branch.name} ({branch.id})")
        self.client.wait_for_operations(self.client.delete_branch(branch.id))
        repointed = None
        if pointed:
            parent = (
                self.find(branch.parent_id, branches, literal=True) if branch.parent_id else None
            )
            parent = parent or self.find(self.settings.neon.parent, branches, literal=True)
            if parent is not None:
                self.point_app(self.url(parent))
                repointed = parent.name
                self.progress(f"the app pointed at {branch.name}; it now points at {parent.name}")
        return DeleteResult(branch.name, branch.id, True, False, repointed)

    # -- promote ---------------------------------------------------------------------------

    def promote(self, name: str, set_default: bool = False) -> PromoteResult:
        """Ship the branch's migrations to its parent (rehearsed first) and delete the
        branch; or, with ``set_default``, make it Neon's default branch."""
        branches = self.client.list_branches()
        branch = self.require(name, branches)
        if branch.default:
            raise RefusedError(f"{branch.name!r} is already the default branch")
        parent = self.parent_of(branch, branches)
        if not set_default:
            # Promoting ends with deleting the branch: refuse before anything is migrated.
            self._refuse_precious(branch, "promote (and then delete)")
            self._refuse_parent(branch, branches, "promote (and then delete)")
        if set_default:
            return self._promote_set_default(branch, parent)
        from neonflow.migrations import database, multiple_heads

        history = self.history()
        heads = history.heads
        if len(heads) != 1:
            raise multiple_heads(heads)
        parent_url = self.url(parent)
        # Everything that could fail once the parent is migrated is read before it is.
        pointed = same_database(self.app_url(), self.url_or_none(branch))
        before = database.current(parent_url, history.version_table, history.version_table_schema)
        for revision in before:
            if not history.knows(revision):
                raise RefusedError(
                    f"parent {parent.name!r} is at revision {revision}, which is not in this "
                    "branch's migration history (someone else migrated the parent): merge their "
                    f"migrations into yours, then `neonflow branch reset {branch.name}` and retry"
                )
        result = PromoteResult(
            branch.name, parent.name, "migrate-parent", parent_revision_before=list(before)
        )
        if set(before) != set(heads):
            result.rehearsal_seconds = self._rehearse(branch, parent)
            self.progress(f"running alembic upgrade head on {parent.name}")
            started = time.monotonic()
            lock_timeout = self.settings.migrations.lock_timeout
            with self.runner() as runner:
                # Set on env.py's own session, whatever driver and URL it uses.
                after = self.migrate(
                    runner,
                    parent_url,
                    f"the parent branch {parent.name}",
                    lock_timeout=lock_timeout,
                )
            result.migrate_seconds = round(time.monotonic() - started, 3)
            result.parent_revision_after = list(after)
        else:
            self.progress(f"{parent.name} is already at head; nothing to migrate")
            result.parent_revision_after = list(before)
        self.progress(f"deleting branch {branch.name}")
        self.client.wait_for_operations(self.client.delete_branch(branch.id))
        result.deleted = True
        if pointed:
            self.point_app(parent_url)
            result.app_repointed = True
        return result

    def _rehearse(self, branch: Branch, parent: Branch) -> float:
        """Run the migrations on a throw-away branch of the parent's current data."""
        name = f"{branch.name}-rehearsal-{secrets.token_hex(3)}"[-names.MAX_NAME :]
        self.progress(f"rehearsing the migrations on {name}, a fresh copy of {parent.name}")
        started = time.monotonic()
        with self.runner() as runner:
            expires_at = self.expires_at(throwaway=True)
            created = self.create_throwaway(name, parent, "rehearsal", expires_at)
            try:
                self.client.wait_for_operations(created.operations)
                url = self.created_url(created) or self.url(created.branch)
                try:
                    self.migrate(runner, url, f"the rehearsal branch {name}")
                except MigrationError as exc:
                    raise type(exc)(
                        f"rehearsal on a copy of {parent.name} failed "
                        f"({parent.name} is untouched): {exc}",
                        revision=exc.revision,
                    ) from None
            finally:
                self.delete_quietly(name)
        return round(time.monotonic() - started, 3)

    def _promote_set_default(self, branch: Branch, parent: Branch) -> PromoteResult:
        if branch.expires_at is not None:
            self.progress(f"clearing the expiration of {branch.name}")
            updated = self.client.update_branch(branch.id, expires_at=None)
            self.client.wait_for_operations(updated.operations)
        self.progress(f"making {branch.name} the default branch")
        done = self.client.set_default(branch.id)
        self.client.wait_for_operations(done.operations)
        return PromoteResult(branch.name, parent.name, "set-default")

    # -- prune -----------------------------------------------------------------------------

    def prune(
        self,
        older_than: str | None,
        merged: bool,
        dry_run: bool,
        only: Collection[str] | None = None,
        throwaways: bool = False,
    ) -> PruneResult:
        """Delete neonflow's stale branches; ``only`` limits it to names already shown (and
        confirmed), so nothing that turned stale since is deleted unasked.

        Throw-away branches past their expiry are stale whatever else is asked (Neon deletes
        them in its own time); ``throwaways`` takes only throw-away branches: the expired ones,
        and with ``older_than`` those created before it (their process died, say).
        """
        if older_than is None and not merged and not throwaways:
            raise UsageError(
                "say which branches to prune: --merged, --older-than, --throwaways, or several"
            )
        moment = datetime.now(UTC)
        cutoff = moment - parse_duration(older_than) if older_than else None
        branches = self.client.list_branches()
        parents = {b.parent_id for b in branches if b.parent_id}
        chosen: list[Branch] = []
        kept: list[dict[str, str]] = []
        for branch in branches:
            if branch.annotations.get(A_CREATED_BY) != "true":
                continue
            throwaway = A_PURPOSE in branch.annotations
            reason = None
            if branch.default or branch.protected:
                reason = "default or protected"
            elif branch.id in parents:
                reason = "has child branches"
            elif throwaway and branch.expires_at is not None and branch.expires_at <= moment:
                pass  # an expired throw-away: stale in any case
            elif throwaways:
                if not throwaway:
                    reason = "not a throw-away branch"
                elif cutoff is None:
                    reason = "a throw-away branch that has not expired"
                elif branch.created_at > cutoff:
                    reason = f"younger than {older_than}"
            elif cutoff is not None and branch.created_at > cutoff:
                reason = f"younger than {older_than}"
            elif merged:
                git_branch = branch.annotations.get(A_GIT_BRANCH)
                if not git_branch:
                    reason = "no git branch recorded"
                elif not names.git_merged_or_gone(self.settings.root, git_branch):
                    reason = f"git branch {git_branch} not merged"
            if reason is None and only is not None and branch.name not in only:
                reason = "not in the confirmed list"
            if reason:
                kept.append({"branch": branch.name, "reason": reason})
            else:
                chosen.append(branch)
        if not dry_run:
            for branch in chosen:
                self.progress(f"deleting {branch.name}")
                self.client.wait_for_operations(self.client.delete_branch(branch.id))
        return PruneResult(dry_run, [b.name for b in chosen], kept)

    # -- list, status ----------------------------------------------------------------------

    def _computes(self) -> dict[str, Endpoint]:
        """Each branch's read_write compute (the one ``connection_uri`` names), in one request."""
        return {e.branch_id: e for e in self.client.list_endpoints() if e.type == "read_write"}

    def _points_at(self, url: str | None, endpoint: Endpoint | None) -> bool:
        """Whether ``url`` reaches ``[neon] database`` on this compute (directly or pooled)."""
        from neonflow.neon.client import endpoint_uri

        if url is None or endpoint is None:
            return False
        database = self.settings.neon.database
        return any(
            same_database(url, endpoint_uri(endpoint, database, "", "", pooled))
            for pooled in (False, True)
        )

    def _not_read(self, endpoint: Endpoint | None, revisions: bool | None) -> RevisionStatus | None:
        """Why a branch's revision is not to be read, or None to read it."""
        if revisions is False:
            return "not_read"
        if endpoint is None:
            return "no_compute"
        # On Neon cloud a connection starts a suspended compute (and its bill); the local
        # Neon's computes answer whatever their state.
        if revisions is None and not self.settings.is_local and endpoint.current_state != "active":
            return "idle"
        return None

    def _read_revisions(
        self,
        wanted: list[Branch],
        branches: list[Branch],
        computes: dict[str, Endpoint],
        timeout: float,
    ) -> dict[str, list[str] | None]:
        """The revisions of the ``wanted`` branches (None: unknown), by branch id.

        Their URIs are built from the computes' hosts and one password per lineage: on Neon a
        branch inherits its parent's roles and passwords, except from a protected parent (see
        :func:`_lineage`). One whose password was changed since costs a ``connection_uri``.
        """
        from neonflow.neon.client import endpoint_uri

        table, schema = self._version_table()
        neon = self.settings.neon
        by_id = {b.id: b for b in branches}
        lineage = {b.id: _lineage(b, by_id).id for b in wanted}
        sources = list(dict.fromkeys(lineage.values()))
        if len(sources) > 1:
            self.progress(
                f"{len(sources) - 1} branch(es) with passwords of their own (children of "
                "protected branches): one more API request each"
            )
        passwords = {source: self._password(by_id[source]) for source in sources}
        urls = {}
        for branch in wanted:
            password = passwords[lineage[branch.id]]
            urls[branch.id] = (
                endpoint_uri(computes[branch.id], neon.database, neon.role, password)
                if password is not None
                else self._own_url(branch)
            )
        read, refused = _read_all(urls, table, schema, timeout)
        if refused:
            self.progress(
                f"{len(refused)} branch(es) whose password changed: one more API request each"
            )
            again = {i: self._own_url(by_id[i]) for i in refused}
            read.update(_read_all(again, table, schema, timeout)[0])
        return read

    def _password(self, branch: Branch) -> str | None:
        """``[neon] role``'s password on ``branch``, or None (said why) if the role is not
        there or Neon does not keep passwords."""
        role = self.settings.neon.role
        try:
            return self.client.reveal_password(branch.id, role)
        except (NotFoundError, ConflictError) as exc:
            self.progress(
                f"cannot read the password of {role} on {branch.name} ({_first_line(exc)}): "
                "one connection_uri request per branch that shares it"
            )
            return None

    def _own_url(self, branch: Branch) -> str | None:
        """The branch's URI from ``connection_uri``; None when Neon gives none."""
        try:
            return self.url(branch)
        except NeonAPIError:
            return None

    def _version_table(self) -> tuple[str, str | None]:
        try:
            return self.project.version_table()
        except ConfigError:
            return "alembic_version", None

    def list(self, revisions: bool | None = None, timeout: float = READ_TIMEOUT) -> list[BranchRow]:
        """Every branch, oldest first, with its Alembic revision.

        ``revisions``: True reads every branch's, False none, None (the default) those that cost
        nothing to read: all on the local Neon, on Neon cloud those whose compute is running (a
        connection wakes a suspended one). Three API requests whatever the number of branches
        (branches, endpoints, one password; one more per child of a protected branch);
        revisions are read :data:`MAX_READERS` at a time with a ``timeout`` (to connect, and
        to read), and one that cannot be read is unknown.
        """
        branches = self.client.list_branches(sort_by="created_at", sort_order="asc")
        by_id = {b.id: b for b in branches}
        computes = self._computes()
        app_url = self.app_url()
        skipped = {b.id: self._not_read(computes.get(b.id), revisions) for b in branches}
        wanted = [b for b in branches if skipped[b.id] is None]
        read = self._read_revisions(wanted, branches, computes, timeout) if wanted else {}
        rows = []
        for branch in branches:
            revision = read.get(branch.id)
            status: RevisionStatus = skipped[branch.id] or (
                "read" if revision is not None else "unknown"
            )
            rows.append(
                BranchRow(
                    name=branch.name,
                    id=branch.id,
                    parent=by_id[branch.parent_id].name if branch.parent_id in by_id else None,
                    state=branch.current_state,
                    created_at=rfc3339_or_none(branch.created_at) or "",
                    expires_at=rfc3339_or_none(branch.expires_at),
                    default=branch.default,
                    protected=branch.protected,
                    neonflow=branch.annotations.get(A_CREATED_BY) == "true",
                    revision=revision,
                    current=self._points_at(app_url, computes.get(branch.id)),
                    revision_status=status,
                )
            )
        return rows

    def status(self, revisions: bool | None = None, timeout: float = READ_TIMEOUT) -> StatusResult:
        """Where the app points, and that branch's revision against head.

        Two API requests (branches, endpoints); on Neon cloud the revision of a branch whose
        compute is suspended is read only with ``revisions=True`` (the connection wakes it).
        """
        from neonflow.errors import EnvPyError, RevisionLoadError
        from neonflow.migrations.history import History

        app_url = self.app_url()
        problem = None
        try:
            history = self.history()
        except (RevisionLoadError, EnvPyError) as exc:
            history, problem = History(heads=()), str(exc)
        head = list(history.heads)
        result = StatusResult(
            str(self.settings.env_file),
            app_url,
            None,
            None,
            None,
            None,
            None,
            head,
            None,
            problem,
            self.settings.app.variables.label,
        )
        if app_url is None:
            result.revision_status = "not_read"
            return result
        branches = self.client.list_branches()
        by_id = {b.id: b for b in branches}
        computes = self._computes()
        skipped: RevisionStatus | None = None if revisions is not False else "not_read"
        for branch in branches:
            endpoint = computes.get(branch.id)
            if self._points_at(app_url, endpoint):
                result.branch, result.branch_id = branch.name, branch.id
                parent = by_id.get(branch.parent_id or "")
                result.parent = parent.name if parent else None
                result.expires_at = rfc3339_or_none(branch.expires_at)
                skipped = self._not_read(endpoint, revisions)
                break
        if skipped is not None:
            result.revision_status = skipped
            return result
        table, schema = history.version_table, history.version_table_schema
        result.revision = _revision(app_url, table, schema, timeout)
        if result.revision is None:
            result.revision_status = "unknown"
        elif problem is None:
            result.at_head = set(result.revision) == set(head)
        return result


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _lineage(branch: Branch, by_id: dict[str, Branch]) -> Branch:
    """The oldest ancestor whose roles and passwords ``branch`` inherited: up through the
    parents until a root, or a branch whose parent is protected (whose children Neon gives new
    passwords)."""
    seen = {branch.id}
    while branch.parent_id in by_id and not by_id[branch.parent_id].protected:
        branch = by_id[branch.parent_id]
        if branch.id in seen:  # a cycle: not from Neon, but not a reason to loop
            break
        seen.add(branch.id)
    return branch


def _read_all(
    urls: dict[str, str | None], table: str, schema: str | None, timeout: float
) -> tuple[dict[str, list[str] | None], list[str]]:
    """Each URL's revision (None: unknown), :data:`MAX_READERS` at a time, and the keys whose
    password was refused."""
    from concurrent.futures import ThreadPoolExecutor

    def read(url: str | None) -> tuple[list[str] | None, bool]:
        return _read_one(url, table, schema, timeout) if url else (None, False)

    if not urls:
        return {}, []
    workers = min(MAX_READERS, len(urls))
    with ThreadPoolExecutor(workers, thread_name_prefix="neonflow-revision") as pool:
        outcomes = dict(zip(urls, pool.map(read, urls.values()), strict=True))
    refused = [key for key, (_, no) in outcomes.items() if no]
    return {key: revision for key, (revision, _) in outcomes.items()}, refused


def _read_one(
    url: str, table: str, schema: str | None, timeout: float
) -> tuple[list[str] | None, bool]:
    """The revision at ``url`` (None when it cannot be read) and whether the password was
    refused."""
    from neonflow.migrations import probe

    try:
        return list(probe.read_heads(url, table, schema, timeout)), False
    except ConfigError:
        return None, True
    except NeonflowError:  # an unreachable branch is unknown in a listing, it does not fail it
        return None, False


def _revision(
    url: str,
    version_table: str = "alembic_version",
    schema: str | None = None,
    timeout: float = 10.0,
) -> list[str] | None:
    """The Alembic revision of the database at ``url``, None when it cannot be read."""
    return _read_one(url, version_table, schema, timeout)[0]
