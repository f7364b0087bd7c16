"""Loading an embedding model directory into an ``EmbeddingService``.

The registry calls ``load_embedding_service`` for cards that carry ``embedding``;
which files make the model (BERT weights, WordPiece ``tokenizer.json``,
sentence-transformers' pooling files) is decided here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import torch

from levant.catalog.card import ModelCard
from levant.config import Settings
from levant.embeddings.encoder import SentenceEncoder
from levant.embeddings.head import read_sentence_head
from levant.embeddings.service import EmbeddingService
from levant.embeddings.tokenizer import EmbeddingTokenizer
from levant.models.bert import build_bert
from levant.models.loaders.bert_hf import load_bert

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(path: Path) -> EmbeddingTokenizer:
    file = path / "tokenizer.json"
    if not file.is_file():
        raise ValueError(f"{path}: no tokenizer.json")
    return EmbeddingTokenizer.from_file(file)


def load_encoder(
    path: Path, *, pad_id: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> SentenceEncoder:
    """BERT weights + the directory's pooling and normalisation."""
    config, state_dict = load_bert(path)
    bert = build_bert(config, state_dict, dtype=dtype, device=device)
    return SentenceEncoder(bert, read_sentence_head(path), pad_id=pad_id)


def load_embedding_service(card: ModelCard, path: Path, settings: Settings) -> EmbeddingService:
    """The service for ``card`` from its pulled directory ``path``."""
    if card.embedding is None:
        raise ValueError(f"Model '{card.id}' is not an embedding model")
    tokenizer = load_tokenizer(path)
    # Weight-only formats (int8, int4) are for the generative engine: encoders run float32.
    dtype = _DTYPES.get(settings.dtype, torch.float32)
    encoder = load_encoder(path, pad_id=tokenizer.pad_id, dtype=dtype, device=settings.device)
    if encoder.dimension != card.embedding.dimension:
        raise ValueError(
            f"Model '{card.id}': the card says {card.embedding.dimension} dimensions, "
            f"the weights give {encoder.dimension}"
        )
    return EmbeddingService(card, tokenizer, encoder)
