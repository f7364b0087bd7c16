"""ModelRegistry: which models this process can serve, loaded on first use.

A model is servable when the catalogue knows it and its weights are in the
store. Loading happens off the event loop, once per model, under a lock.
Generative models get a ``ModelService`` (tokenizer + continuous-batching
engine); cards that carry ``embedding`` get an ``EmbeddingService``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import torch

from levant.catalog.card import ModelCard
from levant.catalog.catalog import Catalog
from levant.catalog.store import ModelStore
from levant.config import Settings
from levant.embeddings import EmbeddingService, load_embedding_service
from levant.engine.async_engine import AsyncEngine
from levant.engine.core import LLMEngine
from levant.models.loaders import load_checkpoint
from levant.models.quantize import quantize_int8
from levant.models.tokenizers.loader import load_tokenizer
from levant.models.transformer import build_model
from levant.serving.service import ModelService

log = logging.getLogger("levant.serving")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

Service = ModelService | EmbeddingService


class ModelNotAvailable(LookupError):
    """Known to the catalogue but not in the store (or not known at all)."""


class ModelRegistry:
    def __init__(self, settings: Settings, catalog: Catalog, store: ModelStore) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self._services: dict[str, Service] = {}
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

    def loaded(self) -> list[Service]:
        return list(self._services.values())

    def generators(self) -> list[ModelService]:
        """Loaded generative models (the ones with an engine)."""
        return [s for s in self._services.values() if isinstance(s, ModelService)]

    async def get(self, name: str) -> Service:
        card = self.resolve(name)
        service = self._services.get(card.id)
        if service is not None:
            return service
        return await asyncio.to_thread(self.load, card)

    def load(self, card: ModelCard) -> Service:
        with self._lock:
            if card.id in self._services:
                return self._services[card.id]
            path = self.store.path(card)
            if path is None:
                raise ModelNotAvailable(f"Model '{card.id}' is not pulled")
            log.info("loading %s from %s", card.id, path)
            service: Service
            if card.embedding is not None:
                service = load_embedding_service(card, path, self.settings)
            else:
                service = self._load_generator(card, path)
            self._services[card.id] = service
            return service

    def _load_generator(self, card: ModelCard, path: Path) -> ModelService:
        s = self.settings
        config, state_dict = load_checkpoint(path)
        int8 = s.dtype == "int8"
        dtype = torch.float32 if int8 else _DTYPES[s.dtype]
        model = build_model(config, state_dict, dtype=dtype, device=s.device)
        if int8:
            quantize_int8(model)
        engine = LLMEngine(
            model,
            config,
            max_context=card.max_context_length,
            device=s.device,
            dtype=dtype,
            model_id=card.id,
            kv_cache_bytes=int(s.kv_cache_gb * (1 << 30)),
            max_num_batched_tokens=s.max_batched_tokens,
        )
        log.info(
            "%s: KV cache holds %d tokens of context across all requests (%.2f GiB, %s)",
            card.id,
            engine.kv_cache_tokens,
            s.kv_cache_gb,
            s.dtype,
        )
        async_engine = AsyncEngine(engine, max_waiting_requests=s.max_waiting_requests)
        return ModelService(card, load_tokenizer(path), async_engine, timeout_s=s.request_timeout_s)

    def shutdown(self) -> None:
        for service in self._services.values():
            if isinstance(service, ModelService):
                service.engine.shutdown()
            else:
                service.shutdown()
