"""An index on open jobs: readiness, /metrics and job recovery ask about queued and running jobs on
every probe, scrape and minute, and must not scan every job ever finished.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_jobs_open ON jobs (tenant_id, status, created_at) "
        "WHERE status IN ('queued', 'running')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_jobs_open")
