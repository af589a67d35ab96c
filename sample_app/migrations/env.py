"""Alembic environment for the sample app, under the ``alembic`` command or in-process.

In-process callers (neonflow) may set these ``config.attributes``:

- ``url``: the database URL (else ``DATABASE_URL`` from the environment or ``sample_app/.env``);
- ``connection``: a live connection to run in (no engine is created; Alembic "connection sharing");
- ``transaction_per_migration`` and ``on_version_apply``: passed to ``context.configure``;
- ``configure_logger``: False to leave logging alone (default True: the ini's logging sections).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, pool

from sample_app.models import Base
from sample_app.settings import get_env, normalize_database_url

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    # Keep the host program's loggers: fileConfig disables them by default.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str | None:
    url = config.attributes.get("url") or get_env("DATABASE_URL")
    return normalize_database_url(url) if url else None


def configure_options() -> dict[str, Any]:
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "compare_type": True,
        "compare_server_default": True,
    }
    for key in ("transaction_per_migration", "on_version_apply"):
        if config.attributes.get(key) is not None:
            options[key] = config.attributes[key]
    return options


def run_migrations_offline() -> None:
    """Emit SQL to stdout; needs no database, only the PostgreSQL dialect."""
    context.configure(
        url=database_url() or "postgresql+psycopg://",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **configure_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_in(connection: Connection) -> None:
    context.configure(connection=connection, **configure_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_in(connection)
        return
    url = database_url()
    if url is None:
        raise CommandError("DATABASE_URL is not set: export it or put it in sample_app/.env")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_in(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
