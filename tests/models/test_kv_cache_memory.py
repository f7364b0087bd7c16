"""The paged KV cache on the CPU: zeros that cost resident memory only where written (an
anonymous memory map), so a server's default 1 GiB cache does not take 1 GiB at start."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from levant.models.config import ModelConfig
from levant.models.paged_attention import PagedKVCache

CONFIG = ModelConfig(
    vocab_size=256,
    dim=64,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=128,
    head_dim=64,
    max_position=512,
)


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / (1 << 20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_a_large_cache_is_zeros_and_costs_memory_only_where_written() -> None:
    before = resident_mib()
    # 4 layers x 2048 blocks x 16 slots x 4 heads x 64 x 2 bytes: 128 MiB per layer.
    cache = PagedKVCache.allocate(CONFIG, 2048, 16, torch.bfloat16, torch.device("cpu"))
    assert resident_mib() - before < 32  # 512 MiB allocated, next to nothing resident
    assert cache.num_blocks == 2048
    for kv in cache.kv:
        assert kv.shape == (2048 * 16, 4, 64) and kv.dtype == torch.bfloat16
        assert kv.is_contiguous() and kv.data_ptr() % 64 == 0
    cache.kv[1][:160] = 1.5  # ten blocks written
    assert torch.equal(cache.kv[1][:160], torch.full((160, 4, 64), 1.5, dtype=torch.bfloat16))
    assert not cache.kv[1][160:320].any() and not cache.kv[0][:160].any()  # zeros elsewhere
    assert resident_mib() - before < 32
