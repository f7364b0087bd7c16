"""ModelStore: model weights on disk, addressed by their sha256.

Layout under ``settings.home`` (blobs sit beside ``models/`` rather than in it,
so no model id can collide with them)::

    blobs/sha256/<hex>               one read-only file per distinct content
    tmp/<hex>.partial                a transfer in progress; may be resumed
    models/<model-id>/<file path>    hard link to the blob (else symlink, else copy)
    models/<model-id>/manifest.json  written last; the model is complete when it
                                     exists, matches the card and every file is there

Invariant: nothing becomes a blob until its size and sha256 match the card;
a bad transfer is deleted, never renamed into place. The store does no network
I/O and knows nothing about sources (see ``sources.py``) or the CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from levant.catalog.card import ModelCard, WeightFile
from levant.config import Settings

MANIFEST = "manifest.json"
CHUNK = 1024 * 1024

OnBytes = Callable[[int], None]


class ChecksumMismatch(ValueError):
    """Transferred bytes do not match the card; the transfer was discarded."""

    def __init__(self, file: WeightFile, *, size: int, sha256: str | None) -> None:
        self.file = file
        if size != file.size:
            detail = f"expected {file.size} bytes, got {size}"
        else:
            detail = f"expected sha256 {file.sha256}, got {sha256}"
        super().__init__(f"{file.path}: checksum mismatch ({detail}); the download was discarded")


def file_sha256(path: Path, on_bytes: OnBytes | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


class ModelStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.blobs_dir = settings.home / "blobs" / "sha256"
        self.tmp_dir = settings.home / "tmp"
        self.models_dir = settings.models_dir

    # -- where things are -------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        return self.blobs_dir / sha256

    def model_dir(self, card: ModelCard) -> Path:
        """Where ``card``'s files go (whether or not they are there)."""
        return self.models_dir / _safe_name(card.id)

    def file_path(self, card: ModelCard, file: WeightFile) -> Path:
        return self.model_dir(card) / _safe_relpath(file.path)

    def partial_path(self, file: WeightFile) -> Path:
        """Staging file for ``file``; keyed by content, so any source may resume it."""
        return self.tmp_dir / f"{self.blob_path(file.sha256).name}.partial"

    # -- state ----------------------------------------------------------------------

    def path(self, card: ModelCard) -> Path | None:
        """The model directory if the pull completed and every file is present.

        Cheap (a manifest read and one ``stat`` per file), so safe to call per
        request; :meth:`verify` re-hashes.
        """
        directory = self.model_dir(card)
        manifest = _read_manifest(directory / MANIFEST)
        if manifest is None or manifest.get("id") != card.id:
            return None
        if _manifest_files(manifest) != _card_files(card):
            return None
        for file in card.files:
            try:
                if os.stat(self.file_path(card, file)).st_size != file.size:
                    return None
            except OSError:
                return None
        return directory

    def is_pulled(self, card: ModelCard) -> bool:
        return self.path(card) is not None

    def verify(self, card: ModelCard, on_bytes: OnBytes | None = None) -> list[str]:
        """Problems with the pulled copy of ``card`` (empty when it is intact); re-hashes."""
        directory = self.model_dir(card)
        manifest = _read_manifest(directory / MANIFEST)
        problems: list[str] = []
        if manifest is None:
            problems.append(f"{card.id}: not pulled (no readable {MANIFEST} in {directory})")
        elif _manifest_files(manifest) != _card_files(card):
            problems.append(f"{card.id}: {MANIFEST} does not match the catalogue's files")
        for file in card.files:
            path = self.file_path(card, file)
            if not path.exists():
                problems.append(f"{file.path}: missing")
                continue
            size = path.stat().st_size
            if size != file.size:
                problems.append(f"{file.path}: size {size}, expected {file.size}")
                continue
            digest = file_sha256(path, on_bytes)
            if digest != file.sha256:
                problems.append(f"{file.path}: sha256 {digest}, expected {file.sha256}")
        return problems

    def has_blob(self, file: WeightFile, *, rehash: bool = False) -> bool:
        blob = self.blob_path(file.sha256)
        try:
            if blob.stat().st_size != file.size:
                return False
        except OSError:
            return False
        return not rehash or file_sha256(blob) == file.sha256

    # -- writing --------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, file: WeightFile) -> Iterator[Path]:
        """Hold the exclusive right to write ``file``'s partial; yields its path.

        Two pulls of the same content serialise here instead of appending to
        one partial file together.
        """
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        partial = self.partial_path(file)
        with _exclusive_lock(partial.with_suffix(".lock")):
            yield partial

    def commit(self, file: WeightFile, partial: Path, on_bytes: OnBytes | None = None) -> Path:
        """Verify ``partial`` and rename it to its blob; on mismatch delete it and raise."""
        size = partial.stat().st_size
        digest = file_sha256(partial, on_bytes) if size == file.size else None
        if digest != file.sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(file, size=size, sha256=digest)
        blob = self.blob_path(file.sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        # Blobs are shared by hard links: read-only so nobody edits every copy at once.
        partial.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(partial, blob)
        return blob

    def link(self, card: ModelCard, file: WeightFile) -> Path:
        """Place the (committed) blob at its path in the model directory."""
        blob = self.blob_path(file.sha256)
        dest = self.file_path(card, file)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if os.path.samefile(blob, dest):
                return dest
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(blob, tmp)
        except OSError:
            try:
                tmp.symlink_to(blob)
            except OSError:
                shutil.copyfile(blob, tmp)
        os.replace(tmp, dest)
        return dest

    def finalize(self, card: ModelCard) -> Path:
        """Write the manifest (atomically) once every file is linked; returns the model dir."""
        directory = self.model_dir(card)
        manifest = {
            "id": card.id,
            "format": card.format,
            "files": [f.model_dump(include={"path", "sha256", "size"}) for f in card.files],
            "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, directory / MANIFEST)
        return directory

    def install(
        self,
        card: ModelCard,
        file: WeightFile,
        source_path: Path,
        on_bytes: OnBytes | None = None,
    ) -> Path:
        """Copy ``source_path`` in as ``file`` of ``card`` (verified); returns the model's file.

        Does not write the manifest: call :meth:`finalize` once all files are in.
        """
        with self.staging(file) as partial:
            with source_path.open("rb") as src, partial.open("wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            self.commit(file, partial)
        return self.link(card, file)


def _safe_name(model_id: str) -> str:
    if not model_id or model_id in {".", ".."} or "/" in model_id or "\\" in model_id:
        raise ValueError(f"model id {model_id!r} cannot name a directory")
    return model_id


def _safe_relpath(path: str) -> Path:
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or ".." in pure.parts or path == MANIFEST:
        raise ValueError(f"weight file path {path!r} must be relative, inside the model directory")
    return Path(*pure.parts)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _card_files(card: ModelCard) -> set[tuple[str, str, int]]:
    return {(f.path, f.sha256, f.size) for f in card.files}


def _manifest_files(manifest: dict[str, Any]) -> set[tuple[str, str, int]] | None:
    try:
        return {(f["path"], f["sha256"], int(f["size"])) for f in manifest["files"]}
    except (KeyError, TypeError, ValueError):
        return None


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a+b") as fh:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield
