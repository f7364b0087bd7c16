"""Attention over a paged KV cache, for a flattened batch of sequences in one forward pass.

Keys and values live together, one tensor per layer (the keys' heads, then the values'),
in fixed-size blocks of slots (slot = block * block_size + offset), in the cache's own
dtype (which may be narrower than the model's: bf16 keys and values for a quantized
model whose activations are float32);
which blocks belong to which sequence (its block table) is the engine's business. This
module writes each new token's key/value at the slot it is given and attends each
sequence over its own slots, honouring causality and the sliding window.

Sequences are attended in groups, one call per group and layer: every one-token (decode)
sequence together, and each longer chunk on its own. ``plan_attention`` builds the groups
once per step; every layer reuses them. The decode group runs Levant's C++ kernel
(``levant.kernels``: keys and values read in place, each sequence over its own context)
where it is built, else the plain path: gather the blocks into a copy padded to the
longest context, then SDPA with a mask. A chunk (prefill) of float32 queries runs the C++
prefill kernel (causal flash attention over the sequence's blocks, in place) where it is
built, else SDPA: causal over its own keys when it is the sequence's first, else over a
gathered copy with a mask.

``DecodeAttention`` is the same arithmetic for a step where every sequence decodes one
token, with tensors only (no Python-level groups): what ``torch.compile`` traces once for
any number of sequences and any context length.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from levant import kernels
from levant.models.config import ModelConfig


@dataclass
class PagedKVCache:
    kv: list[torch.Tensor]  # n_layers x (num_blocks * block_size, 2 * n_kv_heads, head_dim)
    block_size: int

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        """Keys and values of ``block_size`` tokens across all layers."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * config.n_layers * block_size * config.n_kv_heads * config.head_dim * itemsize

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> PagedKVCache:
        shape = (num_blocks * block_size, 2 * config.n_kv_heads, config.head_dim)
        return cls(
            kv=[_zeros(shape, dtype, torch.device(device)) for _ in range(config.n_layers)],
            block_size=block_size,
        )

    @property
    def num_blocks(self) -> int:
        return self.kv[0].shape[0] // self.block_size


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros; on the CPU in an anonymous memory map, whose pages the kernel hands out zeroed
    on first write: a 1 GiB cache costs resident memory for the slots in use, not 1 GiB at
    start (``torch.zeros`` writes every page)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    count = math.prod(shape)
    if count == 0:
        return torch.zeros(shape, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    pages = mmap.mmap(-1, count * itemsize)  # the tensor keeps the map alive
    return torch.frombuffer(pages, dtype=dtype, count=count).view(shape)


@dataclass(frozen=True)
class SequenceChunk:
    """One sequence's share of the flattened batch."""

    start: int  # row of its first new token in the flattened batch
    num_new: int  # new tokens this step, at positions num_cached .. num_cached + num_new - 1
    num_cached: int  # tokens whose keys/values are already in the cache
    block_table: list[int]  # blocks holding positions 0, block_size, 2 * block_size, ...


@dataclass(frozen=True)
class ChunkSpan:
    """A chunk's place in its sequence, for ``levant::paged_prefill_attention``."""

    num_cached: int  # positions before the chunk
    block_table: torch.Tensor  # (n,) the blocks holding positions 0 .. num_cached + Q - 1
    window: int  # the sliding window, 0 for none


@dataclass(frozen=True)
class AttentionGroup:
    """R sequences of Q new tokens each, attended in one SDPA call (padded to L keys)."""

    num_seqs: int  # R
    rows: torch.Tensor | slice  # (R * Q,) rows of the flattened batch, a slice if contiguous
    kv_blocks: torch.Tensor | None  # (R * n,) the first n blocks of each sequence's table, to
    # attend over L = n * block_size slots; None: attend only to its own new tokens
    mask: torch.Tensor | None  # (R, 1, Q, L) True where visible; None: plain causal
    bounds: torch.Tensor | None = None  # decode groups: (R, 2) [start, end) of the visible
    # positions of each sequence's one query (what the C++ kernel reads instead of the mask)
    chunk: ChunkSpan | None = None  # a chunk group: where its sequence's keys are (what
    # the C++ prefill kernel reads instead of a gathered copy and the mask)


def plan_attention(
    chunks: list[SequenceChunk], block_size: int, sliding_window: int | None, device: torch.device
) -> list[AttentionGroup]:
    groups: list[AttentionGroup] = []
    decodes = [c for c in chunks if c.num_new == 1]
    if decodes:
        groups.append(_decode_group(decodes, block_size, sliding_window, device))
    for c in chunks:
        if c.num_new > 1:
            groups.append(_chunk_group(c, block_size, sliding_window, device))
    return groups


def _blocks(tables: list[list[int]], num_blocks: int, device: torch.device) -> torch.Tensor:
    """(R * num_blocks,) each table's first blocks, padded with block 0 (masked out)."""
    padded = [b for t in tables for b in t[:num_blocks] + [0] * (num_blocks - len(t))]
    return torch.tensor(padded, dtype=torch.long, device=device)


def _decode_group(
    chunks: list[SequenceChunk], block_size: int, window: int | None, device: torch.device
) -> AttentionGroup:
    context = [c.num_cached + 1 for c in chunks]  # each query sees its cache and itself
    num_blocks = -(-max(context) // block_size)
    blocks = _blocks([c.block_table for c in chunks], num_blocks, device)
    k_pos = torch.arange(num_blocks * block_size, device=device)[None, :]  # (1, L)
    q_pos = torch.tensor([c.num_cached for c in chunks], device=device)[:, None]  # (R, 1)
    mask = k_pos <= q_pos
    if window is not None:
        mask &= q_pos - k_pos < window
    lo = [0 if window is None else max(0, c.num_cached - window + 1) for c in chunks]
    bounds = torch.tensor([[a, c.num_cached + 1] for a, c in zip(lo, chunks, strict=True)])
    starts = [c.start for c in chunks]
    first = starts[0]
    rows: torch.Tensor | slice = slice(first, first + len(starts))
    if starts != list(range(first, first + len(starts))):
        rows = torch.tensor(starts, dtype=torch.long, device=device)
    mask4 = mask[:, None, None, :]  # (R, 1, 1, L)
    return AttentionGroup(len(chunks), rows, blocks, mask4, bounds.to(device))


def _chunk_group(
    c: SequenceChunk, block_size: int, window: int | None, device: torch.device
) -> AttentionGroup:
    rows = slice(c.start, c.start + c.num_new)
    end = c.num_cached + c.num_new
    num_blocks = -(-end // block_size)
    blocks = _blocks([c.block_table], num_blocks, device)
    span = ChunkSpan(c.num_cached, blocks, window or 0)
    if c.num_cached == 0 and (window is None or end <= window):
        # A fresh prefill: causal over its own tokens.
        return AttentionGroup(1, rows, None, None, chunk=span)
    q_pos = torch.arange(c.num_cached, end, device=device)[:, None]  # (Q, 1)
    k_pos = torch.arange(num_blocks * block_size, device=device)[None, :]  # (1, L)
    mask = k_pos <= q_pos
    if window is not None:
        mask &= q_pos - k_pos < window
    return AttentionGroup(1, rows, blocks, mask[None, None], chunk=span)  # mask (1, 1, Q, L)


@dataclass
class PagedAttention:
    """The ``AttentionBackend`` for one step of a flattened batch (B = 1, T = all new tokens)."""

    cache: PagedKVCache
    slot_mapping: torch.Tensor  # (N,) where each new token's key/value is written
    groups: list[AttentionGroup]

    def __call__(self, layer: int, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        q, kv = q[0], kv[0]  # (N, n_heads, head_dim), (N, 2 * n_kv_heads, head_dim)
        kv_cache = self.cache.kv[layer]
        kv_cache.index_copy_(0, self.slot_mapping, kv.to(kv_cache.dtype))
        if len(self.groups) == 1:  # all decodes, or one prefill: rows are 0..N-1 in order
            return self._attend(self.groups[0], q, kv, kv_cache)[None]
        out = torch.empty_like(q)  # (N, n_heads, head_dim)
        for group in self.groups:
            out[group.rows] = self._attend(group, q, kv, kv_cache)
        return out[None]  # (1, N, n_heads, head_dim)

    def _attend(
        self, group: AttentionGroup, q: torch.Tensor, kv: torch.Tensor, kv_cache: torch.Tensor
    ) -> torch.Tensor:
        """This group's queries (R * Q, n_heads, hd) -> their outputs, the same shape."""
        R, (_, n_heads, hd), n_kv_heads = group.num_seqs, q.shape, kv.shape[1] // 2
        kernel = kernel_takes(q, kv_cache) and kernels.load()
        if group.bounds is not None and group.kv_blocks is not None and kernel:
            out: torch.Tensor = torch.ops.levant.paged_decode_attention(
                q[group.rows].contiguous(),
                kv_cache,
                group.kv_blocks.view(R, -1),
                group.bounds,
                self.cache.block_size,
                hd**-0.5,
            )
            return out  # (R, n_heads, hd)
        if group.chunk is not None and kernel and q.dtype == torch.float32:
            span = group.chunk
            out = torch.ops.levant.paged_prefill_attention(
                q[group.rows].contiguous(),
                kv_cache,
                span.block_table,
                span.num_cached,
                span.window,
                self.cache.block_size,
                hd**-0.5,
            )
            return out  # (Q, n_heads, hd)
        qg = q[group.rows].view(R, -1, n_heads, hd)  # (R, Q, n_heads, hd)
        if group.kv_blocks is None:
            kvg = kv[group.rows].view(R, -1, 2 * n_kv_heads, hd)  # (R, Q, 2 * n_kv_heads, hd)
        else:
            kvg = gather_blocks(kv_cache, group.kv_blocks, self.cache.block_size, R)
            # In the cache's dtype: a bf16 cache under float32 activations (quantized
            # models) attends in bf16, twice the speed of casting the copy up.
            return attend_group(qg.to(kvg.dtype), kvg, group.mask).to(q.dtype)
        return attend_group(qg, kvg, group.mask)


def kernel_takes(q: torch.Tensor, kv_cache: torch.Tensor) -> bool:
    """Whether Levant's attention kernels take these tensors: CPU ones, float32 or bf16
    (``kernels.load()`` says whether they are built; the prefill kernel also wants float32
    queries)."""
    ok = (torch.float32, torch.bfloat16)
    on_cpu = q.device.type == "cpu" and kv_cache.device.type == "cpu"
    return on_cpu and q.dtype in ok and kv_cache.dtype in ok


def gather_blocks(kv_cache: torch.Tensor, blocks: torch.Tensor, bs: int, R: int) -> torch.Tensor:
    """(R * n,) block ids -> (R, n * bs, 2 * n_kv_heads, hd): each sequence's slots in order.
    Whole blocks are contiguous, so index_select copies them at memcpy speed."""
    kvg = kv_cache.view(-1, bs, *kv_cache.shape[1:]).index_select(0, blocks)
    return kvg.view(R, -1, *kv_cache.shape[1:])


def attend_group(qg: torch.Tensor, kvg: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """qg (R, Q, n_heads, hd) over kvg (R, L, 2 * n_kv_heads, hd) -> (R * Q, n_heads, hd)."""
    n_heads, hd, n_kv_heads = qg.shape[2], qg.shape[3], kvg.shape[2] // 2
    kg, vg = kvg[:, :, :n_kv_heads], kvg[:, :, n_kv_heads:]
    qg, kg, vg = (t.transpose(1, 2) for t in (qg, kg, vg))  # (R, heads, Q or L, hd)
    out = F.scaled_dot_product_attention(
        qg,
        kg,
        vg,
        attn_mask=mask,
        is_causal=mask is None and qg.shape[2] > 1,
        enable_gqa=n_heads != n_kv_heads,
    )  # (R, n_heads, Q, hd)
    return out.transpose(1, 2).reshape(-1, n_heads, hd)  # (R * Q, n_heads, hd)


@dataclass
class DecodeAttention:
    """The ``AttentionBackend`` for a step of R sequences that each decode one token, rows
    0..R-1 in order; the same result as ``PagedAttention`` with one decode group."""

    cache: PagedKVCache
    slot_mapping: torch.Tensor  # (R,) where each new token's key/value is written
    kv_blocks: torch.Tensor  # (R * n,) the first n blocks of each sequence's table
    mask: torch.Tensor  # (R, 1, 1, n * block_size) True where visible
    bounds: torch.Tensor  # (R, 2) [start, end) of the visible positions
    kernel: bool = field(default_factory=kernels.load)  # the C++ kernel, not gather + SDPA

    @classmethod
    def of(
        cls, cache: PagedKVCache, slot_mapping: torch.Tensor, group: AttentionGroup
    ) -> DecodeAttention:
        assert group.kv_blocks is not None and group.mask is not None
        assert group.bounds is not None
        return cls(cache, slot_mapping, group.kv_blocks, group.mask, group.bounds)

    def __call__(self, layer: int, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        q, kv = q[0], kv[0]  # (R, n_heads, head_dim), (R, 2 * n_kv_heads, head_dim)
        kv_cache = self.cache.kv[layer]
        kv_cache.index_copy_(0, self.slot_mapping, kv.to(kv_cache.dtype))
        R, bs = q.shape[0], self.cache.block_size
        if self.kernel and kernel_takes(q, kv_cache):  # (no lock taken here: dynamo traces it)
            out: torch.Tensor = torch.ops.levant.paged_decode_attention(
                q.contiguous(),
                kv_cache,
                self.kv_blocks.view(R, -1),
                self.bounds,
                bs,
                q.shape[-1] ** -0.5,
            )
            return out[None]  # (1, R, n_heads, head_dim)
        kvg = gather_blocks(kv_cache, self.kv_blocks, bs, R).to(q.dtype)
        return attend_group(q[:, None], kvg, self.mask)[None]  # (1, R, n_heads, head_dim)
