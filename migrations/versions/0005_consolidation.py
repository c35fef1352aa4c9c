"""Consolidation: what a fact is about (`attribute`, for supersession), when a memory was archived
and when it expires, and which consolidation run made a history event.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("memories", sa.Column("attribute", sa.String(length=64), nullable=True))
    op.add_column("memories", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("memories", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    # Ingest looks up the earlier values of the attributes a batch states.
    op.execute(
        "CREATE INDEX ix_memories_attribute ON memories (tenant_id, user_id, subject, attribute) "
        "WHERE attribute IS NOT NULL"
    )
    op.add_column("history", sa.Column("run_id", sa.UUID(), nullable=True))


def downgrade() -> None:
    op.drop_column("history", "run_id")
    op.execute("DROP INDEX IF EXISTS ix_memories_attribute")
    op.drop_column("memories", "expires_at")
    op.drop_column("memories", "archived_at")
    op.drop_column("memories", "attribute")
