"""The Alembic environment shared by the test migration sets.

The set's ``alembic.ini`` names its ``models`` file (a ``metadata`` in it is the target of
``alembic check``); neonflow's in-process attributes are honoured as in the sample app's env.py.
"""

from __future__ import annotations

import runpy
from typing import Any

from alembic import context
from sqlalchemy import Connection, MetaData, create_engine, pool

config = context.config


def target_metadata() -> MetaData:
    models = config.get_main_option("models")
    assert models, "the set's alembic.ini must name its models file"
    metadata = runpy.run_path(models)["metadata"]
    assert isinstance(metadata, MetaData)
    return metadata


def options() -> dict[str, Any]:
    opts: dict[str, Any] = {
        "target_metadata": target_metadata(),
        "compare_type": True,
        "compare_server_default": True,
    }
    for key in ("transaction_per_migration", "on_version_apply"):
        if config.attributes.get(key) is not None:
            opts[key] = config.attributes[key]
    return opts


def url() -> str:
    raw = str(config.attributes.get("url") or "postgresql://")
    return raw.replace("postgresql://", "postgresql+psycopg://", 1)


def run_in(connection: Connection) -> None:
    context.configure(connection=connection, **options())
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url(), literal_binds=True, **options())
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run_in(config.attributes["connection"])
else:
    engine = create_engine(url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            run_in(conn)
    finally:
        engine.dispose()
