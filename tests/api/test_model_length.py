"""finish_reason ``model_length`` when the context window fills, on a real model.

A user catalogue adds a card that serves the same SmolLM2 weights with a
64-token context, so the window fills in a few steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from levant.config import Settings
from tests.conftest import DEFAULT_MODEL, LiveServer

pytestmark = pytest.mark.slow

SHORT = "smollm2-ctx64"


@pytest.fixture(scope="module")
def short_context_server(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    base = load_catalog(Settings(home=model_home)).get(DEFAULT_MODEL)
    entry = base.model_dump(mode="json")
    entry.update(
        id=SHORT,
        aliases=[],
        max_context_length=64,
        sources=[{"kind": "local", "path": str(ModelStore(Settings(home=model_home)).path(base))}],
    )
    catalog_file = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump({"models": [entry]}))
    settings = Settings(home=model_home, catalog_path=catalog_file)
    card = load_catalog(settings).get(SHORT)
    pull(card, ModelStore(settings))
    server = LiveServer(settings, preload=[SHORT])
    server.start()
    yield server
    server.stop()


def test_model_length_when_context_fills(short_context_server: LiveServer) -> None:
    r = short_context_server.client().post(
        f"{short_context_server.url}/v1/chat/completions",
        timeout=120,
        json={
            "model": SHORT,
            "temperature": 0,
            "min_tokens": 64,
            "messages": [{"role": "user", "content": "Count from one to one hundred."}],
        },
    )
    body = r.json()
    assert r.status_code == 200, body
    assert body["choices"][0]["finish_reason"] == "model_length"
    assert body["usage"]["total_tokens"] == 64
    # OpenAI clients know this condition as "length"
    r = short_context_server.client().post(
        f"{short_context_server.url}/v1/chat/completions",
        timeout=120,
        json={
            "model": SHORT,
            "temperature": 0,
            "min_tokens": 64,
            "seed": 1,
            "messages": [{"role": "user", "content": "Count from one to one hundred."}],
        },
    )
    assert r.json()["choices"][0]["finish_reason"] == "length"
