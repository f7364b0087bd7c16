"""Request: the engine's mutable state for one ``EngineRequest``.

The scheduler's single notion of progress is ``num_computed_tokens`` (tokens whose
keys/values are in the cache) catching up with ``num_tokens`` (prompt + output so far).
A preempted request drops back to zero computed tokens and keeps its output; its
constraint (if any) has consumed exactly that output, so recomputing the same tokens
leaves it where it is: it is advanced only by ``append_output``.
"""

from __future__ import annotations

import enum

import torch

from levant.engine.block_hash import BlockHash
from levant.engine.protocol import EngineRequest, FinishReason, SamplingParams, TokenLogprob


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Request:
    def __init__(
        self,
        request: EngineRequest,
        *,
        max_new_tokens: int,
        at_model_limit: bool,
        extra_keys: bytes,
        arrival_time: float,
        device: torch.device,
    ) -> None:
        self.request_id = request.request_id
        self.sampling: SamplingParams = request.sampling
        self.prompt_token_ids = list(request.prompt_token_ids)
        self.all_token_ids = list(request.prompt_token_ids)  # prompt, then output
        self.output_token_ids: list[int] = []
        self.max_new_tokens = max_new_tokens
        self.at_model_limit = at_model_limit  # reaching max_new_tokens is "model_length"
        self.extra_keys = extra_keys
        self.prefix_cache = request.uses_prefix_cache  # not in zero retention, not seeded
        self.constraint = request.constraint
        self.block_hashes: list[BlockHash] = []  # of full blocks of all_token_ids
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = -1  # prefix-cache hit of the first scheduling; -1: not yet
        self.num_preemptions = 0
        self.finish_reason: FinishReason | None = None
        self.sampled_logprob: TokenLogprob | None = None  # set by the sampler when asked

        self.arrival_time = arrival_time
        self.deadline = None if request.timeout_s is None else arrival_time + request.timeout_s
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None

        # Sampling state lives with the request, so its tokens never depend on its batch.
        seed = request.sampling.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator(device=device).manual_seed(seed)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def append_output(self, token: int) -> None:
        self.output_token_ids.append(token)
        self.all_token_ids.append(token)
        if self.constraint is not None:
            self.constraint.advance(token)

    def check_stop(self) -> FinishReason | None:
        """Why the request ends after its latest token, if it does."""
        params = self.sampling
        last = self.output_token_ids[-1] if self.output_token_ids else None
        if last in params.stop_token_ids and not params.ignore_eos:
            return "stop"
        if self.constraint is not None and self.constraint.is_done():
            return "stop"  # the grammar is complete: nothing may follow
        if self.num_output_tokens >= self.max_new_tokens:
            return "model_length" if self.at_model_limit else "length"
        return None
