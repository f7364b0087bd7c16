"""``/v1/files``: upload (multipart, streamed to disk), list, retrieve, download, delete,
and signed download links (``/url``, served keyless at ``/signed``: ``files.signed_url``).

The upload is parsed as it arrives (``levant.files.multipart``): the file part goes
straight into a partial file in the FileStore, hashed and counted on the way, and
becomes a content-addressed blob only once complete; a file over
``LEVANT_MAX_FILE_BYTES`` is a 413 that leaves neither blob nor row. The route has
its own body limit in ``BodyLimitMiddleware`` (``upload_body_limit``). Every file
belongs to its workspace: another workspace's id is a 404, like a missing one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from datetime import timedelta
from mimetypes import guess_type
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.orm import Session

from levant.access.policy import workspace_residency
from levant.access.principal import Principal, Scopes
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.schemas.files import (
    PURPOSES,
    STORED_PURPOSES,
    VISIBILITIES,
    FilePurpose,
    SampleType,
    Source,
    file_wire,
)
from levant.api.state import AppState
from levant.api.stateful import StatefulPrincipalDep
from levant.config import Settings
from levant.db.file_tables import StoredFile
from levant.db.types import utcnow
from levant.files import records
from levant.files import signed_url as signed_url_mod
from levant.files.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)
from levant.files.store import BlobWriter, FileStore, TooLarge, file_store

router = APIRouter()

UPLOAD_PATH = "/v1/files"
FORM_OVERHEAD = 1024 * 1024
"""Room in the upload's body limit for the multipart framing and the other fields."""
MAX_FIELD_BYTES = 64 * 1024
WRITE_BYTES = 256 * 1024
"""File data is handed to a worker thread in pieces of about this size."""
MAX_EXPIRY_HOURS = 24 * 365
MAX_URL_EXPIRY_HOURS = 168
"""Longest lifetime of a signed download link (Mistral's SDK documents 1 to 168 hours)."""


def _now() -> float:
    """The clock signed links are issued and checked by (tests move it)."""
    return time.time()


def upload_body_limit(settings: Settings) -> int:
    """The body limit for ``POST /v1/files`` (the file limit plus the form's framing)."""
    return settings.max_file_bytes + FORM_OVERHEAD


def _not_found(file_id: str) -> APIError:
    return APIError(
        404,
        f"File '{file_id}' not found",
        type="not_found_error",
        param="file_id",
        code="file_not_found",
    )


def _store(state: AppState) -> FileStore:
    return file_store(state.settings.home)


class _Upload:
    """What the multipart body carried: the file (in a writer) and the other fields."""

    def __init__(self, store: FileStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.writer: BlobWriter | None = None
        self.filename: str | None = None
        self.content_type: str | None = None
        self.fields: dict[str, bytearray] = {}
        self._pending = bytearray()

    async def receive(self, request: Request, boundary: bytes) -> None:
        parser = MultipartParser(boundary)
        part: PartStart | None = None
        self._pending = bytearray()
        async for chunk in request.stream():
            for event in parser.feed(chunk):
                if isinstance(event, PartStart):
                    part = event
                    if event.name == "file":
                        if self.writer is not None:
                            raise APIError(400, "Send one 'file' per upload", param="file")
                        self.writer = await asyncio.to_thread(self.store.writer, self.limit)
                        self.filename = event.filename
                        self.content_type = event.content_type
                    else:
                        self.fields[event.name] = bytearray()
                elif isinstance(event, PartData) and part is not None:
                    if part.name == "file":
                        self._pending += event.data
                        if len(self._pending) >= WRITE_BYTES:
                            await self._write()
                    else:
                        value = self.fields[part.name]
                        value += event.data
                        if len(value) > MAX_FIELD_BYTES:
                            raise APIError(
                                400, f"Form field '{part.name}' is too long", param=part.name
                            )
                elif isinstance(event, PartEnd):
                    if part is not None and part.name == "file":
                        await self._write()
                    part = None
        parser.close()

    async def _write(self) -> None:
        assert self.writer is not None
        data, self._pending = self._pending, bytearray()
        await asyncio.to_thread(self.writer.write, data)

    def field(self, name: str) -> str | None:
        value = self.fields.get(name)
        return None if value is None else value.decode("utf-8", "replace").strip()

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.discard()


def _clean_filename(raw: str | None) -> str:
    name = PureWindowsPath(PurePosixPath(raw or "").name).name.strip()
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or "upload"


def _mimetype(filename: str, declared: str | None) -> str | None:
    if filename.lower().endswith(".jsonl"):
        return "application/jsonl"
    if declared and declared.lower() != "application/octet-stream":
        return declared.split(";", 1)[0].strip()[:200]
    return guess_type(filename)[0] or declared


def _sample_type(purpose: str, head: bytes) -> str:
    """``batch_request`` for batch inputs; for fine-tuning, ``pretrain`` when the first
    line is a ``{"text": …}`` sample, else ``instruct``."""
    if purpose == "batch":
        return "batch_request"
    first = head.split(b"\n", 1)[0]
    with contextlib.suppress(ValueError):
        sample = json.loads(first)
        if isinstance(sample, dict) and "text" in sample and "messages" not in sample:
            return "pretrain"
    return "instruct"


def _form_options(upload: _Upload) -> tuple[str, str, int | None]:
    purpose = upload.field("purpose") or "fine-tune"
    if purpose not in PURPOSES:
        raise APIError(
            422,
            f"Invalid value for purpose: '{purpose}' is not one of {', '.join(PURPOSES)}",
            param="purpose",
            code="invalid_value",
        )
    if purpose not in STORED_PURPOSES:
        raise APIError(
            400,
            f"purpose '{purpose}' is not supported here (this server has no OCR endpoint); "
            f"use one of {', '.join(STORED_PURPOSES)}",
            param="purpose",
            code="unsupported_purpose",
        )
    visibility = upload.field("visibility") or "workspace"
    if visibility not in VISIBILITIES:
        raise APIError(
            422,
            f"Invalid value for visibility: '{visibility}' is not one of workspace, user",
            param="visibility",
            code="invalid_value",
        )
    expiry_raw = upload.field("expiry")
    expiry: int | None = None
    if expiry_raw:
        try:
            expiry = int(expiry_raw)
        except ValueError:
            expiry = 0
        if not 1 <= expiry <= MAX_EXPIRY_HOURS:
            raise APIError(
                422,
                f"Invalid value for expiry: hours from 1 to {MAX_EXPIRY_HOURS}",
                param="expiry",
                code="invalid_value",
            )
    return purpose, visibility, expiry


def _commit(
    state: AppState, principal: Principal, upload: _Upload, new: records.NewFile
) -> dict[str, Any]:
    """Place the blob and insert its row under the store's lock (so no concurrent delete
    of the same content removes the blob in between)."""
    assert upload.writer is not None
    store = upload.store
    with store.lock:
        sha = upload.writer.commit()
        try:
            with state.platform.db.writing() as session:
                row = records.add_file(session, principal, replace(new, sha256=sha))
                return file_wire(row)
        except BaseException:
            records.collect(state.platform.db, store, [sha])
            raise


@router.post(UPLOAD_PATH, response_model=None)
async def upload_file(
    request: Request, state: StateDep, principal: StatefulPrincipalDep
) -> JSONResponse:
    try:
        boundary = boundary_of(request.headers.get("content-type", ""))
    except MultipartError as exc:
        raise APIError(400, f"{exc}: send the file as multipart/form-data", param="file") from exc
    limit = state.settings.max_file_bytes
    upload = _Upload(_store(state), limit)
    try:
        await upload.receive(request, boundary)
        if upload.writer is None:
            raise APIError(422, "Missing required field: file", param="file", code="invalid_value")
        purpose, visibility, expiry = _form_options(upload)
    except TooLarge as exc:
        upload.discard()
        raise APIError(
            413,
            f"File exceeds the limit of {exc.limit} bytes",
            type="request_too_large",
            param="file",
            code="file_too_large",
            headers={"connection": "close"},
        ) from None
    except MultipartError as exc:
        upload.discard()
        raise APIError(400, f"Malformed multipart body: {exc}", param="file") from exc
    except BaseException:  # a refused field, a client gone mid-upload, a 413 from the middleware
        upload.discard()
        raise
    writer = upload.writer
    filename = _clean_filename(upload.filename)
    mimetype = _mimetype(filename, upload.content_type)
    jsonl = mimetype == "application/jsonl"
    new = records.NewFile(
        filename=filename,
        purpose=purpose,
        sample_type=_sample_type(purpose, writer.head),
        source="upload",
        size=writer.size,
        num_lines=writer.num_lines if jsonl else None,
        mimetype=mimetype,
        sha256="",
        visibility=visibility,
        expires_at=None if expiry is None else utcnow() + timedelta(hours=expiry),
    )
    try:
        wire = await asyncio.to_thread(_commit, state, principal, upload, new)
    finally:
        if writer.sha256 is None:
            upload.discard()
    return JSONResponse(wire)


async def _read(state: AppState, fn: Any) -> Any:
    def work() -> Any:
        with state.platform.db.reading() as session:
            return fn(session)

    return await asyncio.to_thread(work)


@router.get("/v1/files", response_model=None)
async def list_files(
    state: StateDep,
    principal: StatefulPrincipalDep,
    page: Annotated[int, Query(ge=0)] = 0,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    include_total: bool = True,
    sample_type: Annotated[list[SampleType] | None, Query()] = None,
    source: Annotated[list[Source] | None, Query()] = None,
    search: str | None = None,
    purpose: FilePurpose | None = None,
    mimetypes: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    query = records.FileQuery(
        page=page,
        page_size=page_size,
        purpose=purpose,
        sample_types=sample_type,
        sources=source,
        search=search or None,
        mimetypes=mimetypes,
    )

    def run(session: Session) -> dict[str, Any]:
        rows, total = records.list_files(session, principal, query, with_total=include_total)
        return {"data": [file_wire(r) for r in rows], "object": "list", "total": total}

    return JSONResponse(await _read(state, run))


async def _get(state: AppState, principal: Principal, file_id: str) -> StoredFile:
    try:
        row: StoredFile = await _read(state, lambda s: records.get_file(s, principal, file_id))
    except records.FileNotFound:
        raise _not_found(file_id) from None
    return row


@router.get("/v1/files/{file_id}", response_model=None)
async def retrieve_file(
    file_id: str, state: StateDep, principal: StatefulPrincipalDep
) -> JSONResponse:
    row = await _get(state, principal, file_id)
    return JSONResponse(file_wire(row, with_deleted=True))


@router.get("/v1/files/{file_id}/content", response_model=None)
async def download_file(
    file_id: str, state: StateDep, principal: StatefulPrincipalDep
) -> FileResponse:
    row = await _get(state, principal, file_id)
    return _content_response(state, row, file_id)


def _content_response(state: AppState, row: StoredFile, file_id: str) -> FileResponse:
    path = _store(state).blob_path(row.sha256)
    if not path.exists():
        raise APIError(
            500, f"The content of file '{file_id}' is missing from storage", type="internal_error"
        )
    return FileResponse(
        path,
        media_type="application/octet-stream",  # as Mistral's spec (and SDK) expect
        filename=row.filename,
    )


@router.get("/v1/files/{file_id}/url", response_model=None)
async def signed_url(
    file_id: str,
    request: Request,
    state: StateDep,
    principal: StatefulPrincipalDep,
    expiry: Annotated[int, Query(ge=1, le=MAX_URL_EXPIRY_HOURS)] = 24,
) -> JSONResponse:
    """Mistral's ``FileSignedURL``: a link that downloads the file without a key for
    ``expiry`` hours (1 to 168)."""
    await _get(state, principal, file_id)
    link = signed_url_mod.FileLink(
        file_id=file_id,
        workspace_id=principal.workspace_id,
        key_id=principal.key_id,
        expires=int(_now()) + expiry * 3600,
    )
    query = urlencode(
        {
            "workspace": link.workspace_id,
            "key": link.key_id,
            "expires": link.expires,
            "signature": signed_url_mod.sign(state.platform.secret, link),
        }
    )
    url = str(request.url_for("download_signed", file_id=file_id))
    return JSONResponse({"url": f"{url}?{query}"})


@router.get("/v1/files/{file_id}/signed", response_model=None, name="download_signed")
async def download_signed(
    file_id: str,
    state: StateDep,
    workspace: str,
    key: str,
    expires: int,
    signature: str,
) -> FileResponse:
    """The content behind a signed link: no API key, the link is the credential. A link
    altered or expired is a 403; a file since deleted (or expired) a 404; a workspace
    since switched to zero retention is refused like every file route."""
    link = signed_url_mod.FileLink(file_id, workspace, key, expires)
    try:
        signed_url_mod.verify(state.platform.secret, link, signature, _now())
    except signed_url_mod.ExpiredLink:
        raise APIError(
            403, "This download link has expired", type="permission_error", code="url_expired"
        ) from None
    except signed_url_mod.BadLink:
        raise APIError(
            403,
            "This download link is not valid (bad signature)",
            type="permission_error",
            code="invalid_signature",
        ) from None

    def lookup(session: Session) -> tuple[bool, StoredFile | None]:
        residency = workspace_residency(session, workspace, state.gateway.regions)
        who = Principal(workspace_id=workspace, key_id=key, scopes=Scopes(), residency=residency)
        if who.zero_retention:
            return True, None
        try:
            return False, records.get_file(session, who, file_id)
        except records.FileNotFound:
            return False, None

    zero, row = await _read(state, lookup)
    if zero:
        raise APIError(
            403,
            "This workspace has zero retention: files are not available to it",
            type="permission_error",
            code="zero_retention",
        )
    if row is None:
        raise _not_found(file_id)
    return _content_response(state, row, file_id)


@router.delete("/v1/files/{file_id}", response_model=None)
async def delete_file(
    file_id: str, state: StateDep, principal: StatefulPrincipalDep
) -> JSONResponse:
    db = state.platform.db
    store = _store(state)

    def run() -> None:
        with db.writing() as session:
            sha = records.delete_file(session, principal, file_id)
        records.collect(db, store, [sha])

    try:
        await asyncio.to_thread(run)
    except records.FileNotFound:
        raise _not_found(file_id) from None
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
