"""The UTC offset a memory's time was given with (`memories.utc_offset`, minutes east of UTC; NULL
for UTC): PostgreSQL keeps only the instant of a `timestamptz`, and a message sent at 08:00 on
10 May in Tokyo was shown as 9 May (its UTC day) in context blocks and in the API.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE memories ADD COLUMN utc_offset smallint")


def downgrade() -> None:
    op.execute("ALTER TABLE memories DROP COLUMN IF EXISTS utc_offset")
