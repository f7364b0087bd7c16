"""Fixtures for the catalogue, store and source tests: a throwaway home and a tiny model.

Every test gets its own ``LEVANT_HOME`` under ``tmp_path``; nothing touches ~/.levant.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from levant.catalog.card import ModelCard, Source, WeightFile
from levant.catalog.store import ModelStore
from levant.config import Settings


@dataclass
class Recorder:
    """A Progress that remembers what it was told."""

    begins: list[tuple[str, int | None, int]]
    notes: list[str]
    advanced: int = 0

    def begin(self, description: str, total: int | None, completed: int = 0) -> None:
        self.begins.append((description, total, completed))

    def advance(self, nbytes: int) -> None:
        self.advanced += nbytes

    def note(self, message: str) -> None:
        self.notes.append(message)


@dataclass
class TinyModel:
    """A fake 3 MiB weights file (several copy chunks, so resumes land mid-file)."""

    data: bytes
    file: WeightFile

    def card(self, *sources: Source, model_id: str = "tiny") -> ModelCard:
        return make_card(model_id, [self.file], list(sources))

    def write(self, path: Path, data: bytes | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data if data is None else data)
        return path


def make_card(model_id: str, files: list[WeightFile], sources: list[Source]) -> ModelCard:
    return ModelCard(
        id=model_id,
        name=model_id,
        aliases=[f"{model_id}-alias"],
        licence="Apache-2.0",
        max_context_length=128,
        format="gguf",
        files=files,
        sources=sources,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", offline=False, catalog_path=None, hf_endpoint=None)


@pytest.fixture
def store(settings: Settings) -> ModelStore:
    return ModelStore(settings)


@pytest.fixture
def tiny() -> TinyModel:
    data = os.urandom(3 * 1024 * 1024 + 123)
    sha = hashlib.sha256(data).hexdigest()
    return TinyModel(data, WeightFile(path="model.gguf", sha256=sha, size=len(data)))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(begins=[], notes=[])


def leftovers(home: Path) -> list[Path]:
    """Files under ``home`` other than lock files (which are meant to stay)."""
    return sorted(p for p in home.rglob("*") if p.is_file() and p.suffix != ".lock")
