"""The Alembic environment shared by the test migration sets: Alembic's stock env.py, with the
target metadata read from the ``models`` file the set's ``alembic.ini`` names (and no logging
sections in the sets' ini files to configure)."""

from __future__ import annotations

import runpy

from alembic import context
from sqlalchemy import MetaData, engine_from_config, pool

config = context.config


def target_metadata() -> MetaData:
    models = config.get_main_option("models")
    assert models, "the set's alembic.ini must name its models file"
    metadata = runpy.run_path(models)["metadata"]
    assert isinstance(metadata, MetaData)
    return metadata


options = {"target_metadata": target_metadata(), "compare_type": True}

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
