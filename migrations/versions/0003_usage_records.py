"""usage_records: one row per chat completion attempt (gateway usage capture)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

The integrator re-points `down_revision` to "0002" once the api_keys migration is merged.
`api_key_id` deliberately has no foreign key (usage outlives deleted keys).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("api_key_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('success', 'error', 'disconnected')", name="status_known"),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_usage_records_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_usage_records_user_id_created_at", "usage_records", ["user_id", "created_at"])
    op.create_index("ix_usage_records_api_key_id_created_at", "usage_records", ["api_key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_api_key_id_created_at", table_name="usage_records")
    op.drop_index("ix_usage_records_user_id_created_at", table_name="usage_records")
    op.drop_table("usage_records")
