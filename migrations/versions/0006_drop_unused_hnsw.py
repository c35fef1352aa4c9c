"""Drop the HNSW indexes on memories.embedding and entities.embedding: no query reads them.

Dense search scores a user's memories exactly (the CPU corpus or the device-resident index) and
entity merging compares vectors in the ingest process, so an ANN index over every tenant's vectors
only cost ingest: each inserted row walked the graph (60 % of the database time of an ingest batch,
BENCHMARKS.md "Ingest").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_memories_embedding")
    op.execute("DROP INDEX IF EXISTS ix_entities_embedding")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_memories_embedding ON memories USING hnsw (embedding halfvec_cosine_ops)")
    op.execute("CREATE INDEX ix_entities_embedding ON entities USING hnsw (embedding halfvec_cosine_ops)")
