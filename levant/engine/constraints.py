"""Per-request logits constraints: the engine's side of grammar-constrained decoding.

Boundary: a request may carry an opaque ``LogitsConstraint`` (built outside the engine,
e.g. from a JSON schema by ``levant.structured``). The engine only asks it which tokens
may come next, tells it which token was sampled, and asks whether it is complete; it
never sees a grammar, a schema or text.

The allowed set travels as a bitmask of int32 words (bit ``t % 32`` of word ``t // 32``
set: token ``t`` allowed), the layout grammar engines compute natively, so a mask costs
one call into the grammar engine and one vectorised unpack here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

import torch

__all__ = ["LogitsConstraint", "apply_constraints", "bitmask_words", "unpack_bitmask"]


@runtime_checkable
class LogitsConstraint(Protocol):
    """What the engine needs from a per-request constraint (e.g. a grammar matcher).

    Invariant kept by the engine: the constraint has consumed exactly the request's
    output tokens, in order. A preempted request keeps its output and is recomputed
    without resampling it, so its constraint is neither rolled back nor replayed.
    """

    def fill_bitmask(self, bitmask: torch.Tensor) -> None:
        """Mark the tokens allowed next in ``bitmask``: a zeroed, contiguous (words,)
        int32 CPU tensor, ``words = ceil(model vocab / 32)``. Tokens past the
        constraint's own vocabulary stay zero (forbidden)."""
        ...

    def advance(self, token_id: int) -> None:
        """Consume the token sampled for this request."""
        ...

    def is_done(self) -> bool:
        """Nothing may follow the tokens so far: the request ends (finish reason stop)."""
        ...


def bitmask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


_BITS = torch.arange(32, dtype=torch.int32)


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(R, words) int32 -> (R, vocab_size) bool, True where a token is allowed."""
    bits = (bitmask.unsqueeze(-1) >> _BITS) & 1  # arithmetic shift: the & keeps one bit
    return bits.view(bitmask.shape[0], -1)[:, :vocab_size].bool()


def apply_constraints(
    logits: torch.Tensor,
    rows: Sequence[int],
    constraints: Sequence[LogitsConstraint],
    *,
    suppress: Sequence[Collection[int]] = (),
    fallback: Sequence[Collection[int]] = (),
) -> None:
    """Set to -inf, in place, the logits of (R, vocab) ``logits`` that ``constraints[k]``
    forbids in row ``rows[k]``.

    ``suppress[k]`` (e.g. end-of-sequence before min_tokens) is forbidden too, unless that
    would leave nothing: the grammar wins. A row whose constraint allows nothing at all (an
    engine in an error state) is given ``fallback[k]`` (its stop tokens), so that it ends
    instead of failing the whole batch.
    """
    if not rows:
        return
    vocab = logits.shape[-1]
    bitmask = torch.zeros((len(rows), bitmask_words(vocab)), dtype=torch.int32)
    for k, constraint in enumerate(constraints):
        constraint.fill_bitmask(bitmask[k])
    allowed = unpack_bitmask(bitmask, vocab).to(logits.device)
    for k in range(len(rows)):
        banned = [t for t in suppress[k] if t < vocab] if k < len(suppress) else []
        if banned and bool(allowed[k].any()):
            narrowed = allowed[k].clone()
            narrowed[banned] = False
            if bool(narrowed.any()):
                allowed[k] = narrowed
        if not bool(allowed[k].any()):
            ends = [t for t in fallback[k] if t < vocab] if k < len(fallback) else []
            if ends:
                allowed[k, ends] = True
            else:
                allowed[k] = True
    index = torch.tensor(list(rows), dtype=torch.long, device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
