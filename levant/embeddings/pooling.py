"""Token states -> one sentence vector: mean / [CLS] / max pooling, then L2 normalisation.

Boundary: tensors in, tensors out; padding is described by the attention mask and
never contributes to a sentence's vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from levant.embeddings.head import Pooling


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """h (B, T, dim), mask (B, T) -> (B, dim): the average of the real tokens' states."""
    m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def cls_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of the first token ([CLS]); (B, dim)."""
    return h[:, 0]


def max_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per dimension, the largest value over the real tokens; (B, dim)."""
    return h.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(h.dtype).min).amax(dim=1)


_POOLS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


def pool(h: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    return _POOLS[mode](h, mask)


def l2_normalize(v: torch.Tensor) -> torch.Tensor:
    """Unit length along the last dimension, so cosine similarity is a dot product."""
    return F.normalize(v, p=2.0, dim=-1)
