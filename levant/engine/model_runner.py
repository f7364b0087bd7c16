"""ModelRunner: one forward pass over every scheduled token, then one token per finisher.

Flattens the step's requests into one sequence (B = 1) with per-token positions and cache
slots, runs the model over the paged cache, and samples the rows that end a sequence.
Every step runs the ``FusedStep`` (all layers in one C++ call) when there is one; else a
step where every sequence decodes one token runs the ``CompiledDecode`` when there is one;
else the model's layers run one by one. A step with a seeded request in it keeps every
layer on its quantized kernel, which computes each row alone, and a seeded request
computes its whole prompt (no prefix-cache blocks, ``Request``): its tokens are the ones
it gets alone, whatever runs beside it, as long as its prompt is cut into the same chunks.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from levant.engine.compiled_decode import CompiledDecode
from levant.engine.fused_step import FusedStep
from levant.engine.sampler import sample_batch
from levant.engine.scheduler import ScheduledRequest
from levant.models.paged_attention import (
    DecodeAttention,
    PagedAttention,
    PagedKVCache,
    SequenceChunk,
    plan_attention,
)
from levant.models.quantize import quantized_kernels_only
from levant.models.transformer import Transformer


class ModelRunner:
    def __init__(
        self,
        model: Transformer,
        cache: PagedKVCache,
        device: torch.device,
        compiled: CompiledDecode | None = None,
        fused: FusedStep | None = None,
    ) -> None:
        self.model = model
        self.cache = cache
        self.device = device
        self.compiled = compiled
        self.fused = fused

    @torch.inference_mode()
    def execute(self, scheduled: list[ScheduledRequest]) -> dict[str, int]:
        """Compute the scheduled tokens; the sampled token of each request that samples."""
        bs = self.cache.block_size
        tokens: list[int] = []
        positions: list[int] = []
        chunks: list[SequenceChunk] = []
        sample_rows: list[int] = []
        for s in scheduled:
            end = s.start + s.num_new_tokens
            chunks.append(SequenceChunk(len(tokens), s.num_new_tokens, s.start, s.block_ids))
            tokens += s.request.all_token_ids[s.start : end]
            positions += range(s.start, end)
            if s.samples:
                sample_rows.append(len(tokens) - 1)
        if not sample_rows and not tokens:
            return {}

        def tensor(xs: list[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        def slots() -> torch.Tensor:  # each token's cache slot (the fused step finds its own)
            return tensor(
                [
                    c.block_table[p // bs] * bs + p % bs
                    for c in chunks
                    for p in range(c.num_cached, c.num_cached + c.num_new)
                ]
            )

        window = self.model.config.sliding_window
        # A seeded request's tokens must not depend on what else runs beside it: its steps
        # keep every layer on its quantized kernel (each row computed alone), never the
        # dense copies (whose arithmetic changes with the step's rows).
        invariant = any(s.request.sampling.seed is not None for s in scheduled)
        compiled = self._compiled_step(len(tokens)) if len(tokens) == len(chunks) else None
        with quantized_kernels_only(self.model) if invariant else nullcontext():
            if self.fused is not None:
                h = self.fused(tensor(tokens), tensor(positions), chunks, self.cache, invariant)
            elif compiled is not None and not invariant:  # every sequence decodes one token
                [group] = plan_attention(chunks, bs, window, self.device)
                decode = DecodeAttention.of(self.cache, slots(), group)
                h = compiled(tensor(tokens), tensor(positions), decode)  # (1, R, dim)
            else:
                groups = plan_attention(chunks, bs, window, self.device)
                attend = PagedAttention(self.cache, slots(), groups)
                h = self.model.hidden_states(tensor(tokens)[None], tensor(positions), attend)
            if not sample_rows:
                return {}
            logits = self.model.logits(h[0, sample_rows])  # (R, vocab) float32
        samplers = [s.request for s in scheduled if s.samples]
        ids = sample_batch(logits, samplers)
        return {r.request_id: t for r, t in zip(samplers, ids, strict=True)}

    def _compiled_step(self, rows: int) -> CompiledDecode | None:
        """The compiled step for ``rows`` sequences that each decode one token, if any."""
        if self.compiled is not None and 0 < rows <= self.compiled.max_rows:
            return self.compiled
        return None
