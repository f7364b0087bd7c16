"""Health: whether a deployment is up, as far as something outside the request path knows.

The circuit breaker is the passive signal (recent failures); this is the
active one (a health check, an operator draining a deployment, the local
engine not loaded). The router asks both before every attempt.
"""

from __future__ import annotations

from typing import Protocol

from levant.routing.deployment import Deployment


class Health(Protocol):
    def is_up(self, deployment: Deployment) -> bool: ...


class StaticHealth:
    """Up unless marked down (by name): for operators, health probes and tests."""

    def __init__(self, down: set[str] | None = None) -> None:
        self._down = set(down or ())

    def is_up(self, deployment: Deployment) -> bool:
        return deployment.name not in self._down

    def mark_down(self, name: str) -> None:
        self._down.add(name)

    def mark_up(self, name: str) -> None:
        self._down.discard(name)
