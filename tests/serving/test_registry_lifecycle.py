"""Several models in one process: on-demand loading, idle keep-alive, a memory budget.

Two catalogue ids share the SmolLM2 weights (pulled from a local source into a
temporary home), so the test loads two real models without a second download.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
import yaml

from levant.catalog.catalog import load_catalog
from levant.catalog.pull import pull
from levant.catalog.store import ModelStore
from levant.config import Settings
from levant.engine.protocol import SamplingParams
from levant.serving.registry import ModelRegistry, OutOfModelMemory
from levant.serving.service import ModelService
from tests.conftest import DEFAULT_MODEL

COPY = "smollm2-copy"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _home(tmp_path: Path, model_home: Path) -> tuple[Path, Path]:
    shared = Settings(home=model_home)
    card = load_catalog(shared).get(DEFAULT_MODEL)
    source = {"kind": "local", "path": str(ModelStore(shared).path(card))}
    copy: dict[str, Any] = card.model_dump(mode="json")
    copy.update(id=COPY, name="SmolLM2 copy", aliases=[], sources=[source])
    catalog = tmp_path / "catalog.yaml"
    entries = [{"id": DEFAULT_MODEL, "extra_sources": [source]}, copy]
    catalog.write_text(yaml.safe_dump({"models": entries}))
    settings = Settings(home=tmp_path, catalog_path=catalog)
    for name in (DEFAULT_MODEL, COPY):
        pull(load_catalog(settings).get(name), ModelStore(settings))
    return tmp_path, catalog


def _registry(home: Path, catalog: Path, **settings: Any) -> tuple[ModelRegistry, Clock]:
    s = Settings(home=home, catalog_path=catalog, kv_cache_gb=0.05, **settings)
    registry = ModelRegistry(s, load_catalog(s), ModelStore(s))
    clock = Clock()
    registry.clock = clock
    return registry, clock


async def test_idle_models_unload_after_keep_alive_and_pinned_ones_stay(
    tmp_path: Path, model_home: Path
) -> None:
    home, catalog = _home(tmp_path, model_home)
    registry, clock = _registry(home, catalog, keep_alive_s=60)
    registry.pin(DEFAULT_MODEL)
    await registry.get(DEFAULT_MODEL)
    await registry.get(COPY)
    clock.now += 30
    assert registry.evict_idle() == []
    clock.now += 31
    assert registry.evict_idle() == [COPY]  # the pinned start-up model stays
    assert [s.card.id for s in registry.loaded()] == [DEFAULT_MODEL]
    again = await registry.get(COPY)  # loaded on demand once more
    assert isinstance(again, ModelService) and len(registry.loaded()) == 2
    registry.shutdown()


async def test_a_frozen_heap_still_frees_an_unloaded_model(
    tmp_path: Path, model_home: Path
) -> None:
    """With gc_freeze, loading a model freezes the heap (no full GC pass walks it), and
    unloading still frees the model: its engine is gone after the unload, and what stays
    loaded is frozen again."""
    home, catalog = _home(tmp_path, model_home)
    registry, clock = _registry(home, catalog, keep_alive_s=60, gc_freeze=True)
    try:
        service = await registry.get(COPY)
        assert isinstance(service, ModelService) and gc.get_freeze_count() > 0
        engine = weakref.ref(service.engine.engine)
        del service
        await asyncio.sleep(0)  # this step's wake-up (holding get()'s result) ends
        clock.now += 61
        assert registry.evict_idle() == [COPY]
        gc.collect()
        assert engine() is None
        assert gc.get_freeze_count() > 0  # the rest refrozen
    finally:
        registry.shutdown()
        gc.unfreeze()


async def test_a_memory_budget_unloads_idle_models_but_never_busy_ones(
    tmp_path: Path, model_home: Path
) -> None:
    home, catalog = _home(tmp_path, model_home)
    probe, _ = _registry(home, catalog)
    one = await probe.get(DEFAULT_MODEL)
    size = probe.loaded_bytes()
    probe.shutdown()
    del one
    # Room for one model and a half.
    registry, clock = _registry(home, catalog, models_memory_gb=1.5 * size / 2**30)
    first = await registry.get(DEFAULT_MODEL)
    assert isinstance(first, ModelService)

    # Busy: a generation is in flight on the first model, so it cannot make room.
    ids = first.tokenizer.encode("Hello")
    stream = first.generate(ids, SamplingParams(temperature=0, max_tokens=50))
    await anext(stream)
    clock.now += 1
    with pytest.raises(OutOfModelMemory, match="Not enough model memory"):
        await registry.get(COPY)
    await stream.aclose()

    # Idle now: loading the second unloads the least recently used first.
    clock.now += 1
    second = await registry.get(COPY)
    assert [s.card.id for s in registry.loaded()] == [COPY]
    assert isinstance(second, ModelService)
    assert registry.loaded_bytes() <= 1.5 * size
    registry.shutdown()
