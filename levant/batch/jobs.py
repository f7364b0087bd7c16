"""Batch jobs in the database: creation (input normalised into one blob), reads, leases, results.

A job's requests are written once, at creation, as a JSONL blob of
``{"custom_id", "body"}`` lines (from its input files and/or inline requests), so
deleting an input file later changes nothing. Each finished line is a
``batch_results`` row, inserted with the job's counters in one transaction; the
runner skips lines that have one, which is what makes a restart resume without
running or billing a finished line twice. At the end the results become the
job's output and error files and their rows go.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from levant.access.policy import workspace_grants, workspace_residency
from levant.access.principal import Principal, Scopes
from levant.db.file_tables import BatchJob, BatchResult, StoredFile
from levant.db.session import Database
from levant.db.tables import ApiKey
from levant.db.types import utcnow
from levant.files.records import FINISHED, NewFile, add_file, get_file, owner_key
from levant.files.store import BlobWriter, FileStore
from levant.routing.regions import RegionRegistry

ENDPOINTS = ("/v1/chat/completions", "/v1/fim/completions", "/v1/embeddings")
ACTIVE = ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED")
MAX_ERRORS = 20
"""Distinct error messages kept on a job (with their counts); the rest are folded."""


class BatchInputError(ValueError):
    """The job's input is not usable; the message names the file and line."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class JobNotFound(LookupError):
    pass


class KeyUnusable(PermissionError):
    """The job's key was revoked, expired or deleted since the job was made."""


@dataclass(frozen=True, slots=True)
class BatchInput:
    sha256: str
    total: int


def _line_body(raw: Any, where: str, needs_model: bool) -> tuple[str | None, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise BatchInputError(f"{where}: each request must be a JSON object")
    body = raw.get("body")
    if not isinstance(body, dict):
        raise BatchInputError(f"{where}: 'body' must be a JSON object")
    custom_id = raw.get("custom_id")
    if custom_id is not None and not isinstance(custom_id, str):
        if isinstance(custom_id, int) and not isinstance(custom_id, bool):
            custom_id = str(custom_id)
        else:
            raise BatchInputError(f"{where}: 'custom_id' must be a string")
    if needs_model and not isinstance(body.get("model"), str):
        raise BatchInputError(
            f"{where}: the job names no model, so every body needs a 'model'", param="model"
        )
    return custom_id, body


def _write_line(out: BlobWriter, custom_id: str | None, body: dict[str, Any]) -> None:
    line = json.dumps({"custom_id": custom_id, "body": body}, separators=(",", ":"))
    out.write(line.encode() + b"\n")


def build_input(
    db: Database,
    store: FileStore,
    principal: Principal,
    *,
    input_files: Sequence[str],
    requests: Sequence[dict[str, Any]],
    needs_model: bool,
    max_requests: int | None = None,
) -> BatchInput:
    """Validate every request and write the job's input blob (streamed, never held whole)."""
    with db.reading() as session:
        rows: list[StoredFile] = []
        for i, file_id in enumerate(input_files):
            try:
                row = get_file(session, principal, file_id)
            except LookupError:
                raise BatchInputError(
                    f"Input file '{file_id}' not found", param=f"input_files[{i}]"
                ) from None
            if row.purpose != "batch":
                raise BatchInputError(
                    f"Input file '{file_id}' has purpose '{row.purpose}'; batch jobs read files "
                    "uploaded with purpose 'batch'",
                    param=f"input_files[{i}]",
                )
            rows.append(row)
    with store.writer() as out:
        total = 0
        for row in rows:
            with store.open(row.sha256) as fh:
                for number, raw_line in enumerate(fh, start=1):
                    if not raw_line.strip():
                        continue
                    where = f"Input file '{row.id}' line {number}"
                    try:
                        parsed = json.loads(raw_line)
                    except ValueError:
                        raise BatchInputError(f"{where} is not valid JSON") from None
                    _write_line(out, *_line_body(parsed, where, needs_model))
                    total += 1
                    if max_requests is not None and total > max_requests:
                        raise BatchInputError(f"More than {max_requests} requests in one job")
        for i, request in enumerate(requests):
            _write_line(out, *_line_body(request, f"requests[{i}]", needs_model))
            total += 1
        if total == 0:
            raise BatchInputError("The batch job has no requests", param="input_files")
        with store.lock:  # the blob and the job row that refers to it land together
            sha = out.commit()
    return BatchInput(sha, total)


@dataclass(frozen=True, slots=True)
class NewJob:
    endpoint: str
    model: str | None
    metadata: dict[str, str] | None
    input_files: list[str]
    timeout_hours: int
    input: BatchInput


def create_job(session: Session, principal: Principal, new: NewJob) -> BatchJob:
    now = utcnow()
    job = BatchJob(
        id=str(uuid.uuid4()),
        workspace_id=principal.workspace_id,
        key_id=owner_key(principal),
        endpoint=new.endpoint,
        model=new.model,
        user_metadata=new.metadata,
        input_files=list(new.input_files),
        input_sha256=new.input.sha256,
        status="QUEUED",
        timeout_hours=new.timeout_hours,
        deadline=now + timedelta(hours=new.timeout_hours),
        total_requests=new.input.total,
        succeeded_requests=0,
        failed_requests=0,
        errors=[],
        created_at=now,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, principal: Principal, job_id: str) -> BatchJob:
    job = session.scalars(
        select(BatchJob).where(
            BatchJob.id == job_id, BatchJob.workspace_id == principal.workspace_id
        )
    ).one_or_none()
    if job is None:
        raise JobNotFound(job_id)
    return job


@dataclass(frozen=True, slots=True)
class JobQuery:
    page: int = 0
    page_size: int = 100
    model: str | None = None
    metadata: dict[str, str] | None = None
    created_after: datetime | None = None
    created_by_me: bool = False
    statuses: Sequence[str] | None = None
    newest_first: bool = True


def list_jobs(
    session: Session, principal: Principal, query: JobQuery
) -> tuple[list[BatchJob], int]:
    where = [BatchJob.workspace_id == principal.workspace_id]
    if query.model is not None:
        where.append(BatchJob.model == query.model)
    if query.created_after is not None:
        where.append(BatchJob.created_at > query.created_after)
    if query.created_by_me:
        key = owner_key(principal)
        where.append(BatchJob.key_id.is_(None) if key is None else BatchJob.key_id == key)
    if query.statuses:
        where.append(BatchJob.status.in_(list(query.statuses)))
    order = BatchJob.created_at.desc() if query.newest_first else BatchJob.created_at.asc()
    stmt = select(BatchJob).where(*where).order_by(order, BatchJob.id)
    if query.metadata:
        # JSON containment differs per database; filter the (workspace-scoped) rows here.
        rows = [
            job
            for job in session.scalars(stmt)
            if all((job.user_metadata or {}).get(k) == v for k, v in query.metadata.items())
        ]
        start = query.page * query.page_size
        return rows[start : start + query.page_size], len(rows)
    total = session.scalar(select(func.count()).select_from(BatchJob).where(*where)) or 0
    page = session.scalars(stmt.offset(query.page * query.page_size).limit(query.page_size)).all()
    return list(page), total


def request_cancel(session: Session, principal: Principal, job_id: str) -> BatchJob:
    job = get_job(session, principal, job_id)
    if job.status in ("QUEUED", "RUNNING"):
        job.status = "CANCELLATION_REQUESTED"
        session.flush()
    return job


# -- the runner's side ------------------------------------------------------------------


def claim_jobs(db: Database, owner: str, lease: timedelta, limit: int) -> list[str]:
    """Take the lease on up to ``limit`` unfinished jobs free to run (oldest first)."""
    now = utcnow()
    free = or_(
        BatchJob.lease_owner.is_(None), BatchJob.lease_until < now, BatchJob.lease_owner == owner
    )
    claimed: list[str] = []
    with db.writing() as session:
        ids = session.scalars(
            select(BatchJob.id)
            .where(BatchJob.status.in_(ACTIVE), free)
            .order_by(BatchJob.created_at)
            .limit(limit)
        ).all()
        for job_id in ids:
            result = session.execute(
                update(BatchJob)
                .where(BatchJob.id == job_id, BatchJob.status.in_(ACTIVE), free)
                .values(lease_owner=owner, lease_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) == 1:
                claimed.append(job_id)
    return claimed


def renew_leases(db: Database, owner: str, job_ids: Sequence[str], lease: timedelta) -> None:
    if not job_ids:
        return
    with db.writing() as session:
        session.execute(
            update(BatchJob)
            .where(BatchJob.id.in_(list(job_ids)), BatchJob.lease_owner == owner)
            .values(lease_until=utcnow() + lease)
            .execution_options(synchronize_session=False)
        )


def release_leases(db: Database, owner: str) -> None:
    """Let another process (or this one after a restart) take our jobs at once."""
    with db.writing() as session:
        session.execute(
            update(BatchJob)
            .where(BatchJob.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )


def load_job(db: Database, job_id: str) -> BatchJob | None:
    with db.reading() as session:
        return session.get(BatchJob, job_id)


def principal_for(db: Database, job: BatchJob, regions: RegionRegistry) -> Principal:
    """Who the job's lines run as: its key, as it is now (revoked or expired → KeyUnusable)."""
    with db.reading() as session:
        if job.key_id is None:
            principal = Principal(
                workspace_id=job.workspace_id, key_id="anonymous", scopes=Scopes()
            )
        else:
            key = session.get(ApiKey, job.key_id)
            now = utcnow()
            if key is None or key.revoked_at is not None:
                raise KeyUnusable(f"API key {job.key_id} was revoked")
            if key.expires_at is not None and key.expires_at <= now:
                raise KeyUnusable(f"API key {job.key_id} has expired")
            principal = Principal(
                workspace_id=key.workspace_id,
                key_id=key.id,
                scopes=Scopes.of(key.allowed_models, key.allowed_endpoints),
            )
        return Principal(
            workspace_id=principal.workspace_id,
            key_id=principal.key_id,
            scopes=principal.scopes,
            grants=workspace_grants(session, job.workspace_id),
            residency=workspace_residency(session, job.workspace_id, regions),
        )


def start_job(db: Database, job_id: str) -> None:
    with db.writing() as session:
        session.execute(
            update(BatchJob)
            .where(BatchJob.id == job_id, BatchJob.status == "QUEUED")
            .values(status="RUNNING", started_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def done_lines(db: Database, job_id: str) -> set[int]:
    with db.reading() as session:
        return set(session.scalars(select(BatchResult.seq).where(BatchResult.job_id == job_id)))


def _merge_errors(errors: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
    counts = Counter({e["message"]: int(e.get("count", 1)) for e in errors})
    if message in counts or len(counts) < MAX_ERRORS:
        counts[message] += 1
    else:
        counts["(other errors)"] += 1
    return [{"message": m, "count": c} for m, c in counts.items()]


def record_result(
    db: Database, job_id: str, seq: int, ok: bool, record: dict[str, Any], error: str | None
) -> bool:
    """Store one finished line and count it; False if it was already stored."""
    with db.writing() as session:
        seen = session.scalar(
            select(BatchResult.seq).where(BatchResult.job_id == job_id, BatchResult.seq == seq)
        )
        if seen is not None:
            return False
        session.add(
            BatchResult(
                job_id=job_id,
                seq=seq,
                ok=ok,
                record=json.dumps(record, separators=(",", ":")),
                created_at=utcnow(),
            )
        )
        job = session.get(BatchJob, job_id, with_for_update=True)
        assert job is not None
        if ok:
            job.succeeded_requests += 1
        else:
            job.failed_requests += 1
            job.errors = _merge_errors(list(job.errors or []), error or "request failed")
    return True


def job_status(db: Database, job_id: str) -> str | None:
    with db.reading() as session:
        return session.scalar(select(BatchJob.status).where(BatchJob.id == job_id))


def read_input(store: FileStore, sha256: str) -> Iterator[tuple[int, str | None, dict[str, Any]]]:
    """The job's requests: (seq, custom_id, body)."""
    with store.open(sha256) as fh:
        for seq, raw in enumerate(fh):
            line = json.loads(raw)
            yield seq, line.get("custom_id"), line["body"]


@dataclass
class Outcome:
    status: str
    errors: list[str] = field(default_factory=list)
    """Job-level errors (why it failed as a whole) added to ``errors``."""


def finalize(db: Database, store: FileStore, job_id: str, outcome: Outcome) -> bool:
    """Write the output and error files, set the final status, drop the per-line rows.

    Idempotent: a job already finished is left as it is (False).
    """
    job = load_job(db, job_id)
    if job is None or job.status in FINISHED:
        return False
    written: dict[bool, tuple[str, int, int]] = {}
    for ok in (True, False):
        with store.writer() as out:
            with db.reading() as session:
                records = session.scalars(
                    select(BatchResult.record)
                    .where(BatchResult.job_id == job_id, BatchResult.ok == ok)
                    .order_by(BatchResult.seq)
                    .execution_options(yield_per=500)
                )
                for record in records:
                    out.write(record.encode() + b"\n")
            if out.size:
                with store.lock:
                    written[ok] = (out.commit(), out.size, out.num_lines)
    principal = Principal(
        workspace_id=job.workspace_id, key_id=job.key_id or "anonymous", scopes=Scopes()
    )
    with store.lock, db.writing() as session:
        row = session.get(BatchJob, job_id, with_for_update=True)
        if row is None or row.status in FINISHED:
            return False
        for ok, (sha, size, lines) in written.items():
            stored = add_file(
                session,
                principal,
                NewFile(
                    filename=f"{job_id}.jsonl" if ok else f"{job_id}_error.jsonl",
                    purpose="batch",
                    sample_type="batch_result" if ok else "batch_error",
                    source="mistral",
                    size=size,
                    num_lines=lines,
                    mimetype="application/jsonl",
                    sha256=sha,
                ),
            )
            if ok:
                row.output_file = stored.id
            else:
                row.error_file = stored.id
        errors = list(row.errors or [])
        for message in outcome.errors:
            errors = _merge_errors(errors, message)
        row.errors = errors
        row.status = outcome.status
        row.completed_at = utcnow()
        row.lease_owner = None
        row.lease_until = None
        session.execute(delete(BatchResult).where(BatchResult.job_id == job_id))
    return True


def discard_results(db: Database, job_id: str) -> None:
    with db.writing() as session:
        session.execute(delete(BatchResult).where(BatchResult.job_id == job_id))
