"""LLMEngine: continuous batching over a paged KV cache, one ``step()`` at a time.

Boundary: ``EngineRequest`` in, ``EngineOutput`` deltas out, token ids only. Each step is
schedule -> execute -> update: the scheduler picks tokens under a budget, the runner
computes them in one forward pass and samples, the scheduler advances and finishes
requests. Not thread-safe: ``AsyncEngine`` drives it from one thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from levant.engine.block_hash import extra_keys
from levant.engine.compiled_decode import CompiledDecode
from levant.engine.errors import ContextLengthExceeded
from levant.engine.fused_step import FusedStep
from levant.engine.kv_cache_manager import KVCacheManager
from levant.engine.memory import release_freed_memory
from levant.engine.model_runner import ModelRunner
from levant.engine.protocol import EngineOutput, EngineRequest
from levant.engine.request import Request
from levant.engine.scheduler import Scheduler
from levant.engine.stats import EngineMetrics, EngineStats
from levant.models.config import ModelConfig
from levant.models.paged_attention import PagedKVCache
from levant.models.quantize import tune_dense_above, warm_up_dense
from levant.models.transformer import Transformer

__all__ = ["ContextLengthExceeded", "LLMEngine"]

DEFAULT_KV_CACHE_BYTES = 1 << 30

log = logging.getLogger(__name__)


class LLMEngine:
    def __init__(
        self,
        model: Transformer,
        config: ModelConfig,
        *,
        max_context: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        model_id: str = "",
        kv_cache_bytes: int | None = None,
        block_size: int = 16,
        max_num_batched_tokens: int = 256,
        max_num_seqs: int = 64,
        enable_prefix_caching: bool = True,
        compile_decode: bool = False,
        fused_step: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``kv_cache_bytes`` sizes the paged cache (default 1 GiB); ``max_context`` is
        also capped by it, so that a request alone always fits. ``dtype`` is the cache's.
        ``compile_decode`` compiles the decode steps (every sequence decoding one token;
        a minute or more), in ``warm_up`` or else at the first such step; ``fused_step``
        runs every step (decodes, prefill chunks, both) in one call to
        ``levant::fused_step`` where the model's layers allow it (``FusedStep.of``:
        quantized weights on Levant's kernels), which makes compiling unnecessary."""
        self.model = model
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.model_id = model_id
        self.clock = clock
        per_block = PagedKVCache.bytes_per_block(config, block_size, dtype)
        num_blocks = max(1, (kv_cache_bytes or DEFAULT_KV_CACHE_BYTES) // per_block)
        self.kv_cache = PagedKVCache.allocate(config, num_blocks, block_size, dtype, self.device)
        self.kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching)
        self.max_context = min(max_context or config.max_position, config.max_position)
        self.max_context = min(self.max_context, self.kv.capacity_tokens)
        self.metrics = EngineMetrics()
        self.scheduler = Scheduler(
            self.kv,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            clock=clock,
            metrics=self.metrics,
        )
        compiled = CompiledDecode(model, max_num_seqs) if compile_decode else None
        on_cpu = self.device.type == "cpu"
        fused = FusedStep.of(model) if fused_step and on_cpu else None
        self.runner = ModelRunner(model, self.kv_cache, self.device, compiled, fused)
        self.tokens_per_second = 0.0  # computed tokens, moving average over recent steps

    def warm_up(self) -> None:
        """Choose the quantized layers' kernels by row count, generate oneDNN's kernels for
        the dense copies kept (``warm_up_dense``), compile what is compiled and hand the
        memory that loading freed back to the OS, on the calling thread (the one
        that will step: kernel timings and Inductor's kernels depend on that thread's torch
        thread count)."""
        fused = self.runner.fused
        chosen = tune_dense_above(self.model)
        if chosen:
            log.info("quantized kernels up to %s rows (by matrix shape), dense bf16 beyond", chosen)
        warm_up_dense(self.model, self.scheduler.max_num_batched_tokens)
        compiled = self.runner.compiled
        if fused is not None:
            fused.refresh()
            log.info("every step runs fused (levant::fused_step)")
            if compiled is not None:
                log.info("not compiling the decode step: the fused step runs every step")
                self.runner.compiled = compiled = None
        if compiled is not None:
            compiled.warm_up(self.kv_cache)
        release_freed_memory()  # the float32 weights and dropped dense copies

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens of context the KV cache holds across all requests."""
        return self.kv.capacity_tokens

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_waiting_tokens(self) -> int:
        return self.scheduler.num_waiting_tokens

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    def add_request(self, request: EngineRequest) -> None:
        """Queue a request; raises ContextLengthExceeded when its prompt cannot fit."""
        n_prompt = len(request.prompt_token_ids)
        if n_prompt >= self.max_context:
            raise ContextLengthExceeded(n_prompt, self.max_context)
        room = self.max_context - n_prompt
        max_tokens = request.sampling.max_tokens
        self.scheduler.add_request(
            Request(
                request,
                max_new_tokens=room if max_tokens is None else min(room, max_tokens),
                at_model_limit=max_tokens is None or max_tokens > room,
                extra_keys=extra_keys(self.model_id, request.cache_salt),
                arrival_time=self.clock(),
                device=self.device,
            )
        )

    def uncached_prompt_tokens(
        self, prompt_token_ids: Sequence[int], cache_salt: str | None, prefix_cache: bool
    ) -> int:
        """Prompt tokens the prefix cache does not hold now (all of them without the cache):
        what admitting the request costs in prefill, for the waiting bound. Read-only; from
        another thread the answer may be a step stale."""
        n = len(prompt_token_ids)
        if not prefix_cache:
            return n
        extra = extra_keys(self.model_id, cache_salt)
        return n - self.kv.cached_prefix_tokens(prompt_token_ids, extra)

    def abort_request(self, request_id: str) -> None:
        """Finish with reason ``abort``; its blocks are free before the next step."""
        self.scheduler.abort(request_id)

    def step(self) -> list[EngineOutput]:
        """One iteration: schedule -> execute -> update."""
        t0 = self.clock()
        scheduled = self.scheduler.schedule()
        sampled = self.runner.execute(scheduled.scheduled) if scheduled.scheduled else {}
        outputs = self.scheduler.update(scheduled, sampled)
        if scheduled.num_tokens:
            rate = scheduled.num_tokens / max(self.clock() - t0, 1e-6)
            self.tokens_per_second = 0.9 * self.tokens_per_second + 0.1 * rate
        return outputs

    def stats(self) -> EngineStats:
        m = self.metrics
        return EngineStats(
            num_requests_running=self.num_running,
            num_requests_waiting=self.num_waiting,
            kv_cache_usage=self.kv.usage,
            kv_cache_tokens=self.kv_cache_tokens,
            prefix_cache_queries=self.kv.prefix_queries,
            prefix_cache_hits=self.kv.prefix_hits,
            prompt_tokens_total=m.prompt_tokens_total,
            generation_tokens_total=m.generation_tokens_total,
            num_preemptions_total=m.num_preemptions_total,
            request_success_total=m.finished_counts(),
            time_to_first_token=m.time_to_first_token.snapshot(),
            inter_token_latency=m.inter_token_latency.snapshot(),
            e2e_request_latency=m.e2e_request_latency.snapshot(),
        )

    def generate(
        self, request: EngineRequest, cancelled: Callable[[], bool] = lambda: False
    ) -> Iterator[EngineOutput]:
        """Run one request to the end, stepping the engine (for scripts and tests; the
        server goes through ``AsyncEngine``). ``cancelled`` is polled once per step."""
        self.add_request(request)
        while True:
            if cancelled():
                self.abort_request(request.request_id)
            for out in self.step():
                if out.request_id == request.request_id:
                    yield out
                    if out.finished:
                        return
