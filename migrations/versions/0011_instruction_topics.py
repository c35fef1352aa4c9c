"""Standing instructions keyed by their requests however named: "my resume", "Ann's resume" and
"resumes" are one topic (`consolidation.instruction_topic`). The stored `attribute` of each
instruction is read again from its sentence, so a new instruction meets the ones stored before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from memsvc.consolidation import fact_slot

    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, content, subject, attribute FROM memories "
            "WHERE attribute LIKE 'instruction: %' AND attribute NOT LIKE 'instruction: anything%'"
        )
    ).all()
    for memory_id, content, subject, attribute in rows:
        slot = fact_slot(content, subject)
        if slot is not None and slot.attribute != attribute:
            bind.execute(
                sa.text("UPDATE memories SET attribute = :a WHERE id = :i"),
                {"a": slot.attribute, "i": memory_id},
            )


def downgrade() -> None:
    pass  # the old keys were the topics as written; the new ones read the same instructions
