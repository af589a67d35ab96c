"""The project's revision history as the Alembic process read it (with env.py's world loaded).

The revision files are imported only in the Alembic process, where the app's variables are
exported and the project's ``sys.path`` is set: a revision that imports the app's models works
there, and nothing of the project is imported into neonflow itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revisions: tuple[str, ...]
    path: str
    doc: str

    @property
    def down_revision(self) -> str | None:
        return ", ".join(self.down_revisions) or None


@dataclass(frozen=True)
class History:
    """Heads, every revision (newest first, as Alembic walks them), and the version table."""

    heads: tuple[str, ...]
    revisions: tuple[Revision, ...] = field(default_factory=tuple)
    version_table: str = "alembic_version"
    version_table_schema: str | None = None

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> History:
        return cls(
            heads=tuple(reply["heads"]),
            revisions=tuple(
                Revision(r["revision"], tuple(r["down"]), r["path"], r["doc"])
                for r in reply["revisions"]
            ),
            version_table=reply.get("version_table") or "alembic_version",
            version_table_schema=reply.get("version_table_schema"),
        )

    def knows(self, revision: str | None) -> bool:
        """Whether ``revision`` is in the history (None, the base, always is)."""
        return revision is None or any(r.revision == revision for r in self.revisions)

    def ancestors(self, revisions: Iterable[str]) -> set[str]:
        """``revisions`` and everything below them."""
        by_id = {r.revision: r for r in self.revisions}
        seen: set[str] = set()
        stack = list(revisions)
        while stack:
            rev = stack.pop()
            if rev in seen or rev not in by_id:
                continue
            seen.add(rev)
            stack.extend(by_id[rev].down_revisions)
        return seen

    def path(self, start: str | None) -> list[Revision]:
        """What an upgrade from ``start`` to the heads applies, oldest first."""
        done = self.ancestors([start]) if start else set()
        return [r for r in reversed(self.revisions) if r.revision not in done]
