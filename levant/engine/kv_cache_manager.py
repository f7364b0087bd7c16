"""KVCacheManager: which blocks each request holds, prefix-cache lookups, allocation.

The scheduler asks three questions (what prefix is cached, can these tokens get slots,
free this request) and gets back ``KVCacheBlocks``, never the pool's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from levant.engine.block_hash import BlockHash, extend_block_hashes
from levant.engine.block_pool import BlockPool, KVCacheBlock
from levant.engine.request import Request


@dataclass(frozen=True)
class KVCacheBlocks:
    blocks: tuple[KVCacheBlock, ...] = ()

    def __len__(self) -> int:
        return len(self.blocks)

    def block_ids(self) -> list[int]:
        return [b.block_id for b in self.blocks]


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks, enable_caching)
        self._blocks: dict[str, list[KVCacheBlock]] = {}
        self._block_ids: dict[str, list[int]] = {}  # the same, as the runner's block table
        self._num_registered: dict[str, int] = {}  # leading blocks already in the prefix cache
        self.prefix_queries = 0  # tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which found

    @property
    def capacity_tokens(self) -> int:
        return self.pool.num_blocks * self.block_size

    @property
    def usage(self) -> float:
        return self.pool.usage

    def block_ids(self, request_id: str) -> list[int]:
        return self._block_ids.get(request_id, [])

    def get_computed_blocks(self, request: Request) -> tuple[KVCacheBlocks, int]:
        """The longest cached prefix of a request with nothing computed: (blocks, tokens).

        Stops one token short of the whole sequence: the last token must be computed
        for its logits.
        """
        if not self.enable_caching or not request.prefix_cache:
            return KVCacheBlocks(), 0
        extend_block_hashes(
            request.block_hashes, request.all_token_ids, self.block_size, request.extra_keys
        )
        hits: list[KVCacheBlock] = []
        for block_hash in request.block_hashes[: (request.num_tokens - 1) // self.block_size]:
            block = self.pool.get_cached_block(block_hash)
            if block is None:
                break
            hits.append(block)
        return KVCacheBlocks(tuple(hits)), len(hits) * self.block_size

    def cached_prefix_tokens(self, tokens: Sequence[int], extra: bytes) -> int:
        """How many leading tokens are cached now: read-only, an estimate for admission
        (from another thread the answer may be a step stale, never an error)."""
        if not self.enable_caching:
            return 0
        hashes: list[BlockHash] = []
        extend_block_hashes(hashes, tokens, self.block_size, extra)
        hits = 0
        for block_hash in hashes:
            if self.pool.get_cached_block(block_hash) is None:
                break
            hits += 1
        return hits * self.block_size

    def record_prefix_query(self, num_tokens: int, num_hits: int) -> None:
        self.prefix_queries += num_tokens
        self.prefix_hits += num_hits

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: KVCacheBlocks = KVCacheBlocks(),  # frozen: safe as a default
    ) -> KVCacheBlocks | None:
        """Slots for ``num_new_tokens`` after the computed ones (and the cache hits), or
        None when too few blocks are free; then nothing changes."""
        rid = request.request_id
        held = self._blocks.setdefault(rid, [])
        ids = self._block_ids.setdefault(rid, [])
        hits = new_computed_blocks.blocks
        total = request.num_computed_tokens + len(hits) * self.block_size + num_new_tokens
        num_needed = max(0, -(-total // self.block_size) - len(held) - len(hits))
        # Hits that sit in the free queue leave it when taken: they count against it too.
        free_hits = sum(1 for b in hits if b.ref_cnt == 0)
        if num_needed + free_hits > self.pool.num_free_blocks:
            return None
        self.pool.touch(list(hits))
        new = self.pool.get_new_blocks(num_needed)
        for block in (*hits, *new):
            held.append(block)
            ids.append(block.block_id)
        if self.enable_caching and request.prefix_cache:
            self._register_full_blocks(request, held, total)
        return KVCacheBlocks(tuple(new))

    def free(self, request: Request) -> None:
        rid = request.request_id
        blocks = self._blocks.pop(rid, [])
        self._block_ids.pop(rid, None)
        self._num_registered.pop(rid, None)
        self.pool.free_blocks(blocks[::-1])

    def _register_full_blocks(self, request: Request, held: list[KVCacheBlock], total: int) -> None:
        """Blocks full once this step has run become findable: a request scheduled later in
        the same step reads them only after they are written (each layer writes all of the
        step's keys/values before any attention)."""
        extend_block_hashes(
            request.block_hashes, request.all_token_ids, self.block_size, request.extra_keys
        )
        rid = request.request_id
        num_full = total // self.block_size
        for i in range(self._num_registered.get(rid, 0), num_full):
            self.pool.cache_block(held[i], request.block_hashes[i])
        self._num_registered[rid] = max(num_full, self._num_registered.get(rid, 0))
