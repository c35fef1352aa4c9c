"""A NOTIFY on channel `memsvc_job_done` (payload: the job id) in the transaction that finishes a
job (status to 'succeeded' or 'failed'): a request waiting on the job (`POST /v1/memories` with
`wait: true`) wakes when the job commits instead of on its next look at the row.

A trigger, not a statement in each code path, so every writer of a final status notifies; the
notification is delivered only if that transaction commits.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION memsvc_notify_job_done() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('memsvc_job_done', NEW.id::text);
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_notify_done AFTER UPDATE OF status ON jobs FOR EACH ROW
        WHEN (NEW.status IN ('succeeded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION memsvc_notify_job_done()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_done ON jobs")
    op.execute("DROP FUNCTION IF EXISTS memsvc_notify_job_done()")
