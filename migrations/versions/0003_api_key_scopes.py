"""API key scopes: `read`, `write`, `admin` (admin implies the others).

Keys made before scopes existed could do everything, so they get all three and nothing breaks.
New rows get no default: whoever makes a key says what it may do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "scopes",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{read,write,admin}'"),
            nullable=False,
        ),
    )
    op.alter_column("api_keys", "scopes", server_default=None)
    op.create_check_constraint(
        "api_keys_scopes",
        "api_keys",
        "cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'admin']::text[]",
    )


def downgrade() -> None:
    op.drop_constraint("api_keys_scopes", "api_keys", type_="check")
    op.drop_column("api_keys", "scopes")
