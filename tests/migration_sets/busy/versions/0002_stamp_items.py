"""stamp items

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
    # a volatile default rewrites the table; the UPDATE touches every row; the index is not
    # built CONCURRENTLY (squawk: require-concurrent-index-creation)
    op.add_column(
        "items",
        sa.Column(
            "seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=True,
        ),
    )
    op.execute("UPDATE items SET name = upper(name)")
    op.create_index("ix_items_name", "items", ["name"])


def downgrade() -> None:
    op.drop_index("ix_items_name", table_name="items")
    op.execute("UPDATE items SET name = lower(name)")
    op.drop_column("items", "seen_at")
