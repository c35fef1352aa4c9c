"""The change feed's trigger stops sending NOTIFY.

PostgreSQL commits the transactions that issued a NOTIFY one at a time, under one global lock held
through the commit's WAL flush, so every transaction writing memories queued behind the others':
on the dev CPU 8 writers committed 2.7x fewer transactions per second with the NOTIFY than without
(bench/commit_notify.py). The feed's one reader that listened (the GPU index) polls
`memory_changes` instead (`VectorIndex.max_lag_s`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION memsvc_log_memory_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO memory_changes (tenant_id, memory_id, op) VALUES (OLD.tenant_id, OLD.id, 'D');
    ELSE
        INSERT INTO memory_changes (tenant_id, memory_id, op) VALUES (NEW.tenant_id, NEW.id, left(TG_OP, 1));
    END IF;{notify}
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""


def upgrade() -> None:
    op.execute(_FUNCTION.format(notify=""))


def downgrade() -> None:
    op.execute(_FUNCTION.format(notify="\n    PERFORM pg_notify('memsvc_memory_changes', '');"))
