"""Files and batch: stored files, batch jobs and their per-line results.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Written out in full (no imports from levant.db) so it never changes when the models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = (
    "QUEUED",
    "RUNNING",
    "SUCCESS",
    "FAILED",
    "TIMEOUT_EXCEEDED",
    "CANCELLATION_REQUESTED",
    "CANCELLED",
)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _workspace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=f"fk_{table}_workspace_id_workspaces",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("sample_type", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("num_lines", sa.BigInteger(), nullable=True),
        sa.Column("mimetype", sa.String(200), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at", nullable=True),
        sa.CheckConstraint("visibility IN ('workspace', 'user')", name="ck_files_visibility"),
        sa.CheckConstraint("source IN ('upload', 'repository', 'mistral')", name="ck_files_source"),
        _workspace_fk("files"),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
    )
    op.create_index("ix_files_workspace_created", "files", ["workspace_id", "created_at"])
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("user_metadata", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("input_files", sa.JSON(), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("timeout_hours", sa.Integer(), nullable=False),
        _timestamp("deadline"),
        sa.Column("total_requests", sa.Integer(), nullable=False),
        sa.Column("succeeded_requests", sa.Integer(), nullable=False),
        sa.Column("failed_requests", sa.Integer(), nullable=False),
        sa.Column("output_file", sa.String(36), nullable=True),
        sa.Column("error_file", sa.String(36), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("completed_at", nullable=True),
        sa.Column("lease_owner", sa.String(32), nullable=True),
        _timestamp("lease_until", nullable=True),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
            name="ck_batch_jobs_status",
        ),
        _workspace_fk("batch_jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_batch_jobs"),
    )
    op.create_index("ix_batch_jobs_workspace_created", "batch_jobs", ["workspace_id", "created_at"])
    op.create_index("ix_batch_jobs_status", "batch_jobs", ["status"])
    op.create_index("ix_batch_jobs_input_sha256", "batch_jobs", ["input_sha256"])
    op.create_table(
        "batch_results",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["batch_jobs.id"],
            name="fk_batch_results_job_id_batch_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "seq", name="pk_batch_results"),
    )


def downgrade() -> None:
    op.drop_table("batch_results")
    for name in ("input_sha256", "status", "workspace_created"):
        op.drop_index(f"ix_batch_jobs_{name}", table_name="batch_jobs")
    op.drop_table("batch_jobs")
    op.drop_index("ix_files_sha256", table_name="files")
    op.drop_index("ix_files_workspace_created", table_name="files")
    op.drop_table("files")
