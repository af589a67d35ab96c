"""neonflow's own connection to a database: reading ``alembic_version``, the migration lock."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from neonflow.errors import NetworkError

# An arbitrary constant: the advisory lock key neonflow holds while it migrates a database.
MIGRATION_LOCK = 7_346_120_118
_DRIVERS = re.compile(r"^(postgres|postgresql)(\+[a-z0-9]+)?://")


def sqlalchemy_url(url: str) -> str:
    """``postgres://`` / ``postgresql://`` as SQLAlchemy's psycopg 3 URL; the query is kept."""
    return _DRIVERS.sub("postgresql+psycopg://", url, count=1)


@contextmanager
def connect(url: str, autocommit: bool = False) -> Iterator[Connection]:
    # A host that does not answer should fail in seconds, unless the URL says otherwise.
    connect_args = {} if "connect_timeout=" in url else {"connect_timeout": 10}
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_engine(
        sqlalchemy_url(url), poolclass=pool.NullPool, connect_args=connect_args, **options
    )
    try:
        try:
            conn = engine.connect()
        except OperationalError as exc:
            host = urlsplit(url).hostname
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise NetworkError(f"cannot connect to the database at {host}: {reason}") from None
        with conn:
            yield conn
    finally:
        engine.dispose()


def heads_of(
    conn: Connection, version_table: str = "alembic_version", schema: Any = None
) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    opts = {"version_table": version_table, "version_table_schema": schema}
    return tuple(MigrationContext.configure(conn, opts=opts).get_current_heads())


def current(
    url: str, version_table: str = "alembic_version", schema: str | None = None
) -> tuple[str, ...]:
    """The revisions the database is at (empty when it has never been migrated)."""
    with connect(url, autocommit=True) as conn:
        return heads_of(conn, version_table, schema)
