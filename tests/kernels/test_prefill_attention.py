"""``levant::paged_prefill_attention`` (C++, built by ``levant.kernels``) against the plain
PyTorch path it replaces: gather the sequence's blocks into a copy, then
``F.scaled_dot_product_attention`` with the causal (and sliding-window) mask -- PyTorch's
attention, not the code under test. Random block tables, chunk sizes and offsets (inside
and across blocks, shorter and longer than the kernel's query and key tiles), windows and
head layouts.
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
    kernel_takes,
    plan_attention,
)

pytestmark = pytest.mark.skipif(not kernels.load(), reason="no C++ compiler: kernels are off")


def reference(q, cache, table, cached, window, bs):  # type: ignore[no-untyped-def]
    T = q.shape[0]
    n = table.shape[0]
    k_pos = torch.arange(n * bs)[None, :]
    q_pos = torch.arange(cached, cached + T)[:, None]
    mask = k_pos <= q_pos
    if window:
        mask &= q_pos - k_pos < window
    kvg = gather_blocks(cache, table, bs, 1).float()
    return attend_group(q[None], kvg, mask[None, None])


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim"),
    [(9, 3, 64), (4, 4, 32), (8, 2, 128), (6, 3, 24), (10, 2, 32)],  # 24: plain loops for P V
)
@pytest.mark.parametrize(
    ("T", "cached", "window"),
    [
        (1, 0, 0),
        (7, 0, 0),
        (256, 0, 0),  # a fresh prefill chunk
        (100, 37, 0),  # after cached positions, not block-aligned
        (130, 200, 0),  # more keys than a key tile
        (90, 120, 50),  # a sliding window shorter than the chunk
        (33, 5, 3),  # a window shorter than the query tile
        (40, 0, 300),  # a window longer than the context
    ],
)
def test_matches_gather_then_sdpa(
    cache_dtype: torch.dtype,
    heads: int,
    kv_heads: int,
    head_dim: int,
    T: int,
    cached: int,
    window: int,
) -> None:
    g = torch.Generator().manual_seed(heads * 1000 + head_dim + T + cached)
    bs, num_blocks = 16, 40
    cache = torch.randn(num_blocks * bs, 2 * kv_heads, head_dim, generator=g).to(cache_dtype)
    n = -(-(cached + T) // bs)
    table = torch.randperm(num_blocks, generator=g)[:n]
    q = torch.randn(T, heads, head_dim, generator=g)
    op = torch.ops.levant.paged_prefill_attention
    got = op(q, cache, table, cached, window, bs, head_dim**-0.5)
    assert got.dtype == torch.float32 and got.shape == (T, heads, head_dim)
    want = reference(q, cache, table, cached, window, bs)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def tiles_here() -> bool:
    return kernels.load() and bool(torch.ops.levant.prefill_attention_tiles())


@pytest.mark.skipif(not tiles_here(), reason="no AMX-BF16 here (or the kernel does not grant it)")
@pytest.mark.parametrize(
    ("heads", "kv_heads", "T", "cached"),
    [(9, 3, 28, 976), (9, 3, 256, 0), (4, 4, 7, 40), (8, 4, 33, 100), (6, 2, 70, 5)],
)
def test_amx_tiles_and_float32_loops_agree(heads: int, kv_heads: int, T: int, cached: int) -> None:
    """With AMX on, a bf16 cache's scores and P V are tile products (queries and weights
    split into bf16 halves); with it off, float32 loops. Both match the reference as
    closely, and the switch does change the path (the two differ in the last bits)."""
    g = torch.Generator().manual_seed(T + cached)
    bs, num_blocks, head_dim = 16, 80, 64
    cache = torch.randn(num_blocks * bs, 2 * kv_heads, head_dim, generator=g).bfloat16()
    table = torch.randperm(num_blocks, generator=g)[: -(-(cached + T) // bs)]
    q = torch.randn(T, heads, head_dim, generator=g)
    op = torch.ops.levant
    previous = op.set_amx(True)
    try:
        tiles = op.paged_prefill_attention(q, cache, table, cached, 0, bs, head_dim**-0.5)
        op.set_amx(False)
        loops = op.paged_prefill_attention(q, cache, table, cached, 0, bs, head_dim**-0.5)
    finally:
        op.set_amx(previous)
    want = reference(q, cache, table, cached, 0, bs)
    torch.testing.assert_close(tiles, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loops, want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(tiles, loops)


def test_bad_input_is_refused_not_read() -> None:
    cache = torch.zeros(4 * 16, 2, 8)
    q = torch.zeros(3, 2, 8)
    op = torch.ops.levant.paged_prefill_attention
    with pytest.raises(RuntimeError, match="block id out of the cache"):
        op(q, cache, torch.tensor([9]), 0, 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="block table ends before the chunk"):
        op(q, cache, torch.tensor([0]), 14, 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="head sizes"):
        op(torch.zeros(3, 3, 8), torch.zeros(64, 4, 8), torch.tensor([0]), 0, 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="float32"):
        op(q.bfloat16(), cache, torch.tensor([0]), 0, 0, 16, 1.0)
    with pytest.raises(RuntimeError, match="window >= 0"):
        op(q, cache, torch.tensor([0]), 0, -1, 16, 1.0)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 5])
def test_paged_attention_chunks_are_the_same_with_and_without_the_kernel(
    monkeypatch: pytest.MonkeyPatch, cache_dtype: torch.dtype, window: int | None
) -> None:
    """A mixed step through ``PagedAttention``: a fresh prefill chunk, a chunk after
    cached positions and a decode. With the kernels off, the chunks take SDPA (causal over
    their own keys, or over a gathered copy with a mask)."""
    g = torch.Generator().manual_seed(5)
    bs, kv_heads, heads, hd = 4, 2, 6, 32
    cache = PagedKVCache([torch.randn(40 * bs, 2 * kv_heads, hd, generator=g).to(cache_dtype)], bs)
    chunks = [
        SequenceChunk(0, 11, 0, [3, 7, 1]),  # fresh: positions 0..10
        SequenceChunk(11, 6, 9, [5, 6, 8, 9]),  # positions 9..14
        SequenceChunk(17, 1, 13, [10, 11, 12, 13]),  # a decode at position 13
    ]
    slots = [b * bs + i for b in (3, 7) for i in range(bs)] + [1 * bs + i for i in range(3)]
    slots += [8 * bs + 1, 8 * bs + 2, 8 * bs + 3, 9 * bs, 9 * bs + 1, 9 * bs + 2, 13 * bs + 1]
    q = torch.randn(1, 18, heads, hd, generator=g)
    kv = torch.randn(1, 18, 2 * kv_heads, hd, generator=g)
    groups = plan_attention(chunks, bs, window, torch.device("cpu"))
    assert [grp.chunk is not None for grp in groups] == [False, True, True]
    with_kernel = PagedAttention(cache, torch.tensor(slots), groups)(0, q, kv)
    monkeypatch.setattr(kernels, "load", lambda: False)
    plain = PagedAttention(cache, torch.tensor(slots), groups)(0, q, kv)
    # The fresh chunk's plain path attends over its own float32 keys; the kernel reads them
    # back from the cache (bf16 there).
    tol = 1e-5 if cache_dtype == torch.float32 else 2e-2
    torch.testing.assert_close(with_kernel, plain, rtol=tol, atol=tol)


def test_the_kernels_take_cpu_float32_or_bf16_tensors_only() -> None:
    """Other devices (a GPU deployment) and dtypes take PyTorch's attention instead."""
    q, cache = torch.zeros(2, 4, 8), torch.zeros(16, 4, 8, dtype=torch.bfloat16)
    assert kernel_takes(q, cache) and kernel_takes(q.bfloat16(), cache.float())
    assert not kernel_takes(q.to("meta"), cache) and not kernel_takes(q, cache.to("meta"))
    assert not kernel_takes(q.half(), cache)
