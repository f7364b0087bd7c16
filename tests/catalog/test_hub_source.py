"""The Hugging Face Hub source, run through huggingface_hub's real code, no network.

The fixture lays out a Hub cache the way huggingface_hub writes one
(``models--org--name/{blobs,refs,snapshots}``); the fetcher resolves files in
it with ``local_files_only=True``, exactly as it does for a user's own cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from levant.catalog.card import HubSource, ModelCard
from levant.catalog.pull import PullFailed, pull
from levant.catalog.sources import FetchOptions, HubFetcher, SourceUnavailable
from levant.catalog.store import ModelStore, file_sha256
from levant.config import Settings
from tests.catalog.conftest import Recorder, TinyModel, leftovers

REPO = "levant-test/tiny-GGUF"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REMOTE_NAME = "tiny.Q4_1.gguf"


def _hub_cache(root: Path, tiny: TinyModel) -> Path:
    """``root`` laid out like HF_HUB_CACHE holding REPO@main with one file."""
    repo = root / ("models--" + REPO.replace("/", "--"))
    blob = repo / "blobs" / tiny.file.sha256
    tiny.write(blob)
    snapshot = repo / "snapshots" / COMMIT / REMOTE_NAME
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("..", "..", "blobs", tiny.file.sha256))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)  # no newline: huggingface_hub reads it raw
    return root


def _source(revision: str = "main") -> HubSource:
    return HubSource(repo_id=REPO, revision=revision, filenames={"model.gguf": REMOTE_NAME})


def _card(tiny: TinyModel, revision: str = "main") -> ModelCard:
    return tiny.card(_source(revision))


@pytest.mark.parametrize("revision", ["main", COMMIT])
def test_pull_from_the_hub_cache_offline(
    settings: Settings, tiny: TinyModel, tmp_path: Path, recorder: Recorder, revision: str
) -> None:
    cache = _hub_cache(tmp_path / "hf-cache", tiny)
    store = ModelStore(settings.model_copy(update={"offline": True}))
    card = _card(tiny, revision)

    directory = pull(card, store, progress=recorder, options=FetchOptions(hf_cache_dir=cache))

    assert file_sha256(directory / "model.gguf") == tiny.file.sha256
    assert any("found in the Hugging Face cache" in note for note in recorder.notes)
    # The user's HF cache is copied from, never moved out of.
    assert (cache / f"models--levant-test--tiny-GGUF/snapshots/{COMMIT}/{REMOTE_NAME}").exists()


def test_offline_and_not_cached_is_refused_with_the_reason(
    settings: Settings, tiny: TinyModel, tmp_path: Path
) -> None:
    store = ModelStore(settings.model_copy(update={"offline": True}))
    options = FetchOptions(hf_cache_dir=tmp_path / "empty-cache")
    with pytest.raises(PullFailed) as info:
        pull(_card(tiny), store, options=options)
    assert "offline mode (LEVANT_OFFLINE) is on" in str(info.value)
    assert f"{REMOTE_NAME} is not in the local Hugging Face cache" in str(info.value)
    assert leftovers(store.settings.home) == []


def test_hub_unreachable_is_a_clear_error(
    settings: Settings, tiny: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub's own offline switch stands in for a dead network: no request leaves."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    fetcher = HubFetcher(_source(), settings, FetchOptions(hf_cache_dir=tmp_path / "c"))
    with pytest.raises(
        SourceUnavailable, match=r"^Hugging Face Hub unreachable: .*offline mode is enabled"
    ):
        fetcher.fetch(_card(tiny), tiny.file, tmp_path / "dest", Recorder([], []))
    fetcher.cleanup()
    assert not (settings.home / "tmp" / "hf").exists() or not any(
        (settings.home / "tmp" / "hf").iterdir()
    )
