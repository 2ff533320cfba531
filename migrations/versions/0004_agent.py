"""agent: conversations, runs, messages, tool executions

Revision ID: 0004
Revises: 0001 (the integrator re-points this after the other branches' migrations)
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = postgresql.UUID(as_uuid=True)
JSONB = postgresql.JSONB()


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=None if nullable else sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", UUID, nullable=False, server_default=sa.text("gen_random_uuid()")),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("tools", JSONB, nullable=True),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="fk_conversations_user_id_users"),
    )
    # The list query: the caller's, optionally by status, newest first, keyset-paginated.
    op.create_index(
        "ix_conversations_user_archived_created",
        "conversations",
        ["user_id", "archived", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_conversations_user_created", "conversations", ["user_id", sa.text("created_at DESC"), sa.text("id DESC")]
    )

    op.create_table(
        "runs",
        sa.Column("id", UUID, nullable=False, server_default=sa.text("gen_random_uuid()")),
        sa.Column("conversation_id", UUID, nullable=False),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("pending_approvals", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("usage", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("iterations", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_iterations", sa.Integer(), nullable=False),
        sa.Column("token_budget", sa.Integer(), nullable=True),
        sa.Column("error", JSONB, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("completed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], ondelete="CASCADE", name="fk_runs_conversation_id_conversations"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="fk_runs_user_id_users"),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'requires_approval', 'failed', 'cancelled')", name="status_known"
        ),
        sa.CheckConstraint("iterations >= 0 AND max_iterations >= 1", name="iterations_sane"),
    )
    op.create_index("ix_runs_conversation_created", "runs", ["conversation_id", "created_at"])
    # The rule: at most one active run (running or awaiting approval) per conversation.
    op.create_index(
        "ux_runs_one_active_per_conversation",
        "runs",
        ["conversation_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('running', 'requires_approval')"),
    )

    op.create_table(
        "messages",
        sa.Column("id", UUID, nullable=False, server_default=sa.text("gen_random_uuid()")),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("conversation_id", UUID, nullable=False),
        sa.Column("run_id", UUID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("tool_calls", JSONB, nullable=True),
        sa.Column("tool_call_id", sa.String(128), nullable=True),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("seq", name="uq_messages_seq"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            ondelete="CASCADE",
            name="fk_messages_conversation_id_conversations",
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="SET NULL", name="fk_messages_run_id_runs"),
        sa.CheckConstraint("role IN ('user', 'assistant', 'tool')", name="role_known"),
        sa.CheckConstraint("status IN ('complete', 'incomplete', 'error')", name="status_known"),
    )
    op.create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq"])

    op.create_table(
        "tool_executions",
        sa.Column("id", UUID, nullable=False, server_default=sa.text("gen_random_uuid()")),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("api_key_id", UUID, nullable=True),
        sa.Column("conversation_id", UUID, nullable=True),
        sa.Column("run_id", UUID, nullable=True),
        sa.Column("tool_call_id", sa.String(128), nullable=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("arguments", JSONB, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output", JSONB, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("approved_by", UUID, nullable=True),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_tool_executions"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name="fk_tool_executions_user_id_users"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            ondelete="SET NULL",
            name="fk_tool_executions_conversation_id_conversations",
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="SET NULL", name="fk_tool_executions_run_id_runs"),
        sa.ForeignKeyConstraint(
            ["approved_by"], ["users.id"], ondelete="SET NULL", name="fk_tool_executions_approved_by_users"
        ),
        sa.CheckConstraint("status IN ('success', 'error', 'rejected', 'not_permitted')", name="status_known"),
    )
    # The audit trail: the caller's, newest first, optionally for one conversation.
    op.create_index(
        "ix_tool_executions_user_created",
        "tool_executions",
        ["user_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_tool_executions_conversation_created",
        "tool_executions",
        ["conversation_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index("ix_tool_executions_run", "tool_executions", ["run_id"])


def downgrade() -> None:
    op.drop_table("tool_executions")
    op.drop_table("messages")
    op.drop_table("runs")
    op.drop_table("conversations")
