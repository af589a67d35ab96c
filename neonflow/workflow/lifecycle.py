"""``switch``, ``reset``, ``diff``, ``connection-string`` and ``delete``: a branch after it
exists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neonflow.urls import same_database
from neonflow.workflow.results import DeleteResult, DiffResult, ResetResult, SwitchResult
from neonflow.workflow.start import Starting

if TYPE_CHECKING:
    pass


class Lifecycle(Starting):
    """A branch after it exists: switch, reset, diff, connection string, delete."""

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
