"""Sentence embeddings: an encoder, pooling and normalisation behind ``EmbeddingService``.

Boundary: texts in, float32 vectors out (``service``), plus the wire-side shaping of
those vectors (``output``). The encoder itself is ``levant.models.bert``.
"""

from levant.embeddings.loader import load_embedding_service
from levant.embeddings.service import EmbeddingService, InputTooLong

__all__ = ["EmbeddingService", "InputTooLong", "load_embedding_service"]
