"""The models of the busy set: the target of alembic check."""

import sqlalchemy as sa

metadata = sa.MetaData()

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("qty", sa.BigInteger(), nullable=True),
    sa.Column(
        "seen_at",
        sa.DateTime(timezone=True),
        server_default=sa.text("clock_timestamp()"),
        nullable=True,
    ),
    sa.Index("ix_items_name", "name"),
)
