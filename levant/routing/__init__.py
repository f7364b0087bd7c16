"""Routing: which deployment serves a request, inside the workspace's residency policy.

regions.py     regions → jurisdictions; ResidencyPolicy (allowed regions, retention)
deployment.py  Deployment (local | upstream | ray), UpstreamConfig, BreakerConfig
config.py      deployments from levant.toml / YAML, validated, errors name file and entry
errors.py      DeploymentFailure → UpstreamTimeout / UpstreamUnreachable / UpstreamError /
               UpstreamStreamBroken / ResidencyMismatch
upstream.py    httpx client for OpenAI/Mistral-compatible upstreams (retries before the
               first byte only, SSE pass-through with usage)
breaker.py     per-deployment circuit breaker, injectable clock
health.py      active health (up/down) as a protocol
router.py      Router.candidates / Router.route, NoDeploymentInPolicy
backend.py     attempts: UpstreamPool for upstreams, ``primed`` for the local engine's stream
"""

from levant.routing.backend import PrimedStream, UpstreamPool, primed
from levant.routing.breaker import BreakerState, CircuitBreaker
from levant.routing.config import (
    RoutingConfig,
    RoutingConfigError,
    build_routing_config,
    load_routing_config,
    upstream_keys,
)
from levant.routing.deployment import LOCAL_DEPLOYMENT, BreakerConfig, Deployment, UpstreamConfig
from levant.routing.errors import (
    DeploymentFailure,
    ResidencyMismatch,
    UpstreamError,
    UpstreamFailure,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from levant.routing.health import Health, StaticHealth
from levant.routing.regions import (
    DEFAULT_REGIONS,
    JURISDICTIONS,
    PolicyError,
    RegionRegistry,
    ResidencyPolicy,
)
from levant.routing.router import (
    Attempt,
    AttemptRecord,
    Breakers,
    NoDeploymentInPolicy,
    Routed,
    Router,
)
from levant.routing.upstream import (
    Served,
    UpstreamChunk,
    UpstreamClient,
    UpstreamReply,
    UpstreamStream,
    Usage,
)

__all__ = [
    "DEFAULT_REGIONS",
    "JURISDICTIONS",
    "LOCAL_DEPLOYMENT",
    "Attempt",
    "AttemptRecord",
    "BreakerConfig",
    "BreakerState",
    "Breakers",
    "CircuitBreaker",
    "Deployment",
    "DeploymentFailure",
    "Health",
    "NoDeploymentInPolicy",
    "PolicyError",
    "PrimedStream",
    "RegionRegistry",
    "ResidencyMismatch",
    "ResidencyPolicy",
    "Routed",
    "Router",
    "RoutingConfig",
    "RoutingConfigError",
    "Served",
    "StaticHealth",
    "UpstreamChunk",
    "UpstreamClient",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamFailure",
    "UpstreamPool",
    "UpstreamReply",
    "UpstreamStream",
    "UpstreamStreamBroken",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "Usage",
    "build_routing_config",
    "load_routing_config",
    "primed",
    "upstream_keys",
]
