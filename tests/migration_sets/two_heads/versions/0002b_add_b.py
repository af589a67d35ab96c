"""add b

Revision ID: 0002b
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002b"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("b", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "b")
