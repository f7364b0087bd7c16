"""Prefix-cache keys: a full block's hash covers every token before it.

hash(block) = sha256(parent hash, block tokens, extra keys). Chaining through the parent
means equal hashes imply equal prefixes; the extra keys (model id, per-tenant cache salt)
keep otherwise identical prefixes apart. sha256 rather than Python's ``hash`` because
tenants choose the tokens: a collision would leak one tenant's cache to another.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

BlockHash = bytes


def extra_keys(model_id: str, cache_salt: str | None) -> bytes:
    """What besides the tokens must match for two blocks to share keys/values."""
    salt = "" if cache_salt is None else cache_salt
    # Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
    return b"".join(len(p).to_bytes(4, "little") + p for p in (model_id.encode(), salt.encode()))


def hash_block(parent: BlockHash | None, tokens: Sequence[int], extra: bytes) -> BlockHash:
    digest = hashlib.sha256(parent or b"\0" * 32)
    digest.update(array("q", tokens).tobytes())
    digest.update(extra)
    return digest.digest()


def extend_block_hashes(
    hashes: list[BlockHash], tokens: Sequence[int], block_size: int, extra: bytes
) -> None:
    """Append the hashes of full blocks of ``tokens`` not yet in ``hashes``."""
    for i in range(len(hashes), len(tokens) // block_size):
        parent = hashes[-1] if hashes else None
        hashes.append(hash_block(parent, tokens[i * block_size : (i + 1) * block_size], extra))
