"""SentenceEncoder: a batch of token id sequences -> one embedding per sequence.

Boundary: ids in, float32 vectors (on the CPU) out; runs one padded forward pass
of the encoder, then the model's pooling and normalisation. Which inputs share a
batch, and on which thread, is the service's business.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from levant.embeddings.head import SentenceHead
from levant.embeddings.pooling import l2_normalize, pool
from levant.models.bert import BertEncoder


class SentenceEncoder:
    def __init__(self, bert: BertEncoder, head: SentenceHead, *, pad_id: int = 0) -> None:
        self.bert = bert
        self.head = head
        self.pad_id = pad_id
        self.device = bert.embeddings.token.weight.device

    @property
    def dimension(self) -> int:
        return self.bert.config.dim

    @property
    def max_tokens(self) -> int:
        """Longest input, special tokens included: the trained length, within the positions."""
        positions = self.bert.config.max_position
        trained = self.head.max_seq_length
        return min(positions, trained) if trained is not None else positions

    def __call__(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        """len(batch) id sequences (none empty) -> (len(batch), dimension) float32."""
        T = max(len(ids) for ids in batch)
        tokens = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for row, ids in enumerate(batch):
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            h = self.bert(tokens, mask).float()  # (B, T, dim), pooled in float32
            v = pool(h, mask, self.head.pooling)  # (B, dim)
            if self.head.normalize:
                v = l2_normalize(v)
        return v.cpu()
