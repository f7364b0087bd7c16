"""What the running app holds: settings, the model registry and readiness."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from levant.access.limits import Limiter, SpendGuard
from levant.access.limits.workspace import WorkspaceLimits
from levant.access.principal_cache import PrincipalCache
from levant.access.startup import Platform
from levant.access.usage import UsageWriter
from levant.api.gateway import Gateway
from levant.config import Settings
from levant.serving.registry import ModelRegistry


@dataclass
class Limits:
    """Rate/token limiter, spend guard and the stored per-workspace limits."""

    limiter: Limiter
    spend: SpendGuard
    workspace: WorkspaceLimits


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry
    platform: Platform
    """Database, server secret and tenancy."""
    usage: UsageWriter
    limits: Limits
    gateway: Gateway
    """Deployments, the residency router and upstream clients."""
    ready: bool = False
    """False while the default model loads: /health answers 503 until then."""
    load_error: str | None = None
    preload: list[str] = field(default_factory=list)
    principals: PrincipalCache = field(default_factory=PrincipalCache)
    """Authenticated API keys (and the auth-off principal), for ``auth_cache_ttl_s``."""
    background: set[asyncio.Task[None]] = field(default_factory=set)
    """Fire-and-forget tasks (limit settlements) kept alive until they finish."""
