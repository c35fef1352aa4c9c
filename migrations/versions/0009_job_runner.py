"""The process running a job (`jobs.runner`) and the queue's attempt it runs (`runner_attempt`): a
job whose process is gone is retried at once by a worker of the same machine, instead of after the
dead worker's heartbeat times out (30 s).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN runner text, ADD COLUMN runner_attempt integer")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS runner, DROP COLUMN IF EXISTS runner_attempt")
