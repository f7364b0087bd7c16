"""Levant engine replicas as one Ray Serve deployment, behind Serve's HTTP proxy.

Boundary: turns a ``ReplicaSpec`` and a ``Scale`` into a running Serve
application whose every replica is a ``ReplicaApp`` (a whole Levant app, its
own engine). Ray Serve owns the replicas: it starts ``replicas`` of them (or
scales between ``min_replicas`` and ``max_replicas`` on ongoing requests),
replaces one that dies or fails its health check, and its proxy spreads requests
over the live ones. The gateway reaches the proxy's URL as a ``backend = "ray"``
deployment, exactly as it reaches an upstream (retries, circuit breaker,
residency check on the answer's ``levant-region``).

This module imports Ray: install the ``ray`` extra (``pip install 'levant[ray]'``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.serve import Deployment

from levant.scaleout.replica import ReplicaApp, ReplicaSpec

DEPLOYMENT = "LevantReplica"
DEFAULT_APP = "levant"
DEFAULT_PORT = 8100


class _Replica(ReplicaApp):
    """One Serve replica: builds its Levant app (model loaded) when Serve starts it."""

    async def __serve_build_asgi_app__(self) -> Any:
        return await self.build()

    def check_health(self) -> None:
        self.check()

    def __del__(self) -> None:
        self.remove_home()


LevantReplica: Deployment = serve.deployment(
    name=DEPLOYMENT, health_check_period_s=2.0, health_check_timeout_s=30.0
)(serve.ingress()(_Replica))


@dataclass(frozen=True)
class Scale:
    """How many replicas, and what each may take on."""

    replicas: int = 1
    """Fixed count; with autoscaling, the count to start with (within the bounds)."""
    min_replicas: int | None = None
    max_replicas: int | None = None
    """Either bound turns autoscaling on; then min defaults to 1, max to ``replicas``."""
    target_ongoing_requests: float = 16.0
    """Autoscaling aims at this many requests in flight per replica."""
    max_ongoing_requests: int = 64
    """Requests one replica takes at once (its engine batches them); more wait at the proxy."""
    num_cpus: float = 1.0
    """Ray CPUs reserved per replica."""

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    def options(self) -> dict[str, Any]:
        """``Deployment.options`` for this scale."""
        opts: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus},
        }
        if not self.autoscaling:
            if self.replicas < 1:
                raise ValueError("replicas must be at least 1")
            opts["num_replicas"] = self.replicas
            return opts
        low = self.min_replicas if self.min_replicas is not None else min(self.replicas, 1)
        high = self.max_replicas if self.max_replicas is not None else max(self.replicas, low)
        if not 0 <= low <= high or high < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas >= 1 (got {low}, {high})")
        opts["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": min(max(self.replicas, low), high),
            "target_ongoing_requests": self.target_ongoing_requests,
        }
        return opts


def application(spec: ReplicaSpec, scale: Scale) -> Any:
    """The Serve application (not yet running)."""
    return LevantReplica.options(**scale.options()).bind(spec)


def deploy(
    spec: ReplicaSpec,
    scale: Scale,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    name: str = DEFAULT_APP,
    route_prefix: str = "/",
) -> str:
    """Deploy (or update) the application on the connected Ray cluster; wait until its
    replicas serve. Returns the proxy URL the gateway's routing file should name.

    ``host``/``port`` configure Serve's HTTP proxies when this call starts Serve; on a
    cluster where Serve already runs they are the ones it was started with.
    """
    if not ray.is_initialized():
        raise RuntimeError("connect to a Ray cluster first (ray.init)")
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(spec, scale), name=name, route_prefix=route_prefix, blocking=False)
    shown = host if host not in ("0.0.0.0", "::") else _node_address()
    prefix = route_prefix.rstrip("/")
    return f"http://{shown}:{port}{prefix}"


def routing_snippet(name: str, spec: ReplicaSpec, url: str, scale: Scale) -> str:
    """The gateway's routing-file entry for this deployment.

    Retries cover a replica lost before its first token (the proxy sends the retry to a
    live one). The breaker's threshold is above what one replica holds at once, so losing
    one replica (every stream it was serving cut at once) does not open the circuit on
    the whole deployment.
    """
    retention = "" if spec.retention == "zero" else "zero_retention = false\n"
    return (
        "[[deployments]]\n"
        f'name = "{name}"\n'
        f'model = "{spec.model}"\n'
        'backend = "ray"\n'
        f'region = "{spec.region}"\n'
        f"{retention}"
        "[deployments.upstream]\n"
        f'url = "{url}"\n'
        "max_retries = 3\n"
        "[deployments.breaker]\n"
        f"failure_threshold = {scale.max_ongoing_requests + 1}\n"
        "cooldown_s = 5\n"
    )


def replica_states(name: str = DEFAULT_APP) -> dict[str, int]:
    """How many replicas of the application are in each state (``RUNNING``, ``STARTING``…)."""
    app = serve.status().applications.get(name)
    if app is None:
        return {}
    dep = app.deployments.get(DEPLOYMENT)
    if dep is None:
        return {}
    return {str(getattr(k, "value", k)): int(v) for k, v in dep.replica_states.items()}


def replica_actor_names(name: str = DEFAULT_APP) -> list[str]:
    """Ray actor names of the application's replicas (namespace ``serve``)."""
    prefix = f"SERVE_REPLICA::{name}#{DEPLOYMENT}#"
    actors = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        str(a["name"])
        for a in actors
        if isinstance(a, dict) and str(a.get("name", "")).startswith(prefix)
    )


def _node_address() -> str:
    try:
        return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    except Exception:
        return socket.gethostname()
