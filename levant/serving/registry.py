"""ModelRegistry: which models this process can serve, loaded on first use.

A model is servable when the catalogue knows it and its weights are in the
store. Loading happens off the event loop, once per model, under a lock.
Generative models get a ``ModelService`` (tokenizer + continuous-batching
engine); cards that carry ``embedding`` get an ``EmbeddingService``.

Lifecycle (Ollama's model): start-up models are pinned; others are unloaded
after ``keep_alive_s`` without requests (``evict_idle``, called periodically by
the app). With ``models_memory_gb``, loading a model first unloads idle ones,
least recently used first, and raises ``OutOfModelMemory`` if that cannot make
room — never unloading a model with requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from levant.catalog.card import ModelCard
from levant.catalog.catalog import Catalog
from levant.catalog.store import ModelStore
from levant.config import Settings
from levant.embeddings import EmbeddingService, load_embedding_service
from levant.engine.async_engine import AsyncEngine, single_threaded
from levant.engine.core import LLMEngine
from levant.engine.memory import freeze_heap, thaw_heap
from levant.models.loaders import load_checkpoint
from levant.models.quantize import dense_copy_bytes, quantize_int4, quantize_int8
from levant.models.tokenizers.loader import load_tokenizer
from levant.models.transformer import Transformer, build_model
from levant.serving.service import ModelService

log = logging.getLogger("levant.serving")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Weight-only formats: float32 activations, quantized linears applied after loading.
_QUANTIZERS: dict[str, Callable[[Transformer], Transformer]] = {
    "int8": quantize_int8,
    "int4": quantize_int4,
}

Service = ModelService | EmbeddingService


class ModelNotAvailable(LookupError):
    """Known to the catalogue but not in the store (or not known at all)."""


class OutOfModelMemory(RuntimeError):
    """Loading a model would exceed ``models_memory_gb`` even after unloading idle ones."""


def kv_cache_dtype(s: Settings) -> torch.dtype:
    """``kv_cache_dtype``, with ``auto`` resolved (bf16 under quantized weights)."""
    if s.kv_cache_dtype != "auto":
        return _DTYPES[s.kv_cache_dtype]
    return torch.bfloat16 if s.dtype in _QUANTIZERS else _DTYPES[s.dtype]


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def service_bytes(service: Service) -> int:
    """Memory a loaded model holds: weights, buffers and (for generators) its KV cache."""
    if isinstance(service, ModelService):
        model: torch.nn.Module = service.engine.engine.model
        cache = service.engine.engine.kv_cache
        tensors = _tensor_bytes([*model.parameters(), *model.buffers(), *cache.kv])
        return tensors + dense_copy_bytes(model)
    bert = service.encoder.bert
    return _tensor_bytes([*bert.parameters(), *bert.buffers()])


def count_parameters(path: Path) -> int:
    """Parameters in a model directory, from GGUF or safetensors headers (0 if unknown)."""
    total = 0
    for file in path.glob("*.gguf"):
        from gguf import GGUFReader

        total += sum(int(t.n_elements) for t in GGUFReader(file).tensors)
    for file in path.glob("*.safetensors"):
        with file.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, info in header.items():
            if name != "__metadata__":
                total += math.prod(info["shape"])
    return total


def _in_flight(service: Service) -> int:
    return service.engine.num_in_flight if isinstance(service, ModelService) else 0


class ModelRegistry:
    def __init__(self, settings: Settings, catalog: Catalog, store: ModelStore) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self._services: dict[str, Service] = {}
        self._bytes: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        self.clock: Callable[[], float] = time.monotonic

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
        self._last_used[card.id] = self.clock()
        service = self._services.get(card.id)
        if service is not None:
            return service
        return await asyncio.to_thread(self.load, card)

    def pin(self, model_id: str) -> None:
        """Keep ``model_id`` loaded whatever its idle time (start-up models)."""
        self._pinned.add(model_id)

    def loaded_bytes(self) -> int:
        return sum(self._bytes.values())

    def load(self, card: ModelCard) -> Service:
        with self._lock:
            if card.id in self._services:
                return self._services[card.id]
            path = self.store.path(card)
            if path is None:
                raise ModelNotAvailable(f"Model '{card.id}' is not pulled")
            self._make_room(card, path)
            log.info("loading %s from %s", card.id, path)
            service: Service
            if card.embedding is not None:
                service = load_embedding_service(card, path, self.settings)
            else:
                service = self._load_generator(card, path)
            self._services[card.id] = service
            self._bytes[card.id] = service_bytes(service)
            self._last_used[card.id] = self.clock()
            if self.settings.gc_freeze:
                took = freeze_heap()
                log.info(
                    "froze the heap after loading %s (a %.0f ms collection)", card.id, took * 1e3
                )
            return service

    def _estimate_bytes(self, card: ModelCard, path: Path) -> int:
        """Before loading: parameters (counted from the weight files' headers) at the
        compute dtype, plus the KV cache."""
        itemsize = 2 if self.settings.dtype in ("bfloat16", "float16") else 4
        params = count_parameters(path)
        weights = params * itemsize if params else sum(f.size for f in card.files)
        kv = 0 if card.embedding is not None else int(self.settings.kv_cache_gb * (1 << 30))
        return weights + kv

    def _make_room(self, card: ModelCard, path: Path) -> None:
        budget_gb = self.settings.models_memory_gb
        if budget_gb is None:
            return
        budget = int(budget_gb * (1 << 30))
        need = self._estimate_bytes(card, path)
        order = sorted(self._services, key=lambda m: self._last_used.get(m, 0.0))
        for model_id in order:
            if self.loaded_bytes() + need <= budget:
                return
            if model_id in self._pinned or _in_flight(self._services[model_id]):
                continue
            self._unload_locked(model_id, "to make room for " + card.id)
        if self.loaded_bytes() + need > budget:
            busy = ", ".join(sorted(self._services)) or "none"
            raise OutOfModelMemory(
                f"Not enough model memory to load '{card.id}' (about {need / 2**30:.2f} GiB "
                f"needed, {budget_gb:g} GiB budget; loaded and busy or pinned: {busy})"
            )

    def evict_idle(self) -> list[str]:
        """Unload unpinned models idle for longer than ``keep_alive_s``; their ids."""
        keep = self.settings.keep_alive_s
        if keep is None:
            return []
        now = self.clock()
        gone = []
        with self._lock:
            for model_id in list(self._services):
                idle = now - self._last_used.get(model_id, now)
                service = self._services[model_id]
                if model_id in self._pinned or idle < keep or _in_flight(service):
                    continue
                self._unload_locked(model_id, f"idle for {idle:.0f} s")
                gone.append(model_id)
        return gone

    def _unload_locked(self, model_id: str, why: str) -> None:
        service = self._services.pop(model_id)
        self._bytes.pop(model_id, None)
        log.info("unloading %s (%s)", model_id, why)
        _shutdown(service)
        if self.settings.gc_freeze:  # its cycles collectable, then the rest frozen again
            del service
            thaw_heap()
            freeze_heap()

    def _load_generator(self, card: ModelCard, path: Path) -> ModelService:
        s = self.settings
        with single_threaded():  # the engine's worker is the one multi-threaded torch user
            config, state_dict = load_checkpoint(path)
            quantize = _QUANTIZERS.get(s.dtype)
            dtype = torch.float32 if quantize else _DTYPES[s.dtype]
            model = build_model(config, state_dict, dtype=dtype, device=s.device)
            if quantize is not None:
                quantize(model)
            engine = LLMEngine(
                model,
                config,
                max_context=card.max_context_length,
                device=s.device,
                dtype=kv_cache_dtype(s),
                model_id=card.id,
                kv_cache_bytes=int(s.kv_cache_gb * (1 << 30)),
                max_num_batched_tokens=s.max_batched_tokens,
                compile_decode=s.compile,
            )
        log.info(
            "%s: KV cache holds %d tokens of context across all requests (%.2f GiB, %s"
            " keys and values; %s weights)",
            card.id,
            engine.kv_cache_tokens,
            s.kv_cache_gb,
            str(engine.dtype).removeprefix("torch."),
            s.dtype,
        )
        async_engine = AsyncEngine(
            engine,
            max_waiting_requests=s.max_waiting_requests,
            threads=s.threads,
            nice=s.engine_nice,
        )
        return ModelService(card, load_tokenizer(path), async_engine, timeout_s=s.request_timeout_s)

    def shutdown(self) -> None:
        for service in self._services.values():
            _shutdown(service)


def _shutdown(service: Service) -> None:
    if isinstance(service, ModelService):
        service.engine.shutdown()
    else:
        service.shutdown()
