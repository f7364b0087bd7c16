"""The gateway's routing table: deployments from settings, the router and upstream clients.

Boundary: builds a ``Gateway`` from ``Settings`` and the catalogue, once per process.
Every catalogue model that no configured deployment names is served by the local
engine in the gateway's own region, so a gateway without a routing file behaves
exactly as a single machine does. Which deployment serves a request is decided
by ``levant.routing.Router``; what a chat request does there lives in
``api/routes/chat.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from levant.catalog.catalog import Catalog
from levant.config import Settings
from levant.routing import (
    Deployment,
    RegionRegistry,
    Router,
    RoutingConfig,
    UpstreamPool,
    build_routing_config,
    load_routing_config,
    upstream_keys,
)


@dataclass
class Gateway:
    config: RoutingConfig
    router: Router
    upstreams: UpstreamPool

    @property
    def region(self) -> str:
        """The region this gateway (and its local engine) serves from."""
        return self.config.region

    @property
    def regions(self) -> RegionRegistry:
        return self.config.regions

    def remote(self, model: str) -> bool:
        """Whether some deployment of ``model`` is not this process's engine."""
        return any(d.model == model and d.backend != "local" for d in self.router.deployments)

    def serves_locally(self, model: str) -> bool:
        """Whether this process's engine is one of ``model``'s deployments."""
        return any(d.model == model and d.backend == "local" for d in self.router.deployments)

    def snapshot(self) -> dict[str, Any]:
        """What the console shows: this gateway's region and every deployment's state."""
        return {
            "region": self.region,
            "allowed_regions": self.config.gateway_policy.describe(subject="this gateway"),
            "deployments": self.router.snapshot(),
        }

    async def aclose(self) -> None:
        await self.upstreams.aclose()


def local_name(model: str) -> str:
    """The implicit local deployment of a catalogue model."""
    return f"local/{model}"


def build_gateway(settings: Settings, catalog: Catalog) -> Gateway:
    """Read ``settings.routing_config`` (if any); ``settings.region`` (``serve --region``)
    overrides the file's ``[gateway] region``."""
    override = settings.region if settings.region != "local" else None
    if settings.routing_config is not None:
        config = load_routing_config(settings.routing_config, region=override)
    else:
        config = build_routing_config({}, region=override)
    deployments: list[Deployment] = list(config.deployments)
    configured = {d.model for d in deployments}
    for card in catalog.cards():
        if card.id not in configured:
            deployments.append(Deployment.local(card.id, config.region, name=local_name(card.id)))
    router = Router(deployments, gateway_policy=config.gateway_policy)
    upstreams = UpstreamPool.build(config.deployments, upstream_keys(config, os.environ))
    return Gateway(config, router, upstreams)
