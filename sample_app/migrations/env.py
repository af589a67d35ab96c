"""Alembic environment for the sample app: Alembic's stock env.py, with the app's models as the
target and the database URL from the app's own settings (``DATABASE_URL``, from the environment
or ``sample_app/.env``)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

from sample_app.models import Base
from sample_app.settings import get_env, normalize_database_url

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata

# The URL the app itself uses; configparser needs its "%" doubled.
_url = get_env("DATABASE_URL")
if _url:
    config.set_main_option("sqlalchemy.url", normalize_database_url(_url).replace("%", "%%"))


def run_migrations_offline() -> None:
    """Emit the SQL to stdout: no database, only the dialect of the URL."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            compare_server_default=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
