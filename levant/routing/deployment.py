"""Deployment: one place a model is served — the local engine, a Ray Serve app or an upstream.

Every deployment has a region; the router only ever sends a request to a
deployment whose region (and retention guarantee) the workspace policy allows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

Backend = Literal["local", "upstream", "ray"]
Dialect = Literal["mistral", "openai"]

LOCAL_DEPLOYMENT = "local"
"""Name of the implicit deployment for a model the local engine serves without config."""


class UpstreamConfig(BaseModel):
    """An OpenAI- or Mistral-compatible server: another Levant, vLLM, a vendor's API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl
    """Base URL; requests go to ``<url>/v1/chat/completions`` unless it already ends in /v1."""
    model: str | None = None
    """The upstream's name for the model; default: the deployment's model."""
    api_key_env: str | None = None
    """Name of the environment variable holding the key (the key never lives in config)."""
    dialect: Dialect = "mistral"
    """``openai`` upstreams are asked for ``stream_options.include_usage`` to get usage."""
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    """Longest silence between two reads (the first byte included)."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries on this deployment before failing over; only before the first byte is passed on."""
    backoff_base_s: float = Field(default=0.05, ge=0)
    backoff_max_s: float = Field(default=1.0, ge=0)
    max_connections: int = Field(default=256, ge=1)

    @property
    def chat_url(self) -> str:
        base = str(self.url).rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class BreakerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failures that open the circuit."""
    cooldown_s: float = Field(default=30.0, gt=0)
    """How long an open circuit refuses requests before letting one probe through."""


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1)
    """The model name clients ask for (a catalogue id, or any name an upstream serves)."""
    region: str
    backend: Backend
    upstream: UpstreamConfig | None = None
    """How to reach an ``upstream``, or a ``ray`` deployment's Serve proxy (``url``); the
    same client serves both, with its timeouts and retries (a Ray replica lost before its
    first token is retried through the proxy, which routes to a live one)."""
    weight: int = Field(default=1, ge=1)
    """Among equally preferred deployments, traffic is spread in proportion to weight."""
    zero_retention: bool | None = None
    """Whether the backend keeps no prompt or completion text. Default: true for the local
    engine and Ray replicas (Levant writes none in zero mode), false for upstreams."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @model_validator(mode="after")
    def _backend_fields(self) -> Deployment:
        if self.backend == "upstream" and self.upstream is None:
            raise ValueError("an upstream deployment needs an [upstream] table with its url")
        if self.backend == "ray" and self.upstream is None:
            raise ValueError(
                "a ray deployment needs an [upstream] table with its Serve proxy's url "
                "(the one `levant deploy ray` prints)"
            )
        if self.backend == "local" and self.upstream is not None:
            raise ValueError("a local deployment takes no [upstream] table")
        return self

    @property
    def remote(self) -> bool:
        """Served over HTTP (an upstream, or Ray Serve replicas behind their proxy)."""
        return self.backend in ("upstream", "ray")

    @property
    def retains_nothing(self) -> bool:
        if self.zero_retention is not None:
            return self.zero_retention
        return self.backend != "upstream"

    @property
    def upstream_model(self) -> str:
        return (self.upstream.model if self.upstream else None) or self.model

    @classmethod
    def local(cls, model: str, region: str, name: str = LOCAL_DEPLOYMENT) -> Deployment:
        """The local engine's deployment of ``model``, in the gateway's own region."""
        return cls(name=name, model=model, region=region, backend="local")
