"""take a while

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # long enough for a test to stop the check while it runs
    op.execute("SELECT pg_sleep(30)")


def downgrade() -> None:
    pass
