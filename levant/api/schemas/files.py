"""Wire shapes of ``/v1/files`` (Mistral's ``UploadFileOut``, ``ListFilesOut``,
``RetrieveFileOut``, ``DeleteFileOut``). The upload's multipart fields are read by
the route itself (it streams the file to disk), so only the enums live here."""

from __future__ import annotations

from typing import Any, Literal

from levant.db.file_tables import StoredFile

FilePurpose = Literal["fine-tune", "batch", "ocr"]
SampleType = Literal["pretrain", "instruct", "batch_request", "batch_result", "batch_error"]
Source = Literal["upload", "repository", "mistral"]
Visibility = Literal["workspace", "user"]

PURPOSES: tuple[str, ...] = ("fine-tune", "batch", "ocr")
STORED_PURPOSES: tuple[str, ...] = ("fine-tune", "batch")
"""Purposes Levant stores files for (it has no OCR endpoint to read ``ocr`` files)."""
VISIBILITIES: tuple[str, ...] = ("workspace", "user")


def _ts(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def file_wire(row: StoredFile, *, with_deleted: bool = False) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": _ts(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "sample_type": row.sample_type,
        "source": row.source,
        "num_lines": row.num_lines,
        "mimetype": row.mimetype,
        "signature": row.sha256[:16],
        "expires_at": _ts(row.expires_at),
        "visibility": row.visibility,
    }
    if with_deleted:
        wire["deleted"] = False
    return wire
