"""``POST /v1/embeddings`` request body, Mistral's and OpenAI's in one model.

Mistral's fields (``output_dimension``, ``output_dtype``) and OpenAI's
(``dimensions``, ``user``) are both accepted; ``encoding_format`` is shared.
Unknown fields are refused (Mistral's spec forbids additional properties). The
response (``object: list`` of ``embedding`` items plus usage) is written directly
by the route: it can hold thousands of vectors.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from levant.embeddings.output import EncodingFormat, OutputDtype

MAX_INPUTS = 2048
"""Texts per request (OpenAI's limit)."""


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str]
    """Text to embed, or a list of texts (at most MAX_INPUTS)."""
    output_dimension: int | None = Field(default=None, gt=0)
    dimensions: int | None = Field(default=None, gt=0)
    """OpenAI's name for output_dimension."""
    output_dtype: OutputDtype = "float"
    encoding_format: EncodingFormat = "float"
    # Accepted for compatibility; they do not change the embeddings.
    metadata: dict[str, Any] | None = None
    user: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    @property
    def effective_dimension(self) -> int | None:
        return self.output_dimension if self.output_dimension is not None else self.dimensions
