"""Job queue: procrastinate's tables and functions, at the version installed with memsvc.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import re

from alembic import op
from procrastinate.schema import SchemaManager

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OBJECT = re.compile(r"CREATE (?:OR REPLACE )?(TABLE|TYPE|FUNCTION) (procrastinate_\w+)")


def upgrade() -> None:
    op.execute(SchemaManager.get_schema())


def downgrade() -> None:
    objects = _OBJECT.findall(SchemaManager.get_schema())
    # Tables first (their triggers go with them), then functions, then the types they used.
    for kind in ("TABLE", "FUNCTION", "TYPE"):
        for name in dict.fromkeys(n for k, n in objects if k == kind):
            op.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
