"""``promote``: rehearse a branch's migrations on a copy of its parent, then migrate the parent
(or make the branch the default) and delete the branch."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from neonflow.errors import MigrationError, RefusedError, UsageError
from neonflow.urls import same_database
from neonflow.workflow import names
from neonflow.workflow.results import PromoteResult
from neonflow.workflow.start import Starting

if TYPE_CHECKING:
    from neonflow.neon import Branch


class Promoting(Starting):
    """Shipping a branch's migrations to its parent."""

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
        from neonflow.migrations import multiple_heads
        from neonflow.migrations.probe import read_heads

        history = self.history()
        heads = history.heads
        if not heads:
            raise UsageError(
                f"{self.project.ini} has no migration: nothing to promote (make one with "
                f"`alembic revision`), or `neonflow branch delete {branch.name}`"
            )
        if len(heads) != 1:
            raise multiple_heads(heads)
        parent_url = self.url(parent)
        # Everything that could fail once the parent is migrated is read before it is.
        pointed = same_database(self.app_url(), self.url_or_none(branch))
        table, schema = history.version_table, history.version_table_schema
        before = read_heads(parent_url, table, schema, timeout=10)
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
