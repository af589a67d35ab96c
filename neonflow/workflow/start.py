"""``start``: get or create a branch, point the app at it, migrate it; and the throw-away
branches ``check`` and the tests use."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from neonflow import envfile
from neonflow.config import parse_duration
from neonflow.errors import (
    ConflictError,
    EnvPyError,
    MigrationError,
    NeonflowError,
    RefusedError,
    RevisionLoadError,
    Unreachable,
    WrongTargetError,
)
from neonflow.times import rfc3339_or_none
from neonflow.workflow import names
from neonflow.workflow.base import (
    A_CREATED_BY,
    A_GIT_BRANCH,
    A_GIT_COMMIT,
    A_PURPOSE,
    A_USER,
    BranchesBase,
    Discarded,
    Expiry,
)
from neonflow.workflow.results import StartResult

if TYPE_CHECKING:
    from neonflow.migrations.runner import Runner
    from neonflow.neon import Branch, CreatedBranch


class Starting(BranchesBase):
    """Creating branches: ``start`` and the throw-away branches."""

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
        # A branch made for nothing goes again, and the env file is put back as it was.
        saved = envfile.snapshot(self.settings.env_file) if write_env else None
        try:
            with self.unchanged(branch):
                url = self.created_url(created) or self.url(branch)
                app_url = None
                if write_env:
                    app_url = self.point_app(url)
                    label = self.settings.app.variables.label
                    self.progress(f"{label} in {self.settings.app.env_file} -> {full}")
                if runner is None:
                    from neonflow.migrations.probe import heads_or_none

                    revision = tuple(heads_or_none(url) or ())
                else:
                    self.progress("running alembic upgrade head")
                    revision = self.migrate(runner, url, f"branch {full}")
        except (EnvPyError, WrongTargetError, RevisionLoadError, Unreachable) as exc:
            # Nothing ran on the branch: env.py failed, went elsewhere or could not connect, or
            # a revision file did not load, before the first revision.
            if purpose is not None:  # the caller's branch to keep or delete
                raise
            discarded: Discarded = "kept"
            if created is not None:
                discarded = self._discard(branch, "nothing ran on it", wait=True)
            if discarded == "kept":
                left = f"branch {full} is kept (not migrated) and the app points at it"
            else:  # gone, or going: the app must not point at it
                verb = "was deleted" if discarded == "gone" else "is being deleted"
                left = f"branch {full} {verb} (nothing ran on it)"
                if write_env:
                    envfile.restore(self.settings.env_file, saved)
                    left += f" and {self.settings.app.env_file} is as it was"
            raise _with(exc, f"{left}: fix it and run `neonflow branch start` again") from None
        except MigrationError as exc:
            if purpose is not None:  # the caller's branch to keep or delete
                raise
            raise _with(
                exc,
                f"branch {full} is kept and the app points at it: fix it "
                "and run `neonflow branch start` again",
            ) from None
        return StartResult(
            branch=full,
            branch_id=branch.id,
            parent=parent.name,
            created=created is not None,
            database_url=url,
            app_url=app_url,
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


def _with(exc: NeonflowError, what_was_left: str) -> NeonflowError:
    """``exc`` again, its message followed by what ``start`` left behind."""
    message = f"{exc}; {what_was_left}"
    if isinstance(exc, MigrationError):
        return type(exc)(message, revision=exc.revision, database_error=exc.database_error)
    return type(exc)(message)
