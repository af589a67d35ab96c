"""``prune``: delete the branches whose work is done (merged or gone from git) and the
throw-away branches that expired."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from neonflow.config import parse_duration
from neonflow.errors import UsageError
from neonflow.workflow import names
from neonflow.workflow.base import A_CREATED_BY, A_GIT_BRANCH, A_PURPOSE, BranchesBase
from neonflow.workflow.results import PruneResult

if TYPE_CHECKING:
    from neonflow.neon import Branch


class Pruning(BranchesBase):
    """Deleting the branches whose work is done."""

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
