"""On neonflow's own connection in the Alembic process: reading ``alembic_version``, the
migration lock. (Outside it, :func:`neonflow.migrations.probe.read_heads` reads a revision.)"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import Connection

# An arbitrary constant: the advisory lock key neonflow holds while it migrates a database.
MIGRATION_LOCK = 7_346_120_118
_DRIVERS = re.compile(r"^(postgres|postgresql)(\+[a-z0-9]+)?://")


def sqlalchemy_url(url: str) -> str:
    """``postgres://`` / ``postgresql://`` as SQLAlchemy's psycopg 3 URL; the query is kept."""
    return _DRIVERS.sub("postgresql+psycopg://", url, count=1)


def heads_of(
    conn: Connection, version_table: str = "alembic_version", schema: Any = None
) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    opts = {"version_table": version_table, "version_table_schema": schema}
    return tuple(MigrationContext.configure(conn, opts=opts).get_current_heads())
