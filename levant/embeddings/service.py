"""EmbeddingService: one loaded embedding model — card, tokenizer and encoder — that speaks text.

``tokenize`` turns texts into ids and refuses any input longer than the model
reads (truncation is never silent); ``embed`` runs the ids through the encoder in
padded batches on the service's own worker thread, so the event loop never waits
on a forward pass and two requests never share the model at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import torch

from levant.catalog.card import ModelCard
from levant.embeddings.encoder import SentenceEncoder
from levant.embeddings.tokenizer import EmbeddingTokenizer


class InputTooLong(ValueError):
    """Input ``index`` has ``tokens`` tokens; the model reads at most ``limit``."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        self.index = index
        self.tokens = tokens
        self.limit = limit
        super().__init__(
            f"Input {index} has {tokens} tokens, more than the {limit} tokens "
            "this model reads per input"
        )


class EmbeddingService:
    def __init__(
        self,
        card: ModelCard,
        tokenizer: EmbeddingTokenizer,
        encoder: SentenceEncoder,
        *,
        batch_size: int = 32,
        batch_tokens: int = 8192,
    ) -> None:
        self.card = card
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.batch_size = batch_size
        """Most inputs in one forward pass."""
        self.batch_tokens = batch_tokens
        """Most padded tokens (rows x longest row) in one forward pass."""
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{card.id}")

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    @property
    def max_input_tokens(self) -> int:
        """Per input, special tokens included: the card's limit within the encoder's."""
        return min(self.card.max_context_length, self.encoder.max_tokens)

    @property
    def normalized(self) -> bool:
        """Whether vectors come out unit-length."""
        return self.encoder.head.normalize

    def tokenize_now(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer.encode_batch(texts)
        limit = self.max_input_tokens
        for index, row in enumerate(ids):
            if len(row) > limit:
                raise InputTooLong(index, len(row), limit)
        return ids

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids per text; raises InputTooLong naming the first input over the limit."""
        return await asyncio.to_thread(self.tokenize_now, texts)

    def embed_now(self, ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """(len(ids), dimension) float32, in the order given; runs on the calling thread."""
        out = torch.empty((len(ids), self.dimension), dtype=torch.float32)
        for rows in self.batches([len(r) for r in ids]):
            out[rows] = self.encoder([ids[i] for i in rows])
        return out.numpy()

    async def embed(self, ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """As ``embed_now``, on the service's worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self.embed_now, ids)

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped for forward passes: longest first, so rows of similar length
        share a batch and little compute goes to padding."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            current = batches[-1] if batches else None
            # Sorted longest first: the batch's first row sets its padded width.
            if (
                current is None
                or len(current) >= self.batch_size
                or (len(current) + 1) * lengths[current[0]] > self.batch_tokens
            ):
                batches.append([i])
            else:
                current.append(i)
        return batches

    def shutdown(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
