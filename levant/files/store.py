"""FileStore: the bodies of ``/v1/files`` uploads and batch outputs, addressed by sha256.

Layout under ``settings.home`` (apart from the model store's ``blobs/``, so deleting a
file can never take a model weight with it)::

    files/sha256/<hex>        one read-only file per distinct content
    files/tmp/<uuid>.partial  an upload or batch output being written

A body is streamed into a partial while its size, sha256 and line count are taken,
and only renamed to its blob once complete: a refused (413) or broken upload leaves
nothing behind but a partial that ``discard`` (or the start-up sweep) deletes.
Which blobs are still referenced is the database's business (``levant.files.records``);
the store only holds bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

HEAD_BYTES = 64 * 1024
"""How much of a body's start ``BlobWriter.head`` keeps (to sniff JSONL sample types)."""


class TooLarge(ValueError):
    """The body went past its size limit; what was written has been discarded."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"File exceeds the limit of {limit} bytes")
        self.limit = limit


class BlobWriter:
    """One body being written: ``write`` chunks, then ``commit`` (→ sha256) or ``discard``."""

    def __init__(self, store: FileStore, limit: int | None) -> None:
        self.store = store
        self.limit = limit
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.partial = store.tmp_dir / f"{uuid.uuid4().hex}.partial"
        self._fh: BinaryIO | None = self.partial.open("xb")
        self._digest = hashlib.sha256()
        self.size = 0
        self.newlines = 0
        self.head = b""
        self._last = b""
        self.sha256: str | None = None

    @property
    def num_lines(self) -> int:
        """Lines of text, counting a last line without its newline."""
        return self.newlines + (1 if self._last and self._last != b"\n" else 0)

    def write(self, data: bytes | bytearray) -> None:
        if self._fh is None:
            raise ValueError("blob writer is closed")
        if not data:
            return
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            self.discard()
            raise TooLarge(self.limit)
        self._fh.write(data)
        self._digest.update(data)
        self.newlines += data.count(b"\n")
        self._last = bytes(data[-1:])
        if len(self.head) < HEAD_BYTES:
            self.head += bytes(data[: HEAD_BYTES - len(self.head)])

    def commit(self) -> str:
        """Move the body into place as its blob; returns its sha256."""
        if self._fh is None:
            raise ValueError("blob writer is closed")
        fh, self._fh = self._fh, None
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        digest = self._digest.hexdigest()
        blob = self.store.blob_path(digest)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with self.store.lock:
            if blob.exists():  # same content already stored: keep the one blob
                self.partial.unlink(missing_ok=True)
            else:
                self.partial.chmod(stat.S_IRUSR | stat.S_IRGRP)
                os.replace(self.partial, blob)
        self.sha256 = digest
        return digest

    def discard(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sha256 is None:
            self.discard()


_STORES: dict[Path, FileStore] = {}
_STORES_LOCK = threading.Lock()


def file_store(home: Path) -> FileStore:
    """The process's one FileStore for ``home`` (one lock per store, shared by the routes
    and the batch runner)."""
    key = home.resolve()
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = FileStore(key)
        return store


class FileStore:
    def __init__(self, home: Path) -> None:
        self.root = home / "files"
        self.blobs_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.lock = threading.RLock()
        """Held while a blob is placed or removed, and by callers that decide, from the
        database, that a blob is unreferenced and remove it (so an upload of the same
        content cannot land in between)."""

    def blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        return self.blobs_dir / sha256

    def writer(self, limit: int | None = None) -> BlobWriter:
        return BlobWriter(self, limit)

    def put_bytes(self, data: bytes) -> tuple[str, int, int]:
        """Store ``data``; (sha256, size, lines)."""
        with self.writer() as w:
            w.write(data)
            w.commit()
            return w.sha256 or "", w.size, w.num_lines

    @contextlib.contextmanager
    def open(self, sha256: str) -> Iterator[BinaryIO]:
        with self.blob_path(sha256).open("rb") as fh:
            yield fh

    def remove(self, sha256: str) -> None:
        with self.lock:
            self.blob_path(sha256).unlink(missing_ok=True)

    def sweep_partials(self, older_than_s: float = 24 * 3600) -> int:
        """Delete partials left by a process that died mid-write; returns how many."""
        cutoff = time.time() - older_than_s
        gone = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.tmp_dir.iterdir():
                with contextlib.suppress(OSError):
                    if path.suffix == ".partial" and path.stat().st_mtime < cutoff:
                        path.unlink()
                        gone += 1
        return gone
