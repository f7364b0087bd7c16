"""Turn the last position's logits into the next token: greedy, temperature, top-k, top-p.

Seeded per request: the same seed and the same logits give the same token on
every run, whatever else the process is doing. Rows of requests that carry a
``LogitsConstraint`` are masked first, in the same batch as unconstrained rows.
Requests that ask for log-probabilities (``SamplingParams.logprobs``) get them from a
copy of their raw rows, taken before penalties and masks; the others cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from levant.engine.constraints import LogitsConstraint, apply_constraints
from levant.engine.protocol import SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from levant.engine.request import Request


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def apply_penalties(
    logits: torch.Tensor, counts: torch.Tensor, params: SamplingParams
) -> torch.Tensor:
    """Presence and frequency penalties over ``counts`` (vocab,) of generated tokens."""
    if params.presence_penalty == 0.0 and params.frequency_penalty == 0.0:
        return logits
    penalty = params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
    return logits - penalty.to(logits.dtype)


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(vocab,) float32 logits -> (vocab,) probabilities after temperature, top-k, top-p."""
    logits = logits / max(params.temperature, 1e-5)
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest set whose mass reaches top_p: drop a token when the
        # mass before it already reaches top_p (the top token always survives).
        drop = (cumulative - sorted_probs) >= params.top_p
        drop[0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token id from (vocab,) logits."""
    if params.temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = logits_to_probs(logits.float(), params)
    return int(torch.multinomial(probs, num_samples=1, generator=generator).item())


def sample_batch(logits: torch.Tensor, requests: Sequence[Request]) -> list[int]:
    """One token per row of (R, vocab) float32 logits; row i reads only requests[i]'s
    parameters, output so far, constraint and generator, so a token never depends on its
    batch."""
    wants = [i for i, r in enumerate(requests) if r.sampling.logprobs is not None]
    raw = logits[wants].clone() if wants else None  # before penalties and masks change rows
    rows: list[int] = []
    constraints: list[LogitsConstraint] = []
    suppress: list[frozenset[int]] = []
    early_rows: list[int] = []  # (row, stop token) pairs held back by min_tokens
    early_ids: list[int] = []
    for i, request in enumerate(requests):
        params = request.sampling
        if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
            ids = torch.tensor(request.output_token_ids, dtype=torch.long, device=logits.device)
            counts = torch.bincount(ids, minlength=logits.shape[-1]).float()  # (vocab,)
            logits[i] = apply_penalties(logits[i], counts, params)
        early = request.num_output_tokens < params.min_tokens
        if request.constraint is not None:  # min_tokens yields to a complete grammar
            rows.append(i)
            constraints.append(request.constraint)
            suppress.append(params.stop_token_ids if early else frozenset())
        elif early and params.stop_token_ids:
            early_rows += [i] * len(params.stop_token_ids)
            early_ids += params.stop_token_ids
    if early_rows:  # one indexed write for the batch, not one per row
        logits[early_rows, early_ids] = float("-inf")
    apply_constraints(
        logits,
        rows,
        constraints,
        suppress=suppress,
        fallback=[requests[i].sampling.stop_token_ids for i in rows],
    )
    if all(r.sampling.temperature <= 0.0 for r in requests):
        tokens = [int(t) for t in logits.argmax(dim=-1).tolist()]  # all greedy: one call
    else:
        tokens = [sample(logits[i], r.sampling, r.generator) for i, r in enumerate(requests)]
    if raw is not None:
        chosen = [tokens[i] for i in wants]
        ks = [requests[i].sampling.logprobs or 0 for i in wants]
        for i, lp in zip(wants, token_logprobs(raw, chosen, ks), strict=True):
            requests[i].sampled_logprob = lp
    return tokens


def token_logprobs(
    raw: torch.Tensor, tokens: Sequence[int], ks: Sequence[int]
) -> list[TokenLogprob]:
    """Row i of (R, vocab) raw logits: log-softmax at ``tokens[i]`` and its ``ks[i]`` most
    likely tokens (most likely first)."""
    logp = torch.log_softmax(raw.float(), dim=-1)
    index = torch.tensor(list(tokens), dtype=torch.long, device=logp.device)[:, None]
    chosen = logp.gather(1, index)[:, 0].tolist()
    k_max = min(max(ks), logp.shape[-1])
    top_values: list[list[float]] = [[] for _ in tokens]
    top_ids: list[list[int]] = [[] for _ in tokens]
    if k_max > 0:
        top = torch.topk(logp, k_max, dim=-1)
        top_values, top_ids = top.values.tolist(), top.indices.tolist()
    return [
        TokenLogprob(int(t), float(c), tuple(zip(top_ids[i][:k], top_values[i][:k], strict=True)))
        for i, (t, c, k) in enumerate(zip(tokens, chosen, ks, strict=True))
    ]
