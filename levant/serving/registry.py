"""ModelRegistry: which models this process can serve, loaded on first use.

A model is servable when the catalogue knows it and its weights are in the
store. Loading happens off the event loop, once per model, under a lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import torch

from levant.catalog.card import ModelCard
from levant.catalog.catalog import Catalog
from levant.catalog.store import ModelStore
from levant.config import Settings
from levant.engine.async_engine import AsyncEngine
from levant.engine.core import LLMEngine
from levant.models.loaders import load_checkpoint
from levant.models.tokenizers.loader import load_tokenizer
from levant.models.transformer import build_model
from levant.serving.service import ModelService

log = logging.getLogger("levant.serving")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotAvailable(LookupError):
    """Known to the catalogue but not in the store (or not known at all)."""


class ModelRegistry:
    def __init__(self, settings: Settings, catalog: Catalog, store: ModelStore) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self._services: dict[str, ModelService] = {}
        self._lock = threading.Lock()

    def servable_cards(self) -> list[ModelCard]:
        return [
            c for c in self.catalog.cards() if c.id in self._services or self.store.is_pulled(c)
        ]

    def resolve(self, name: str) -> ModelCard:
        """The card for ``name`` (id or alias) if this process can serve it."""
        card = self.catalog.get(name)  # raises ModelNotFound
        if card.id not in self._services and not self.store.is_pulled(card):
            raise ModelNotAvailable(
                f"Model '{name}' is in the catalogue but its weights are not pulled; "
                f"run `levant pull {card.id}`"
            )
        return card

    def loaded(self) -> list[ModelService]:
        return list(self._services.values())

    async def get(self, name: str) -> ModelService:
        card = self.resolve(name)
        service = self._services.get(card.id)
        if service is not None:
            return service
        return await asyncio.to_thread(self.load, card)

    def load(self, card: ModelCard) -> ModelService:
        with self._lock:
            if card.id in self._services:
                return self._services[card.id]
            path = self.store.path(card)
            if path is None:
                raise ModelNotAvailable(f"Model '{card.id}' is not pulled")
            log.info("loading %s from %s", card.id, path)
            config, state_dict = load_checkpoint(path)
            dtype = _DTYPES[self.settings.dtype]
            model = build_model(config, state_dict, dtype=dtype, device=self.settings.device)
            engine = LLMEngine(
                model,
                config,
                max_context=card.max_context_length,
                device=self.settings.device,
                dtype=dtype,
            )
            service = ModelService(card, load_tokenizer(path), AsyncEngine(engine))
            self._services[card.id] = service
            return service

    def shutdown(self) -> None:
        for service in self._services.values():
            service.engine.shutdown()
