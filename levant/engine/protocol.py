"""The only types that cross into or out of the engine.

The engine knows token ids and sampling parameters; it knows nothing about
text, HTTP, API keys or wire formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from levant.engine.constraints import LogitsConstraint

FinishReason = Literal["stop", "length", "model_length", "abort"]
"""stop: an end-of-sequence token, or the request's constraint is complete;
length: max_tokens reached; model_length: the context window is full; abort:
cancelled by the caller."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    max_tokens: int | None = None
    """None: until the context window is full."""
    min_tokens: int = 0
    """End-of-sequence tokens are suppressed until this many tokens are produced."""
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    """OpenAI semantics: subtract presence (once per seen token) and frequency
    (per occurrence) from the logits of tokens already generated."""
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    ignore_eos: bool = False
    logprobs: int | None = None
    """None: no log-probabilities (the sampler does no extra work). k >= 0: each sampled
    token's log-probability and the k most likely tokens' (``TokenLogprob``), from the
    model's raw distribution: log-softmax of the logits before penalties, temperature,
    top-k/top-p, min_tokens and grammar masks (vLLM's default, ``raw_logprobs``)."""


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    cache_salt: str | None = None
    """Prefix-cache namespace (e.g. the workspace id): requests share cached prompt
    blocks only when their salts are equal, so tenants never share entries."""
    timeout_s: float | None = None
    """Seconds from arrival after which the request ends with finish reason ``abort``,
    whether it is still queued or running."""
    prefix_cache: bool = True
    """False (zero retention): the request neither reads nor fills the prefix cache, so
    nothing derived from its text is findable once it has finished."""
    constraint: LogitsConstraint | None = None
    """Per-request grammar state (opaque): it masks each sampled row and ends the request
    with reason ``stop`` once complete. Mutable, owned by the engine while it runs."""

    @property
    def uses_prefix_cache(self) -> bool:
        """Whether the request reads and fills the prefix cache: not in zero retention, and
        not seeded (``uses_prefix_cache_for``)."""
        return uses_prefix_cache_for(self.prefix_cache, self.sampling.seed)


def uses_prefix_cache_for(prefix_cache: bool, seed: int | None) -> bool:
    """A seeded request computes its whole prompt itself (the runner keeps its steps on
    row-independent kernels): blocks another step computed could differ in the last bits,
    and a sampled token can turn on them. The admission estimate (prompt tokens the cache
    lacks) follows the same rule."""
    return prefix_cache and seed is None


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token's log-probability, and the most likely tokens at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    """(token id, log-probability), most likely first; ``SamplingParams.logprobs`` of them."""


@dataclass(frozen=True)
class EngineOutput:
    """A delta: the tokens produced since the previous output of this request."""

    request_id: str
    new_token_ids: list[int]
    finished: bool = False
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    """Prompt tokens whose keys/values came from the prefix cache (whole blocks)."""
    logprobs: list[TokenLogprob] | None = None
    """One per ``new_token_ids`` when the request asked (``SamplingParams.logprobs``)."""
