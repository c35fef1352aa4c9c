"""Standing instructions for every request keyed by the part of an answer they shape (its order,
format, length, emoji, tone: `consolidation._ANSWER_ASPECTS`), so that "answer in full paragraphs"
replaces a stored "always answer in bullet points". The stored `attribute` of each such instruction
is read again from its sentence.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from memsvc.consolidation import fact_slot

    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, content, subject, attribute FROM memories"
            " WHERE attribute LIKE 'instruction: anything%'"
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
    pass  # the old keys were the directives' words; the new ones read the same instructions
