"""Alembic on the user's project as it is.

- :mod:`~neonflow.migrations.project`: the ini, the folder Alembic runs from, Flask-Migrate,
  the project's driver; the revision files checked without importing them;
- :mod:`~neonflow.migrations.history`: the revision history (heads, paths);
- :mod:`~neonflow.migrations.runner`: env.py run in an Alembic process of its own per target,
  with the URL delivered the ways env.py reads it, the configure hook and the interlock
  (:mod:`~neonflow.migrations.hook`), per-revision statistics (:mod:`~neonflow.migrations.stats`);
- :mod:`~neonflow.migrations.database`: neonflow's own connection (``alembic_version``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neonflow.migrations.project import Project, multiple_heads

__all__ = ["Project", "multiple_heads"]


def __getattr__(name: str) -> Any:
    # Lazy: the Alembic process (neonflow.migrations.worker) starts without reading projects.
    if name in __all__:
        from neonflow.migrations import project

        return getattr(project, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
