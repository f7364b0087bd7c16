"""The generation loop: one request at a time, prefill then decode with a KV cache.

Boundary: token ids and sampling parameters in, ``EngineOutput`` deltas out.
The continuous-batching scheduler replaces this loop without changing that
contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from levant.engine.protocol import EngineOutput, EngineRequest, FinishReason
from levant.engine.sampler import apply_penalties, make_generator, sample
from levant.models.config import ModelConfig
from levant.models.transformer import KVCache, Transformer


class ContextLengthExceeded(ValueError):
    def __init__(self, prompt_tokens: int, max_context: int) -> None:
        super().__init__(
            f"prompt has {prompt_tokens} tokens but the model's context is {max_context} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context


class LLMEngine:
    def __init__(
        self,
        model: Transformer,
        config: ModelConfig,
        *,
        max_context: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model
        self.config = config
        self.max_context = min(max_context or config.max_position, config.max_position)
        self.device = torch.device(device)
        self.dtype = dtype

    @torch.inference_mode()
    def generate(
        self, request: EngineRequest, cancelled: Callable[[], bool] = lambda: False
    ) -> Iterator[EngineOutput]:
        """Yield one ``EngineOutput`` per generated token; the last has ``finished``.

        ``cancelled`` is polled once per step; when it turns true the request
        ends with finish reason ``abort`` and its cache is released.
        """
        prompt = request.prompt_token_ids
        params = request.sampling
        n_prompt = len(prompt)
        if n_prompt >= self.max_context:
            raise ContextLengthExceeded(n_prompt, self.max_context)
        budget = self.max_context - n_prompt
        if params.max_tokens is not None:
            budget = min(budget, params.max_tokens)
        cache = KVCache.allocate(self.config, 1, n_prompt + budget, self.dtype, self.device)
        generator = make_generator(params.seed, self.device)
        stop_ids = params.stop_token_ids

        def output(tokens: list[int], reason: FinishReason | None) -> EngineOutput:
            return EngineOutput(request.request_id, tokens, reason is not None, reason, n_prompt, 0)

        if budget == 0:
            yield output([], "length")
            return
        tokens = torch.tensor([prompt], dtype=torch.long, device=self.device)
        logits = self.model(tokens, 0, cache)[0, -1]  # prefill: (vocab,)
        pos = n_prompt
        counts = torch.zeros(logits.shape[-1], dtype=torch.float32, device=self.device)
        for produced in range(1, budget + 1):
            if cancelled():
                yield output([], "abort")
                return
            logits = apply_penalties(logits, counts, params)
            if produced <= params.min_tokens and stop_ids:
                logits[list(stop_ids)] = float("-inf")
            token = sample(logits, params, generator)
            counts[token] += 1
            reason: FinishReason | None = None
            if token in stop_ids and not params.ignore_eos:
                reason = "stop"
            elif produced == budget:
                at_limit = params.max_tokens is not None and produced == params.max_tokens
                reason = "length" if at_limit else "model_length"
            yield output([token], reason)
            if reason is not None:
                return
            step = torch.tensor([[token]], dtype=torch.long, device=self.device)
            logits = self.model(step, pos, cache)[0, -1]  # decode one token
            pos += 1
