"""add a NOT NULL price without a default: fails on a table with rows

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
    op.add_column("items", sa.Column("price", sa.Integer(), nullable=False))


def downgrade() -> None:
    op.drop_column("items", "price")
