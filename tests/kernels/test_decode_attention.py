"""``levant::paged_decode_attention`` (C++, built by ``levant.kernels``) against the plain
PyTorch path it replaces: gather each sequence's blocks into a padded copy, then
``F.scaled_dot_product_attention`` with the visibility mask -- PyTorch's attention, not
the code under test. Random block tables, contexts, sliding windows and head layouts.
"""

from __future__ import annotations

import pytest
import torch

from levant import kernels
from levant.models.paged_attention import (
    PagedAttention,
    PagedKVCache,
    SequenceChunk,
    attend_group,
    gather_blocks,
    plan_attention,
)

pytestmark = pytest.mark.skipif(not kernels.load(), reason="no C++ compiler: kernels are off")


def reference(q, cache, tables, bounds, bs):  # type: ignore[no-untyped-def]
    R, n = tables.shape
    L = n * bs
    k_pos = torch.arange(L)[None, :]
    mask = (k_pos >= bounds[:, :1]) & (k_pos < bounds[:, 1:])  # (R, L)
    kvg = gather_blocks(cache, tables.reshape(-1), bs, R)
    return attend_group(q.float()[:, None], kvg.float(), mask[:, None, None, :])


@pytest.mark.parametrize(
    ("dtype", "cache_dtype"),
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.bfloat16),
    ],  # float32 activations over a bf16 cache (int4 models)
)
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim"),
    [(9, 3, 64), (4, 4, 32), (8, 2, 128), (6, 3, 24), (10, 2, 32)],  # last: plain loops (G = 5)
)
def test_matches_gather_then_sdpa(
    dtype: torch.dtype, cache_dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int
) -> None:
    g = torch.Generator().manual_seed(heads * 1000 + head_dim)
    bs, num_blocks, R = 16, 64, 7
    cache = torch.randn(num_blocks * bs, 2 * kv_heads, head_dim, generator=g).to(cache_dtype)
    ends = torch.randint(1, 200, (R,), generator=g)
    n = int(-(-ends.max() // bs))
    tables = torch.stack([torch.randperm(num_blocks, generator=g)[:n] for _ in range(R)])
    window = torch.randint(1, 64, (R,), generator=g)
    starts = torch.where(torch.arange(R) % 2 == 0, 0, (ends - window).clamp(min=0))
    bounds = torch.stack([starts, ends], dim=1).contiguous()
    q = torch.randn(R, heads, head_dim, generator=g).to(dtype)
    got = torch.ops.levant.paged_decode_attention(q, cache, tables, bounds, bs, head_dim**-0.5)
    assert got.dtype == dtype and got.shape == (R, heads, head_dim)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # the reference reads the same bf16 cache
    torch.testing.assert_close(
        got.float(), reference(q, cache, tables, bounds, bs), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("bs", [8, 32])
def test_other_block_sizes_over_a_bf16_cache(bs: int) -> None:
    """Blocks of 8 and 32 slots: the bf16 path scores 16 slots at a time (a block of 32 in
    two passes, one of 8 in a partial one)."""
    g = torch.Generator().manual_seed(bs)
    num_blocks, R, heads, kv_heads, head_dim = 48, 5, 9, 3, 64
    cache = torch.randn(num_blocks * bs, 2 * kv_heads, head_dim, generator=g).to(torch.bfloat16)
    ends = torch.randint(1, 8 * bs, (R,), generator=g)
    n = int(-(-ends.max() // bs))
    tables = torch.stack([torch.randperm(num_blocks, generator=g)[:n] for _ in range(R)])
    starts = torch.where(torch.arange(R) % 2 == 0, 0, (ends - 21).clamp(min=0))
    bounds = torch.stack([starts, ends], dim=1).contiguous()
    q = torch.randn(R, heads, head_dim, generator=g)
    got = torch.ops.levant.paged_decode_attention(q, cache, tables, bounds, bs, head_dim**-0.5)
    torch.testing.assert_close(got, reference(q, cache, tables, bounds, bs), rtol=1e-5, atol=1e-5)


def test_bad_input_is_refused_not_read() -> None:
    cache = torch.zeros(4 * 16, 2, 8)
    q = torch.zeros(1, 2, 8)
    op = torch.ops.levant.paged_decode_attention
    with pytest.raises(RuntimeError, match="block id out of the cache"):
        op(q, cache, torch.tensor([[9]]), torch.tensor([[0, 5]]), 16, 1.0)
    with pytest.raises(RuntimeError, match="bounds out of the block table"):
        op(q, cache, torch.tensor([[0]]), torch.tensor([[0, 17]]), 16, 1.0)
    with pytest.raises(RuntimeError, match="bounds out of the block table"):
        op(q, cache, torch.tensor([[0]]), torch.tensor([[3, 3]]), 16, 1.0)
    with pytest.raises(RuntimeError, match="head sizes"):
        op(
            torch.zeros(1, 3, 8),
            torch.zeros(64, 4, 8),
            torch.tensor([[0]]),
            torch.tensor([[0, 1]]),
            16,
            1.0,
        )


@pytest.mark.parametrize("window", [None, 5])
def test_paged_attention_decode_group_is_the_same_with_and_without_the_kernel(
    monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    """A mixed step (decodes and a chunk) through ``PagedAttention``: the kernel's decode
    group gives what the gather + SDPA path gives."""
    g = torch.Generator().manual_seed(3)
    bs, kv_heads, heads, hd = 4, 2, 4, 16
    cache = PagedKVCache([torch.randn(40 * bs, 2 * kv_heads, hd, generator=g)], bs)
    chunks = [
        SequenceChunk(0, 1, 9, [3, 7, 1]),
        SequenceChunk(1, 6, 2, [5, 6]),
        SequenceChunk(7, 1, 0, [8]),
        SequenceChunk(8, 1, 13, [10, 11, 12, 13]),
    ]
    slots = [3 * bs + 1, 5 * bs + 2, 5 * bs + 3, 6 * bs, 6 * bs + 1, 6 * bs + 2, 6 * bs + 3]
    slots += [8 * bs, 13 * bs + 1]
    q = torch.randn(1, 9, heads, hd, generator=g)
    kv = torch.randn(1, 9, 2 * kv_heads, hd, generator=g)
    groups = plan_attention(chunks, bs, window, torch.device("cpu"))
    with_kernel = PagedAttention(cache, torch.tensor(slots), groups)(0, q, kv)
    monkeypatch.setattr(kernels, "load", lambda: False)
    plain = PagedAttention(cache, torch.tensor(slots), groups)(0, q, kv)
    torch.testing.assert_close(with_kernel, plain, rtol=1e-5, atol=1e-5)
