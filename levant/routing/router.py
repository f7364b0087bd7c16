"""Router: (model, residency policy, health) -> the deployments that may serve, in order.

The one invariant: every attempt — first try, retry or fallback — goes to a
deployment whose region and retention guarantee the policy allows. When none
can serve, ``NoDeploymentInPolicy`` says so and names the policy; the request
is never sent anywhere else. What an attempt does (run the local engine, call
an upstream) is the caller's function, so the router knows no wire format.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from levant.routing.breaker import BreakerState, CircuitBreaker
from levant.routing.deployment import Deployment
from levant.routing.errors import DeploymentFailure
from levant.routing.health import Health, StaticHealth
from levant.routing.regions import ResidencyPolicy

T = TypeVar("T")

Attempt = Callable[[Deployment], Awaitable[T]]
"""Serve the request on one deployment. Raise ``DeploymentFailure(retryable=True)`` (or an
upstream error) to fail over; return only once the result is safe to commit to (for a
stream: its first event has arrived, see ``backend.primed``)."""


class Breakers:
    """One circuit breaker per deployment, made on first use from its ``breaker`` config."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_name: dict[str, CircuitBreaker] = {}

    def get(self, deployment: Deployment) -> CircuitBreaker:
        breaker = self._by_name.get(deployment.name)
        if breaker is None:
            cfg = deployment.breaker
            breaker = CircuitBreaker(cfg.failure_threshold, cfg.cooldown_s, clock=self._clock)
            self._by_name[deployment.name] = breaker
        return breaker


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    deployment: str
    region: str
    outcome: str
    """"ok", "down", "circuit open", or the failure's reason."""


class NoDeploymentInPolicy(LookupError):
    """Nothing inside the policy could serve ``model``. The message names the policy.

    ``status`` is 403 when no deployment of the model lies inside the policy at all,
    503 when some do but none could serve now (down, circuit open, failed).
    """

    code = "no_deployment_in_policy"

    def __init__(
        self,
        model: str,
        policy: ResidencyPolicy,
        *,
        tried: list[AttemptRecord],
        outside: list[Deployment],
    ) -> None:
        self.model = model
        self.policy = policy
        self.tried = tried
        self.outside = outside
        self.status = 503 if tried else 403
        regions = [r.region for r in tried] + [d.region for d in outside]
        text = policy.describe(regions)
        if tried:
            why = "; ".join(f"{r.deployment} ({r.region}): {r.outcome}" for r in tried)
            message = (
                f"No deployment of model '{model}' that this workspace may use is available "
                f"({text}): {why}."
            )
        else:
            message = f"Model '{model}' has no deployment this workspace may use: {text}."
        if outside:
            names = ", ".join(f"{d.name} ({d.region})" for d in outside)
            message += f" Not used because outside the policy: {names}."
        super().__init__(message)
        self.message = message


@dataclass
class Routed(Generic[T]):
    """Where a request went, and what the attempt returned."""

    deployment: Deployment
    value: T
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def region(self) -> str:
        return self.deployment.region

    @property
    def headers(self) -> dict[str, str]:
        """Response headers naming the serving deployment and its region."""
        return {"levant-region": self.region, "levant-deployment": self.deployment.name}


class Router:
    def __init__(
        self,
        deployments: Iterable[Deployment],
        breakers: Breakers | None = None,
        health: Health | None = None,
        *,
        gateway_policy: ResidencyPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.deployments = tuple(deployments)
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError("deployment names must be unique")
        self.breakers = breakers or Breakers()
        self.health: Health = health or StaticHealth()
        self.gateway_policy = gateway_policy or ResidencyPolicy()
        self._rng = rng or random.Random()

    def serves(self, model: str) -> bool:
        return any(d.model == model for d in self.deployments)

    def inside(self, deployment: Deployment, policy: ResidencyPolicy) -> bool:
        """The residency check. Every attempt passes through it."""
        return (
            policy.allows(deployment.region)
            and policy.allows_retention(deployment.retains_nothing)
            and (deployment.backend == "local" or self.gateway_policy.allows(deployment.region))
        )

    def _available(self, deployment: Deployment) -> bool:
        return self.health.is_up(deployment) and self.breakers.get(deployment).available()

    def candidates(self, model: str, policy: ResidencyPolicy) -> list[Deployment]:
        """In-policy deployments of ``model``: available first, the local engine first among
        those, then spread by weight (a weighted random order)."""
        keyed: list[tuple[tuple[bool, bool, float], Deployment]] = []
        for d in self.deployments:
            if d.model != model or not self.inside(d, policy):
                continue
            # Efraimidis-Spirakis: sorting by u**(1/w) is a weighted random permutation.
            spread = self._rng.random() ** (1.0 / d.weight)
            keyed.append(((self._available(d), d.backend == "local", spread), d))
        keyed.sort(key=lambda kd: kd[0], reverse=True)
        return [d for _, d in keyed]

    async def route(self, model: str, policy: ResidencyPolicy, attempt: Attempt[T]) -> Routed[T]:
        """Run ``attempt`` on in-policy candidates until one serves; fail over on retryable
        failures. Raises ``NoDeploymentInPolicy`` when none can, or the first
        non-retryable failure as it is."""
        tried: list[AttemptRecord] = []
        for d in self.candidates(model, policy):
            if not self.inside(d, policy):  # what must stay true, whatever candidates() does
                raise AssertionError(f"router picked {d.name} outside the policy")
            if not self.health.is_up(d):
                tried.append(AttemptRecord(d.name, d.region, "down"))
                continue
            breaker = self.breakers.get(d)
            if not breaker.allow():
                tried.append(AttemptRecord(d.name, d.region, "circuit open"))
                continue
            try:
                value = await attempt(d)
            except DeploymentFailure as exc:
                if getattr(exc, "client_fault", False):
                    breaker.record_success()  # it answered, correctly, that the request is bad
                    raise
                breaker.record_failure()
                if not exc.retryable:
                    raise
                tried.append(AttemptRecord(d.name, d.region, exc.reason))
                continue
            except BaseException:
                breaker.release()
                raise
            breaker.record_success()
            tried.append(AttemptRecord(d.name, d.region, "ok"))
            return Routed(d, value, tried)
        outside = [d for d in self.deployments if d.model == model and not self.inside(d, policy)]
        raise NoDeploymentInPolicy(model, policy, tried=tried, outside=outside)

    def record_failure(self, deployment: Deployment) -> None:
        """A committed request failed later (a stream cut mid-way): count it against the
        deployment. Never retried: the client already has part of the answer."""
        self.breakers.get(deployment).record_failure()

    def snapshot(self) -> list[dict[str, Any]]:
        """Deployments as the console shows them: config, health and circuit state."""
        out = []
        for d in self.deployments:
            breaker = self.breakers.get(d)
            out.append(
                {
                    "name": d.name,
                    "model": d.model,
                    "region": d.region,
                    "jurisdictions": sorted(self.gateway_policy.regions.jurisdictions(d.region)),
                    "backend": d.backend,
                    "weight": d.weight,
                    "zero_retention": d.retains_nothing,
                    "upstream": str(d.upstream.url) if d.upstream else None,
                    "up": self.health.is_up(d),
                    "circuit": breaker.state.value,
                    "consecutive_failures": breaker.consecutive_failures,
                }
            )
        return out


__all__ = [
    "Attempt",
    "AttemptRecord",
    "BreakerState",
    "Breakers",
    "NoDeploymentInPolicy",
    "Routed",
    "Router",
]
