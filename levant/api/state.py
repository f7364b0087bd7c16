"""What the running app holds: settings, the model registry and readiness."""

from __future__ import annotations

from dataclasses import dataclass, field

from levant.access.startup import Platform
from levant.access.usage import UsageWriter
from levant.config import Settings
from levant.serving.registry import ModelRegistry


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry
    platform: Platform
    """Database, server secret and tenancy."""
    usage: UsageWriter
    ready: bool = False
    """False while the default model loads: /health answers 503 until then."""
    load_error: str | None = None
    preload: list[str] = field(default_factory=list)
