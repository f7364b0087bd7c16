"""pull() from local sources: verification, idempotence, source order, interrupted pulls."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from levant.catalog.card import LocalSource
from levant.catalog.pull import PullFailed, pull
from levant.catalog.store import ModelStore, file_sha256
from tests.catalog.conftest import Recorder, TinyModel, leftovers


def test_pull_from_a_directory(store: ModelStore, tiny: TinyModel, tmp_path: Path) -> None:
    tiny.write(tmp_path / "mirror" / "model.gguf")
    card = tiny.card(LocalSource(path=str(tmp_path / "mirror")))
    directory = pull(card, store)
    assert directory == store.model_dir(card) == store.path(card)
    assert file_sha256(directory / "model.gguf") == tiny.file.sha256
    assert store.verify(card) == []


def test_pull_is_idempotent(
    store: ModelStore, tiny: TinyModel, tmp_path: Path, recorder: Recorder
) -> None:
    source = tiny.write(tmp_path / "w.bin")
    card = tiny.card(LocalSource(path=str(source)))
    first = pull(card, store)
    source.unlink()  # a second pull must not need the source
    assert pull(card, store, progress=recorder) == first
    assert recorder.begins == [] and recorder.notes == []


def test_extra_sources_go_first_and_failures_fall_through(
    store: ModelStore, tiny: TinyModel, tmp_path: Path, recorder: Recorder
) -> None:
    good = tiny.write(tmp_path / "good.bin")
    card = tiny.card(LocalSource(path=str(good)))
    pull(card, store, extra_sources=[LocalSource(path=str(tmp_path / "absent"))], progress=recorder)
    assert store.is_pulled(card)
    assert any("absent does not exist" in note for note in recorder.notes)


def test_all_sources_failing_lists_each_reason(
    store: ModelStore, tiny: TinyModel, tmp_path: Path
) -> None:
    short = tiny.write(tmp_path / "short.bin", tiny.data[:100])
    wrong = tiny.write(tmp_path / "wrong" / "model.gguf", bytes(len(tiny.data)))
    card = tiny.card(
        LocalSource(path=str(tmp_path / "absent")),
        LocalSource(path=str(short)),
        LocalSource(path=str(wrong.parent)),
    )
    with pytest.raises(PullFailed) as info:
        pull(card, store)
    message = str(info.value)
    assert message.startswith("Cannot pull tiny (model.gguf) from any source:")
    assert "absent does not exist" in message
    assert "is 100 bytes, the catalogue says" in message
    assert "checksum mismatch (expected sha256" in message
    assert len(info.value.reasons) == 3
    assert "local file " in info.value.reasons[1]
    assert leftovers(store.settings.home) == []  # no partial, blob or model file
    assert not store.model_dir(card).exists()


def test_no_sources(store: ModelStore, tiny: TinyModel) -> None:
    with pytest.raises(PullFailed, match="lists no source"):
        pull(tiny.card(), store)


def _seed_partial(store: ModelStore, tiny: TinyModel, data: bytes) -> Path:
    partial = store.partial_path(tiny.file)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(data)
    return partial


def test_interrupted_pull_resumes(
    store: ModelStore, tiny: TinyModel, tmp_path: Path, recorder: Recorder
) -> None:
    """A partial file left by a killed pull holding a correct prefix is extended, not redone."""
    kept = 1024 * 1024 + 7
    partial = _seed_partial(store, tiny, tiny.data[:kept])
    card = tiny.card(LocalSource(path=str(tiny.write(tmp_path / "w.bin"))))

    directory = pull(card, store, progress=recorder)

    assert hashlib.sha256((directory / "model.gguf").read_bytes()).hexdigest() == tiny.file.sha256
    assert not partial.exists()
    assert ("model.gguf ← w.bin", tiny.file.size, kept) in recorder.begins
    assert any(f"resuming model.gguf at byte {kept}" in note for note in recorder.notes)


@pytest.mark.parametrize("seed", ["garbage prefix", "too long"])
def test_interrupted_pull_with_bad_partial_restarts_cleanly(
    store: ModelStore, tiny: TinyModel, tmp_path: Path, recorder: Recorder, seed: str
) -> None:
    data = b"\xff" * 4096 if seed == "garbage prefix" else tiny.data + b"extra"
    _seed_partial(store, tiny, data)
    card = tiny.card(LocalSource(path=str(tiny.write(tmp_path / "w.bin"))))

    directory = pull(card, store, progress=recorder)

    assert file_sha256(directory / "model.gguf") == tiny.file.sha256
    assert store.verify(card) == []
    assert list(store.tmp_dir.glob("*.partial")) == []
    if seed == "garbage prefix":
        assert any("resumed transfer did not verify; restarting" in n for n in recorder.notes)


def test_verify_repairs_a_damaged_copy(store: ModelStore, tiny: TinyModel, tmp_path: Path) -> None:
    card = tiny.card(LocalSource(path=str(tiny.write(tmp_path / "w.bin"))))
    directory = pull(card, store)
    model_file = directory / "model.gguf"
    model_file.chmod(0o644)
    with model_file.open("r+b") as fh:
        fh.write(b"\0" * 16)
    assert store.verify(card) != []
    assert pull(card, store) == directory, "the cheap check does not notice"
    pull(card, store, verify=True)
    assert store.verify(card) == []


def test_a_blob_shared_by_two_models_is_fetched_once(
    store: ModelStore, tiny: TinyModel, tmp_path: Path
) -> None:
    source = tiny.write(tmp_path / "w.bin")
    pull(tiny.card(LocalSource(path=str(source)), model_id="one"), store)
    source.unlink()
    second = tiny.card(LocalSource(path=str(source)), model_id="two")
    assert pull(second, store) == store.model_dir(second)
    assert store.verify(second) == []
