"""Drop 0007's NOTIFY trigger on jobs: the job's finish is announced after its commit instead.

PostgreSQL commits transactions that sent a NOTIFY one at a time, under a global lock held through
the WAL flush (migration 0008, bench/commit_notify.py: 2.7x fewer commits/s for 8 writers); an
ingest job's transaction, the one that stores its memories, must not queue behind every other
worker's. The worker sends `pg_notify('memsvc_job_done', <job id>)` in a transaction of its own
right after the job's commit (memsvc.store.notify_job_done), which does not wait for the disk.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_done ON jobs")
    op.execute("DROP FUNCTION IF EXISTS memsvc_notify_job_done()")


def downgrade() -> None:
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
