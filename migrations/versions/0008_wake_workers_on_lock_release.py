"""Wake idle workers when a job ends while a later job of its lock (its user) waits.

A worker that runs several jobs at once fetches until the queue has nothing it may run, then waits
for a `job_inserted` notification or its next poll (1 s). One user's jobs run one at a time (their
procrastinate `lock`), so when a user's job ends, that user's next job has just become runnable and
nobody was told: a backlog of one user drained at one job per poll (a test with PostgreSQL
restarted under load saw 1 job/s). This trigger sends the notification procrastinate's own insert
trigger sends, in the transaction that ends the job (so the lock is free when a worker fetches),
and only when a job of the same lock is queued.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The queued jobs of one lock, found by one index look-up on every job end.
    op.execute(
        "CREATE INDEX memsvc_procrastinate_todo_lock ON procrastinate_jobs (lock) "
        "WHERE status = 'todo' AND lock IS NOT NULL"
    )
    op.execute(
        """
        CREATE FUNCTION memsvc_wake_for_next_of_lock() RETURNS trigger AS $$
        DECLARE
            payload TEXT;
        BEGIN
            IF TG_OP = 'UPDATE' AND NEW.status = 'doing' THEN
                RETURN NULL;
            END IF;
            IF EXISTS (
                SELECT 1 FROM procrastinate_jobs
                WHERE lock = OLD.lock AND status = 'todo' AND id <> OLD.id
            ) THEN
                payload := json_build_object('type', 'job_inserted', 'job_id', OLD.id)::text;
                PERFORM pg_notify('procrastinate_queue_v1#' || OLD.queue_name, payload);
                PERFORM pg_notify('procrastinate_any_queue_v1', payload);
            END IF;
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER memsvc_wake_for_next_of_lock AFTER UPDATE OF status OR DELETE ON procrastinate_jobs "
        "FOR EACH ROW WHEN (OLD.status = 'doing' AND OLD.lock IS NOT NULL) "
        "EXECUTE FUNCTION memsvc_wake_for_next_of_lock()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER memsvc_wake_for_next_of_lock ON procrastinate_jobs")
    op.execute("DROP FUNCTION memsvc_wake_for_next_of_lock()")
    op.execute("DROP INDEX memsvc_procrastinate_todo_lock")
