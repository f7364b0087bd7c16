"""Tables of ``/v1/files`` and ``/v1/batch/jobs``: stored files, batch jobs, per-line results.

Declared on the same ``Base`` as ``levant.db.tables`` (one metadata; revision 0004
creates them). A file's bytes live in the FileStore under LEVANT_HOME, named by
``sha256``; the row is its metadata and its owner. A batch job's lines are done
one by one and each result is a ``batch_results`` row the moment it finishes, so a
restarted server resumes a job without running (or billing) a finished line again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from levant.db.tables import Base, JSONValue
from levant.db.types import utcnow

BATCH_STATUSES = (
    "QUEUED",
    "RUNNING",
    "SUCCESS",
    "FAILED",
    "TIMEOUT_EXCEEDED",
    "CANCELLATION_REQUESTED",
    "CANCELLED",
)


class StoredFile(Base):
    """An uploaded file or a batch job's output, visible only inside its workspace."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_workspace_created", "workspace_id", "created_at"),
        CheckConstraint("visibility IN ('workspace', 'user')", name="visibility"),
        CheckConstraint("source IN ('upload', 'repository', 'mistral')", name="source"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUID, as Mistral's file ids are."""
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    """The key that uploaded it (null when auth is off); ``user`` visibility means only it."""
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(16))
    sample_type: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int] = mapped_column(BigInteger)
    num_lines: Mapped[int | None] = mapped_column(BigInteger, default=None)
    mimetype: Mapped[str | None] = mapped_column(String(200), default=None)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    visibility: Mapped[str] = mapped_column(String(16), default="workspace")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class BatchJob(Base):
    """One batch job; its requests are a JSONL blob (``input_sha256``) made at creation."""

    __tablename__ = "batch_jobs"
    __table_args__ = (
        Index("ix_batch_jobs_workspace_created", "workspace_id", "created_at"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in BATCH_STATUSES) + ")", name="status"
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    """The key whose principal runs every line (null when auth is off)."""
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    user_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONValue, default=None)
    input_files: Mapped[list[str]] = mapped_column(JSON)
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32), default="QUEUED", index=True)
    timeout_hours: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime] = mapped_column()
    total_requests: Mapped[int] = mapped_column(Integer)
    succeeded_requests: Mapped[int] = mapped_column(Integer, default=0)
    failed_requests: Mapped[int] = mapped_column(Integer, default=0)
    output_file: Mapped[str | None] = mapped_column(String(36), default=None)
    error_file: Mapped[str | None] = mapped_column(String(36), default=None)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(32), default=None)
    """The server process running the job; another may take it once ``lease_until`` passed."""
    lease_until: Mapped[datetime | None] = mapped_column(default=None)


class BatchResult(Base):
    """A finished line of a batch job: its output-file record, written once."""

    __tablename__ = "batch_results"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    """The line's position in the job's input, from 0."""
    ok: Mapped[bool] = mapped_column(Boolean)
    record: Mapped[str] = mapped_column(Text)
    """The JSON line for the output file (``ok``) or the error file."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
