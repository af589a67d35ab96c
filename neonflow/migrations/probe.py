"""A database's Alembic revision on one short connection: psycopg alone, one round trip.

How neonflow's own process reads where a database stands (a listing of hundreds of branches,
check's base, promote's parent): no SQLAlchemy engine, no Alembic import (both cost more than the
read), a bounded wait. In the Alembic process, :func:`neonflow.migrations.database.heads_of`
reads it on the connection neonflow migrates with.
"""

from __future__ import annotations

import re
import traceback
from urllib.parse import urlsplit

from neonflow.errors import ConfigError, NetworkError

_DRIVER = re.compile(r"^(postgres|postgresql)\+[a-z0-9]+://")
# What PostgreSQL (and Neon's proxy) answer to a password they refuse.
_REFUSED = "password authentication failed"


def read_heads(
    url: str,
    version_table: str = "alembic_version",
    schema: str | None = None,
    timeout: float = 5.0,
) -> tuple[str, ...]:
    """The revisions the database at ``url`` is at (empty when it has never been migrated).

    ``timeout`` seconds to connect and as many for the query. A refused password is a
    ConfigError, any other failure a NetworkError; both name the host.
    """
    import psycopg
    from psycopg import sql

    table = sql.Identifier(schema, version_table) if schema else sql.Identifier(version_table)
    # SET LOCAL lasts for this one simple query (an implicit transaction): a pooler's server
    # connection goes back to its pool unchanged.
    query = sql.SQL("SET LOCAL statement_timeout = {}; SELECT version_num FROM {}").format(
        sql.Literal(int(timeout * 1000)), table
    )
    seconds = max(1, round(timeout))  # libpq takes whole seconds
    try:
        with psycopg.connect(
            _DRIVER.sub("postgresql://", url, count=1), connect_timeout=seconds, autocommit=True
        ) as conn:
            cursor = conn.execute(query)
            cursor.nextset()
            return tuple(str(row[0]) for row in cursor.fetchall())
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return ()
    except psycopg.Error as exc:
        # psycopg's connect keeps the failed attempt (and its socket) in frames its exception
        # refers to, a cycle the GC frees late: clearing them closes the socket now.
        traceback.clear_frames(exc.__traceback__)
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        error = ConfigError if _REFUSED in text else NetworkError
        raise error(f"cannot read the revision of the database at {_host(url)}: {reason}") from None


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def heads_or_refused(
    url: str, version_table: str, schema: str | None, timeout: float
) -> tuple[list[str] | None, bool]:
    """:func:`read_heads`, leniently: the revisions (None when they cannot be read) and whether
    the password was refused. An unreachable branch is unknown in a listing; it does not fail
    it."""
    try:
        return list(read_heads(url, version_table, schema, timeout)), False
    except ConfigError:
        return None, True
    except NetworkError:
        return None, False


def heads_or_none(
    url: str, version_table: str = "alembic_version", schema: str | None = None, timeout: float = 10
) -> list[str] | None:
    """The revisions of the database at ``url``, None when they cannot be read."""
    return heads_or_refused(url, version_table, schema, timeout)[0]
