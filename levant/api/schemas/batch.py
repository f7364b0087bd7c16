"""Wire shapes of ``/v1/batch/jobs`` (Mistral's BatchJobIn, BatchJobOut, BatchJobsOut)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from levant.db.file_tables import BatchJob

BatchJobStatus = Literal[
    "QUEUED",
    "RUNNING",
    "SUCCESS",
    "FAILED",
    "TIMEOUT_EXCEEDED",
    "CANCELLATION_REQUESTED",
    "CANCELLED",
]
MAX_INLINE_REQUESTS = 10_000
MAX_TIMEOUT_HOURS = 168


class BatchRequestIn(BaseModel):
    custom_id: str | None = None
    body: dict[str, Any]


class BatchJobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_files: list[str] | None = None
    requests: list[BatchRequestIn] | None = Field(default=None, max_length=MAX_INLINE_REQUESTS)
    endpoint: str
    model: str | None = None
    agent_id: str | None = None
    metadata: dict[str, str] | None = None
    timeout_hours: int = Field(default=24, ge=1, le=MAX_TIMEOUT_HOURS)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if not 1 <= len(key) <= 32:
                raise ValueError("metadata keys are 1 to 32 characters")
            if not 1 <= len(item) <= 512:
                raise ValueError("metadata values are 1 to 512 characters")
        return value


def _ts(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def job_wire(job: BatchJob, outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "batch",
        "input_files": list(job.input_files),
        "metadata": job.user_metadata,
        "endpoint": job.endpoint,
        "model": job.model,
        "agent_id": None,
        "output_file": job.output_file,
        "error_file": job.error_file,
        "errors": list(job.errors or []),
        "outputs": outputs,
        "status": job.status,
        "created_at": _ts(job.created_at),
        "total_requests": job.total_requests,
        "completed_requests": job.succeeded_requests + job.failed_requests,
        "succeeded_requests": job.succeeded_requests,
        "failed_requests": job.failed_requests,
        "started_at": _ts(job.started_at),
        "completed_at": _ts(job.completed_at),
    }
