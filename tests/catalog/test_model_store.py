"""ModelStore: blobs by sha256, model dirs linking to them, manifests, verification."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from levant.catalog.card import WeightFile
from levant.catalog.store import ChecksumMismatch, ModelStore
from tests.catalog.conftest import TinyModel, leftovers


def test_install_links_a_verified_blob(store: ModelStore, tiny: TinyModel, tmp_path: Path) -> None:
    card = tiny.card()
    source = tiny.write(tmp_path / "src" / "weights.bin")
    assert store.path(card) is None and not store.is_pulled(card)

    model_file = store.install(card, tiny.file, source)
    directory = store.finalize(card)

    blob = store.blob_path(tiny.file.sha256)
    assert blob == store.settings.home / "blobs" / "sha256" / tiny.file.sha256
    assert model_file == store.settings.models_dir / "tiny" / "model.gguf"
    assert os.path.samefile(model_file, blob) and model_file.read_bytes() == tiny.data
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0  # read-only (root ignores modes)
    assert store.path(card) == directory and store.is_pulled(card)
    assert store.verify(card) == []
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["id"] == "tiny" and manifest["pulled_at"]
    assert manifest["files"] == [
        {"path": "model.gguf", "sha256": tiny.file.sha256, "size": tiny.file.size}
    ]
    assert list(store.tmp_dir.glob("*.partial")) == []


def test_checksum_mismatch_is_refused_and_leaves_nothing(
    store: ModelStore, tiny: TinyModel, tmp_path: Path
) -> None:
    card = tiny.card()
    wrong = bytearray(tiny.data)
    wrong[-1] ^= 0xFF  # same size, different content
    source = tiny.write(tmp_path / "src" / "weights.bin", bytes(wrong))

    with pytest.raises(ChecksumMismatch, match=r"model.gguf: checksum mismatch \(expected sha256"):
        store.install(card, tiny.file, source)

    assert leftovers(store.settings.home) == []
    assert not store.blob_path(tiny.file.sha256).exists()
    assert not store.has_blob(tiny.file)


def test_size_mismatch_message(store: ModelStore, tiny: TinyModel, tmp_path: Path) -> None:
    source = tiny.write(tmp_path / "short.bin", tiny.data[:10])
    with pytest.raises(ChecksumMismatch, match=f"expected {tiny.file.size} bytes, got 10"):
        store.install(tiny.card(), tiny.file, source)
    assert leftovers(store.settings.home) == []


def test_path_needs_a_manifest_matching_the_card(
    store: ModelStore, tiny: TinyModel, tmp_path: Path
) -> None:
    card = tiny.card()
    store.install(card, tiny.file, tiny.write(tmp_path / "w.bin"))
    assert store.path(card) is None, "no manifest yet: the pull did not finish"
    store.finalize(card)
    other = WeightFile(path="model.gguf", sha256="1" * 64, size=tiny.file.size)
    assert store.path(card.model_copy(update={"files": [other]})) is None
    (store.model_dir(card) / "model.gguf").unlink()
    assert store.path(card) is None


def test_verify_rehashes_and_reports(store: ModelStore, tiny: TinyModel, tmp_path: Path) -> None:
    card = tiny.card()
    store.install(card, tiny.file, tiny.write(tmp_path / "w.bin"))
    store.finalize(card)
    model_file = store.model_dir(card) / "model.gguf"
    model_file.chmod(0o644)
    with model_file.open("r+b") as fh:  # same size, so the cheap check still passes
        fh.write(b"\0" * 16)
    assert store.is_pulled(card)
    [problem] = store.verify(card)
    assert problem.startswith("model.gguf: sha256 ") and tiny.file.sha256 in problem


def test_unsafe_paths_are_refused(store: ModelStore, tiny: TinyModel) -> None:
    with pytest.raises(ValueError, match="must be relative"):
        store.file_path(tiny.card(), WeightFile(path="../escape", sha256="0" * 64, size=1))
    with pytest.raises(ValueError, match="cannot name a directory"):
        store.model_dir(tiny.card(model_id="a/b"))
    with pytest.raises(ValueError, match="sha256"):
        store.blob_path("../../etc/passwd")
