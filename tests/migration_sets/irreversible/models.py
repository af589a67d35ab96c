"""The models of the irreversible set: the target of alembic check."""

import sqlalchemy as sa

metadata = sa.MetaData()

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("qty", sa.BigInteger(), nullable=True),
    sa.Column("note", sa.Text(), nullable=True),
)
