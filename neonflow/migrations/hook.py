"""The one call every env.py makes, ``EnvironmentContext.configure``, hooked for a run; and
every database connection the Alembic process opens, checked before anything can use it.

While a :class:`Run` is active the hook adds neonflow's ``on_version_apply`` callbacks and
``transaction_per_migration`` to whatever env.py passes, and before anything runs proves that
the connection env.py configured reaches the database neonflow means (the interlock): neonflow's
own connection to the target holds a session advisory lock with a random key, and env.py's
connection must see it, in its own database, held by another session. That holds on Neon cloud
(every branch its own server) and on the local Neon (one server, a database per branch). The
same check runs on every new connection of any SQLAlchemy pool (:func:`guard`), so SQL that env.py
or the app runs before ``configure`` never reaches another database either. In offline
(``--sql``) mode no connection is allowed and SQL is rendered for PostgreSQL.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

_ORIGINAL = EnvironmentContext.configure
_SIGNATURE = inspect.signature(_ORIGINAL)
_active: Run | None = None

_MARKER = """
SELECT EXISTS (
  SELECT 1 FROM pg_locks
  WHERE locktype = 'advisory' AND granted AND objsubid = 1
    AND classid = '{hi}'::oid AND objid = '{lo}'::oid AND pid <> pg_backend_pid()
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)
"""


class WrongTarget(Exception):  # noqa: N818 - the interlock's refusal, reported as such
    """env.py's connection does not reach the target (or offline mode got a connection)."""


class NoConfigure(Exception):  # noqa: N818
    """env.py gave configure() nothing to run on."""


def guard(marker: int | None, intended: str) -> None:
    """From now on, refuse every new database connection that does not reach the target.

    Installed once the target is known (neonflow's own connection is open by then) and kept
    for the life of the Alembic process; ``marker`` None (offline SQL) refuses every connection.
    """

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        if marker is not None and _dbapi_sees(dbapi_connection, marker):
            return
        where = record.info.get("neonflow_where") or _dbapi_describe(dbapi_connection)
        try:
            dbapi_connection.close()
        except Exception:  # noqa: S110 - closing what we refuse is best effort
            pass
        if marker is None:
            raise WrongTarget(
                f"env.py (or the app) connected to {where} while neonflow renders SQL offline "
                "(--sql): no connection is allowed there"
            )
        raise WrongTarget(f"env.py connected to {where}, not to {intended}: nothing was run there")

    def on_do_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        # Before the driver connects: remember where to, to say so should it be refused.
        record.info["neonflow_where"] = _where(dialect, cargs, cparams)

    event.listen(Engine, "do_connect", on_do_connect)
    event.listen(Pool, "connect", on_connect)


def _where(dialect: Any, cargs: Any, cparams: dict[str, Any]) -> str:
    name = f"{dialect.name}+{dialect.driver}" if dialect.driver else dialect.name
    if dialect.name == "sqlite":
        return f"{dialect.name}:///{cargs[0] if cargs else cparams.get('database', '')}"
    user = cparams.get("user") or ""
    host = cparams.get("host") or "localhost"
    port = f":{cparams['port']}" if cparams.get("port") else ""
    database = cparams.get("dbname") or cparams.get("database") or ""
    return f"{name}://{user + ':****@' if user else ''}{host}{port}/{database}"


def _dbapi_sees(conn: Any, marker: int) -> bool:
    """Whether a raw DB-API connection sees the marker (any error: it does not)."""
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(_MARKER.format(hi=marker >> 32, lo=marker & 0xFFFFFFFF))
            row = cursor.fetchone()
        finally:
            cursor.close()
        conn.rollback()
        return bool(row and row[0])
    except Exception:
        return False


def _dbapi_describe(conn: Any) -> str:
    """Driver, host, port and database of a raw DB-API connection, as far as it tells."""
    module = type(conn).__module__.split(".")[0]
    info = getattr(conn, "info", None)  # psycopg 3, psycopg2
    if info is not None and hasattr(info, "host"):
        user = getattr(info, "user", "")
        return f"{module}://{user}{'@' if user else ''}{info.host}:{info.port}/{info.dbname}"
    inner = getattr(conn, "_connection", None)  # SQLAlchemy's asyncpg adapter
    addr, params = getattr(inner, "_addr", None), getattr(inner, "_params", None)
    if addr is not None and params is not None:
        host = addr[0] if isinstance(addr, tuple) else addr
        port = addr[1] if isinstance(addr, tuple) else ""
        return f"asyncpg://{params.user}@{host}:{port}/{params.database}"
    if module == "sqlite3":
        return "sqlite:///…"
    return f"a {module} connection"


def new_marker() -> int:
    """A random positive 63-bit advisory lock key."""
    return secrets.randbits(62) + 1


@dataclass
class Run:
    """What neonflow adds to one Alembic command."""

    marker: int | None  # the key neonflow's own connection holds; None in offline mode
    intended: str  # how to name the target to a person ("branch feature-x")
    callbacks: list[Callable[..., None]] = field(default_factory=list)
    transaction_per_migration: bool = False
    # PostgreSQL settings for env.py's session (lock_timeout on the parent), whatever the driver
    session_settings: dict[str, str] = field(default_factory=dict)
    placeholder_url: str = "postgresql+psycopg://"
    version_table: str = "alembic_version"
    version_table_schema: str | None = None
    configured: int = 0
    target_metadata: bool = False  # env.py gave configure() models to compare (alembic check)
    pointed: list[str] = field(default_factory=list)  # where env.py's connections went
    _opened: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for resource in reversed(self._opened):
            resource.close() if hasattr(resource, "close") else resource.dispose()
        self._opened.clear()


@contextmanager
def active(run: Run) -> Iterator[Run]:
    """Hook ``configure`` for the duration of one Alembic command."""
    global _active
    EnvironmentContext.configure = _configure  # type: ignore[method-assign]
    _active = run
    try:
        yield run
    finally:
        _active = None
        EnvironmentContext.configure = _ORIGINAL  # type: ignore[method-assign]
        run.close()


def describe(conn: Any) -> str:
    """Where a SQLAlchemy connection goes: driver, host, port, database; no password."""
    try:
        url = conn.engine.url
    except Exception:  # not a SQLAlchemy connection
        return type(conn).__name__
    if url.get_backend_name() != "postgresql":
        return f"{url.drivername}:///{url.database or ''}"
    host = f"{url.host or 'localhost'}{':' + str(url.port) if url.port else ''}"
    user = f"{url.username}:****@" if url.password else (f"{url.username}@" if url.username else "")
    return f"{url.drivername}://{user}{host}/{url.database or ''}"


def _configure(self: EnvironmentContext, *args: Any, **kwargs: Any) -> None:
    run = _active
    if run is None:
        return _ORIGINAL(self, *args, **kwargs)
    bound = _SIGNATURE.bind(self, *args, **kwargs)
    params = dict(bound.arguments)
    params.pop("self")
    params.update(params.pop("kw", {}))
    if self.is_offline_mode():
        if params.get("connection") is not None:
            raise WrongTarget(
                "env.py passed a connection to configure() in offline (--sql) mode; neonflow "
                "renders SQL without connecting anywhere"
            )
        params["url"] = run.placeholder_url
        params["dialect_name"] = None
    else:
        params["connection"] = _verified_connection(run, params)
        params["url"] = None
    callbacks = params.get("on_version_apply") or ()
    if callable(callbacks):
        callbacks = (callbacks,)
    params["on_version_apply"] = (*callbacks, *run.callbacks)
    if run.transaction_per_migration:
        params["transaction_per_migration"] = True
    run.version_table = params.get("version_table") or "alembic_version"
    run.version_table_schema = params.get("version_table_schema")
    run.target_metadata = params.get("target_metadata") is not None
    run.configured += 1
    return _ORIGINAL(self, **params)


def _verified_connection(run: Run, params: dict[str, Any]) -> Any:
    conn = params.get("connection")
    if conn is None:
        url = params.get("url")
        if url is None:
            raise NoConfigure("env.py called context.configure() without a connection or a URL")
        # Online with a URL only: Alembic would have nothing to run on; connect as it means.
        from sqlalchemy import create_engine, pool

        engine = create_engine(url, poolclass=pool.NullPool)
        run._opened.append(engine)
        conn = engine.connect()
        run._opened.append(conn)
    where = describe(conn)
    run.pointed.append(where)
    if not _sees_marker(conn, run.marker, run.session_settings):
        raise WrongTarget(
            f"env.py connected to {where}, not to {run.intended}: nothing was run there"
        )
    return conn


def _sees_marker(conn: Any, marker: int | None, settings: dict[str, str]) -> bool:
    if marker is None:
        return False
    try:
        if conn.engine.url.get_backend_name() != "postgresql":
            return False
    except Exception:
        return False
    was_in_transaction = conn.in_transaction()
    try:
        query = _MARKER.format(hi=marker >> 32, lo=marker & 0xFFFFFFFF)
        found = bool(conn.exec_driver_sql(query).scalar())
        if found:
            for name, value in settings.items():
                # Both are neonflow's own, validated values (a setting name, a duration).
                conn.exec_driver_sql(f"SELECT set_config('{name}', '{value}', false)")
    except Exception:
        found = False
        was_in_transaction = False  # an aborted transaction of ours: end it
    if not was_in_transaction:
        # Leave env.py's connection as it was (no transaction open), so that
        # begin_transaction() begins its own; commit keeps the session settings.
        conn.commit() if found else conn.rollback()
    return found
