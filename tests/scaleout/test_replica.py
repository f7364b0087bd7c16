"""What a scale-out replica is, and how the gateway names one — without starting Ray.

The replica app is built here in-process exactly as a Ray Serve replica builds it;
the Ray-specific parts (Scale, the routing entry) are checked when Ray is installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from levant.db.tables import Workspace
from levant.routing import (
    Deployment,
    ResidencyPolicy,
    Router,
    RoutingConfigError,
    UpstreamPool,
    build_routing_config,
)
from levant.scaleout.replica import (
    HOME_PREFIX,
    ReplicaApp,
    ReplicaSpec,
    make_home,
    replica_settings,
    sweep_homes,
)
from tests.conftest import DEFAULT_MODEL

HAS_RAY = importlib.util.find_spec("ray") is not None

RAY_ENTRY = {
    "name": "smollm2-ray",
    "model": DEFAULT_MODEL,
    "backend": "ray",
    "region": "eu-west-paris",
    "upstream": {"url": "http://127.0.0.1:8100"},
}


def test_a_ray_deployment_is_reached_like_an_upstream_and_retains_nothing() -> None:
    cfg = build_routing_config({"deployments": [RAY_ENTRY]})
    (dep,) = cfg.deployments
    assert dep.backend == "ray" and dep.remote and dep.retains_nothing
    assert dep.upstream is not None
    assert dep.upstream.chat_url == "http://127.0.0.1:8100/v1/chat/completions"
    pool = UpstreamPool.build(cfg.deployments, {})
    assert set(pool.clients) == {"smollm2-ray"}
    kept = build_routing_config({"deployments": [{**RAY_ENTRY, "zero_retention": False}]})
    assert not kept.deployments[0].retains_nothing


def test_a_ray_deployment_needs_its_proxy_url_and_a_region() -> None:
    no_url = {k: v for k, v in RAY_ENTRY.items() if k != "upstream"}
    with pytest.raises(RoutingConfigError, match="ray deployment needs an \\[upstream\\] table"):
        build_routing_config({"deployments": [no_url]})
    no_region = {k: v for k, v in RAY_ENTRY.items() if k != "region"}
    with pytest.raises(RoutingConfigError, match="region is required"):
        build_routing_config({"deployments": [no_region]})
    local = {**no_region, "backend": "local"}  # keeps its [upstream] table
    with pytest.raises(RoutingConfigError, match="local deployment takes no"):
        build_routing_config({"deployments": [local]})


def test_the_router_keeps_ray_deployments_inside_the_policy() -> None:
    paris = Deployment.model_validate(RAY_ENTRY)
    us = Deployment.model_validate({**RAY_ENTRY, "name": "smollm2-ray-us", "region": "us-east"})
    router = Router([paris, us])
    eu_only = ResidencyPolicy.from_workspace(["EU"], "standard")
    assert [d.name for d in router.candidates(DEFAULT_MODEL, eu_only)] == ["smollm2-ray"]
    zero = ResidencyPolicy.from_workspace(["EU"], "zero")
    assert [d.name for d in router.candidates(DEFAULT_MODEL, zero)] == ["smollm2-ray"]


def test_replica_settings_never_take_the_nodes_database_or_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEVANT_DATABASE_URL", "postgresql+psycopg://gateway@db/levant")
    monkeypatch.setenv("LEVANT_REDIS_URL", "redis://limits:6379/0")
    monkeypatch.setenv("LEVANT_ROUTING_CONFIG", str(tmp_path / "levant.toml"))
    monkeypatch.setenv("LEVANT_AUTH", "1")
    monkeypatch.setenv("LEVANT_KV_CACHE_GB", "0.25")
    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    spec = ReplicaSpec(DEFAULT_MODEL, "eu-west-paris", str(store), settings={"dtype": "bfloat16"})
    home = make_home(store, tmp_path)
    settings = replica_settings(spec, home)
    assert settings.database_url is None and settings.redis_url is None
    assert settings.routing_config is None and settings.secret is None
    assert not settings.auth and settings.region == "eu-west-paris"
    assert settings.dtype == "bfloat16" and settings.kv_cache_gb == 0.25  # the rest: the node's
    assert settings.home == home and (home / "models").resolve() == (store / "models").resolve()


def test_homes_of_dead_replicas_are_swept(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = tmp_path / f"{HOME_PREFIX}{int(done.stdout)}-abc"
    live = tmp_path / f"{HOME_PREFIX}{os.getpid()}-def"
    other = tmp_path / "unrelated"
    for path in (dead, live, other):
        (path / "models").mkdir(parents=True)
    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    home = make_home(store, tmp_path)  # sweeps first
    assert not dead.exists() and live.exists() and other.exists() and home.exists()
    assert home.name.startswith(f"{HOME_PREFIX}{os.getpid()}-")
    assert sweep_homes(tmp_path) == []


@pytest.mark.slow  # builds a whole app and loads the model
def test_a_replica_serves_with_auth_off_in_its_region_and_keeps_nothing(
    model_home: Path, tmp_path: Path
) -> None:
    spec = ReplicaSpec(DEFAULT_MODEL, "eu-west-paris", str(model_home), threads=None)
    replica = ReplicaApp(spec, base=tmp_path)
    try:
        app = asyncio.run(replica.build())
        replica.check()
        state = app.state.levant
        with TestClient(app) as client:
            body = {
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
                "temperature": 0,
            }
            r = client.post("/v1/chat/completions", json=body)  # no key: auth is off
            assert r.status_code == 200, r.text
            assert r.headers["levant-region"] == "eu-west-paris"
            assert client.get("/health").status_code == 200
            for path in ("/api/console/keys", f"/v1/models/{DEFAULT_MODEL}/weights", "/"):
                r = client.get(path)
                assert r.status_code == 404 and r.json()["code"] == "not_found", path
        platform = state.platform
        with platform.db.reading() as session:
            ws = session.get(Workspace, platform.bootstrap.workspace_id)
            assert ws is not None and ws.retention == "zero"
        # The shared store was only read: the replica's database lives in its own home.
        assert (replica.home / "levant.db").exists()
        assert not (model_home / "models" / "levant.db").exists()
    finally:
        replica.remove_home()
    assert not replica.home.exists()


@pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray Serve's own models
def test_scale_options_and_the_printed_routing_entry() -> None:
    import tomllib

    from levant.scaleout.ray_serve import Scale, routing_snippet

    fixed = Scale(replicas=2).options()
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0}
    auto = Scale(replicas=3, min_replicas=1, max_replicas=8).options()["autoscaling_config"]
    assert auto == {
        "min_replicas": 1,
        "max_replicas": 8,
        "initial_replicas": 3,
        "target_ongoing_requests": 16.0,
    }
    with pytest.raises(ValueError, match="min_replicas"):
        Scale(min_replicas=4, max_replicas=2).options()
    with pytest.raises(ValueError, match="at least 1"):
        Scale(replicas=0).options()

    spec = ReplicaSpec(DEFAULT_MODEL, "eu-west-paris", "/srv/levant")
    text = routing_snippet("smollm2-ray", spec, "http://10.0.0.5:8100", Scale(replicas=2))
    cfg = build_routing_config(tomllib.loads(text))
    (dep,) = cfg.deployments
    assert (dep.backend, dep.region, dep.retains_nothing) == ("ray", "eu-west-paris", True)
    assert dep.upstream is not None and dep.upstream.max_retries == 3
    assert dep.breaker.failure_threshold == 65
    standard = ReplicaSpec(DEFAULT_MODEL, "eu-west-paris", "/srv/levant", retention="standard")
    text = routing_snippet("s", standard, "http://10.0.0.5:8100", Scale())
    assert not build_routing_config(tomllib.loads(text)).deployments[0].retains_nothing
