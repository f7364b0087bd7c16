"""Export an open-weight model: its files, a SHA256SUMS list and the licence it comes under.

Commercial-track models are refused before any byte is copied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from levant.access.policy import check_exportable
from levant.catalog.card import ModelCard
from levant.catalog.store import ChecksumMismatch, ModelStore, file_sha256


class NotPulled(LookupError):
    pass


def licence_text(card: ModelCard) -> str:
    lines = [f"{card.name} ({card.id})", f"Licence: {card.licence}"]
    if card.licence_url:
        lines.append(f"Full text: {card.licence_url}")
    return "\n".join(lines) + "\n"


def sha256sums(card: ModelCard) -> str:
    return "".join(f"{f.sha256}  {f.path}\n" for f in card.files)


def export(card: ModelCard, store: ModelStore, dest: Path) -> list[Path]:
    """Copy the model's files into ``dest`` (verified), with LICENCE and SHA256SUMS."""
    check_exportable(card)
    source = store.path(card)
    if source is None:
        raise NotPulled(f"Model '{card.id}' is not pulled; run `levant pull {card.id}` first")
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file in card.files:
        target = dest / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.file_path(card, file), target)
        digest = file_sha256(target)
        if digest != file.sha256:  # the store was tampered with or the disk is failing
            size = target.stat().st_size
            target.unlink()
            raise ChecksumMismatch(file, size=size, sha256=digest)
        written.append(target)
    for name, text in (("LICENCE.txt", licence_text(card)), ("SHA256SUMS", sha256sums(card))):
        (dest / name).write_text(text)
        written.append(dest / name)
    return written
