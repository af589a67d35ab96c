"""add price

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL without a default: fine on an empty table, fails on one with rows
    op.add_column("items", sa.Column("price", sa.BigInteger(), nullable=False))


def downgrade() -> None:
    op.drop_column("items", "price")
