"""Files in the database, always scoped to the caller's workspace.

Every lookup takes the principal and treats another workspace's file (or a
``user``-visibility file of another key, or an expired one) exactly like a
missing one. A blob is removed only when no file row and no unfinished batch
job refers to it any more (``collect``), decided under the store's lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from levant.access.principal import Principal
from levant.db.file_tables import BatchJob, StoredFile
from levant.db.session import Database
from levant.db.types import utcnow
from levant.files.store import FileStore

FINISHED = ("SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED")


class FileNotFound(LookupError):
    pass


def owner_key(principal: Principal) -> str | None:
    """The key id recorded as a file's or job's owner (None when auth is off)."""
    return None if principal.key_id == "anonymous" else principal.key_id


def visible_to(principal: Principal, now: datetime | None = None) -> ColumnElement[bool]:
    now = now or utcnow()
    return and_(
        StoredFile.workspace_id == principal.workspace_id,
        or_(StoredFile.visibility == "workspace", StoredFile.key_id == owner_key(principal)),
        or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > now),
    )


@dataclass(frozen=True, slots=True)
class NewFile:
    filename: str
    purpose: str
    sample_type: str
    source: str
    size: int
    num_lines: int | None
    mimetype: str | None
    sha256: str
    visibility: str = "workspace"
    expires_at: datetime | None = None


def add_file(session: Session, principal: Principal, new: NewFile) -> StoredFile:
    row = StoredFile(
        id=str(uuid.uuid4()),
        workspace_id=principal.workspace_id,
        key_id=owner_key(principal),
        filename=new.filename,
        purpose=new.purpose,
        sample_type=new.sample_type,
        source=new.source,
        bytes=new.size,
        num_lines=new.num_lines,
        mimetype=new.mimetype,
        sha256=new.sha256,
        visibility=new.visibility,
        created_at=utcnow(),
        expires_at=new.expires_at,
    )
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, principal: Principal, file_id: str) -> StoredFile:
    row = session.scalars(
        select(StoredFile).where(StoredFile.id == file_id, visible_to(principal))
    ).one_or_none()
    if row is None:
        raise FileNotFound(file_id)
    return row


@dataclass(frozen=True, slots=True)
class FileQuery:
    page: int = 0
    page_size: int = 100
    purpose: str | None = None
    sample_types: Sequence[str] | None = None
    sources: Sequence[str] | None = None
    search: str | None = None
    mimetypes: Sequence[str] | None = None


def list_files(
    session: Session, principal: Principal, query: FileQuery, *, with_total: bool = True
) -> tuple[list[StoredFile], int | None]:
    """One page of the caller's files, newest first, and how many match in all."""
    where = [visible_to(principal)]
    if query.purpose is not None:
        where.append(StoredFile.purpose == query.purpose)
    if query.sample_types:
        where.append(StoredFile.sample_type.in_(list(query.sample_types)))
    if query.sources:
        where.append(StoredFile.source.in_(list(query.sources)))
    if query.mimetypes:
        where.append(StoredFile.mimetype.in_(list(query.mimetypes)))
    if query.search:
        where.append(
            func.lower(StoredFile.filename).contains(query.search.lower(), autoescape=True)
        )
    rows = session.scalars(
        select(StoredFile)
        .where(*where)
        .order_by(StoredFile.created_at.desc(), StoredFile.id)
        .offset(query.page * query.page_size)
        .limit(query.page_size)
    ).all()
    total = None
    if with_total:
        total = session.scalar(select(func.count()).select_from(StoredFile).where(*where)) or 0
    return list(rows), total


def delete_file(session: Session, principal: Principal, file_id: str) -> str:
    """Delete the row; returns the blob's sha256 (for ``collect`` after the commit)."""
    row = get_file(session, principal, file_id)
    session.delete(row)
    session.flush()
    return row.sha256


def referenced(session: Session, sha256: str) -> bool:
    """Whether a file row or an unfinished batch job still needs this blob."""
    by_file = exists().where(StoredFile.sha256 == sha256)
    by_job = exists().where(BatchJob.input_sha256 == sha256, BatchJob.status.not_in(FINISHED))
    return bool(session.scalar(select(or_(by_file, by_job))))


def collect(db: Database, store: FileStore, sha256s: Sequence[str]) -> int:
    """Remove the blobs among ``sha256s`` that nothing refers to any more; how many."""
    gone = 0
    with store.lock:
        for sha in dict.fromkeys(sha256s):
            with db.reading() as session:
                if referenced(session, sha):
                    continue
            store.remove(sha)
            gone += 1
    return gone


def purge_expired(db: Database, store: FileStore, now: datetime | None = None) -> int:
    """Delete files past their ``expires_at`` (rows, then unreferenced blobs)."""
    now = now or utcnow()
    with db.writing() as session:
        expired = session.scalars(
            select(StoredFile.sha256).where(StoredFile.expires_at <= now)
        ).all()
        if not expired:
            return 0
        session.execute(delete(StoredFile).where(StoredFile.expires_at <= now))
    collect(db, store, list(expired))
    return len(expired)
