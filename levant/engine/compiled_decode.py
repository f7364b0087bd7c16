"""A ``torch.compile``'d forward for the single-stream decode step: one sequence, one token.

Boundary: a token id, its position and a ``DecodeAttention`` in, final hidden states out;
the runner decides which steps qualify and runs everything else (prefill chunks, mixed
steps, several sequences) eagerly. Inductor fuses each layer's pointwise work (norms,
rotary, residuals, SwiGLU) into a few C++ kernels and calls the matmul and attention
kernels directly, so the per-operator Python cost, most of a small model's single-stream
decode step on a CPU, is paid once per step instead of about 1,800 times.

Only one sequence: with several, the step is bound by the matmuls (compiling a 16-row
step gained under 10% here) and dynamo's dynamic-batch graph ran slower than eager.
Compiling takes about a minute on a two-core machine (one graph, any context length);
``warm_up`` does it before the first request, and Inductor's on-disk cache makes later
start-ups faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from levant.models.paged_attention import DecodeAttention, PagedKVCache
from levant.models.transformer import Transformer

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor, torch.Tensor, DecodeAttention], torch.Tensor]


class CompiledDecode:
    def __init__(self, model: Transformer) -> None:
        self.model = model
        self._forward: Forward = torch.compile(model.hidden_states, dynamic=True)

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend: DecodeAttention
    ) -> torch.Tensor:
        """tokens and positions (1,) -> final-normed hidden states (1, 1, dim)."""
        if tokens.shape != (1,):
            raise ValueError(f"the compiled step decodes one sequence, got {tokens.shape[0]}")
        return self._forward(tokens[None], positions, attend)

    @torch.inference_mode()
    def warm_up(self, cache: PagedKVCache) -> None:
        """Compile, attending over block 0 (its slots hold nothing yet, and any request that
        gets the block writes each slot before it reads it)."""
        t0 = time.monotonic()
        device = cache.kv[0].device
        zero = torch.zeros(1, dtype=torch.long, device=device)
        mask = torch.zeros(1, 1, 1, cache.block_size, dtype=torch.bool, device=device)
        mask[..., 0] = True
        bounds = torch.tensor([[0, 1]], device=device)
        self(zero, zero.clone(), DecodeAttention(cache, zero.clone(), zero.clone(), mask, bounds))
        log.info("compiled the single-stream decode step in %.0f s", time.monotonic() - t0)
