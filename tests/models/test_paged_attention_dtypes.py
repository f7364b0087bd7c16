"""A bf16 paged cache under float32 activations (what int8/int4 models get): a mixed step
(a chunk over cached positions, decodes) gives what float32 attention over the same
bf16-rounded keys and values gives, within bf16's precision, and the result stays float32.
"""

from __future__ import annotations

import pytest
import torch

from levant.models.paged_attention import (
    PagedAttention,
    PagedKVCache,
    SequenceChunk,
    plan_attention,
)


@pytest.mark.parametrize("window", [None, 6])
def test_bf16_cache_under_float32_activations(window: int | None) -> None:
    g = torch.Generator().manual_seed(11)
    bs, kv_heads, heads, hd = 4, 2, 4, 16
    cache32 = torch.randn(40 * bs, 2 * kv_heads, hd, generator=g).bfloat16().float()
    chunks = [SequenceChunk(0, 5, 7, [3, 7, 1]), SequenceChunk(5, 1, 9, [5, 6, 9])]
    slots = [7 * bs + 3, 1 * bs, 1 * bs + 1, 1 * bs + 2, 1 * bs + 3, 9 * bs + 1]
    q = torch.randn(1, 6, heads, hd, generator=g)
    kv = torch.randn(1, 6, 2 * kv_heads, hd, generator=g).bfloat16().float()
    groups = plan_attention(chunks, bs, window, torch.device("cpu"))
    expected = PagedAttention(PagedKVCache([cache32.clone()], bs), torch.tensor(slots), groups)(
        0, q, kv
    )
    cache16 = PagedKVCache([cache32.bfloat16()], bs)
    got = PagedAttention(cache16, torch.tensor(slots), groups)(0, q, kv)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=3e-2, atol=3e-2)
    assert cache16.kv[0].dtype == torch.bfloat16  # the step's keys/values were written, cast
    torch.testing.assert_close(cache16.kv[0][torch.tensor(slots)].float(), kv[0])
