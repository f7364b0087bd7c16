"""``levant deploy ray``: engine replicas as a Ray Serve deployment for a gateway to route to."""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from levant.config import Settings, get_settings

if TYPE_CHECKING:
    from levant.scaleout.ray_serve import Scale
    from levant.scaleout.replica import Retention

deploy_app = typer.Typer(
    help="Run engine replicas on a cluster for a gateway to route to.", no_args_is_help=True
)

PASSED_ON = (
    "device",
    "dtype",
    "kv_cache_gb",
    "kv_cache_dtype",
    "max_batched_tokens",
    "max_waiting_requests",
    "request_timeout_s",
    "offline",
)
"""Settings of this command's environment (LEVANT_*) that every replica gets."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _check_model(settings: Settings, name: str, pull_missing: bool) -> str:
    from levant.catalog.catalog import ModelNotFound, load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.sources import SourceUnavailable
    from levant.catalog.store import ModelStore

    try:
        card = load_catalog(settings).get(name)
        store = ModelStore(settings)
        if not store.is_pulled(card):
            if not pull_missing:
                raise _fail(
                    f"{card.id} is not in the model store {settings.models_dir}: "
                    "run `levant pull` first, or pass --pull"
                )
            typer.echo(f"Pulling {card.id} into {settings.models_dir} ...", err=True)
            pull(card, store)
    except (ModelNotFound, SourceUnavailable) as exc:
        raise _fail(str(exc)) from exc
    return card.id


@deploy_app.command("ray")
def ray_(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model the replicas serve (default: LEVANT_DEFAULT_MODEL)."
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(help="Region the replicas run in (default: LEVANT_REGION); required."),
    ] = None,
    replicas: Annotated[
        int, typer.Option(help="Replica count (with autoscaling: the count to start with).")
    ] = 1,
    min_replicas: Annotated[
        int | None, typer.Option(help="Autoscaling lower bound (turns autoscaling on).")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="Autoscaling upper bound (turns autoscaling on).")
    ] = None,
    target_ongoing_requests: Annotated[
        float, typer.Option(help="Autoscaling target: requests in flight per replica.")
    ] = 16.0,
    max_ongoing_requests: Annotated[
        int, typer.Option(help="Most requests one replica takes at once; more wait at the proxy.")
    ] = 64,
    num_cpus: Annotated[float, typer.Option(help="Ray CPUs reserved per replica.")] = 1.0,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per replica (default: its CPUs).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster: auto (the one this node joined), <head>:6379 or ray://<head>:10001. "
            "Default: start a single-machine cluster here and serve until Ctrl-C."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface Serve's HTTP proxies bind (keep it private).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of Serve's HTTP proxies.")] = 8100,
    name: Annotated[str, typer.Option(help="Serve application name.")] = "levant",
    route_prefix: Annotated[
        str, typer.Option(help="URL prefix (one per application on a cluster).")
    ] = "/",
    retention: Annotated[
        str,
        typer.Option(
            help="zero (default: no prefix cache, nothing kept) or standard "
            "(then set zero_retention = false in the routing file)."
        ),
    ] = "zero",
    pull_missing: Annotated[
        bool, typer.Option("--pull", help="Pull the model into the store first if missing.")
    ] = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove the application from the cluster instead.")
    ] = False,
) -> None:
    """Deploy engine replicas on Ray Serve; print the gateway's routing-file entry.

    Replicas run with auth off behind Serve's proxy: keep --host private. The model store
    (LEVANT_HOME) must be at the same path on every node.
    """
    if retention not in ("zero", "standard"):
        raise _fail("--retention is zero or standard")
    try:
        import ray
        from ray import serve

        from levant.scaleout import ray_serve
        from levant.scaleout.replica import ReplicaSpec
    except ImportError as exc:
        raise _fail("Ray is not installed: pip install 'levant[ray]'") from exc

    settings = get_settings()
    if delete:
        if address is None:
            raise _fail("--delete needs the cluster's --address")
        ray.init(address=address)
        serve.delete(name)
        typer.echo(f"Removed Serve application {name!r}.")
        return

    where = region or (settings.region if settings.region != "local" else None)
    if where is None:
        raise _fail("name the replicas' region: --region eu-west-paris (or LEVANT_REGION)")
    model_id = _check_model(settings, model or settings.default_model, pull_missing)
    mode: Retention = "zero" if retention == "zero" else "standard"
    passed: dict[str, Any] = settings.model_dump(include=set(PASSED_ON))
    spec = ReplicaSpec(
        model=model_id,
        region=where,
        store=str(settings.home.resolve()),
        catalog_path=str(settings.catalog_path.resolve()) if settings.catalog_path else None,
        retention=mode,
        threads=threads or max(1, round(num_cpus)),
        settings=passed,
    )
    scale = ray_serve.Scale(
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing_requests,
        max_ongoing_requests=max_ongoing_requests,
        num_cpus=num_cpus,
    )
    try:
        scale.options()
    except ValueError as exc:
        raise _fail(str(exc)) from exc

    local = address is None
    if local:
        ray.init(include_dashboard=False)
    else:
        ray.init(address=address)
    try:
        typer.echo(f"Deploying {scale_text(scale)} of {model_id} in {where} ...", err=True)
        url = ray_serve.deploy(
            spec, scale, host=host, port=port, name=name, route_prefix=route_prefix
        )
    except (RuntimeError, ValueError) as exc:
        if local:
            ray.shutdown()
        raise _fail(f"deploying on Ray Serve failed: {exc}") from exc
    typer.echo(f"Levant replicas of {model_id} are serving at {url} (region {where}).")
    typer.echo("Add this deployment to the gateway's routing file (levant serve --routing):\n")
    typer.echo(ray_serve.routing_snippet(f"{model_id}-ray-{where}", spec, url, scale))
    if not local:
        typer.echo(
            f"The application stays on the cluster; remove it with "
            f"`levant deploy ray --delete --address {address} --name {name}`."
        )
        return
    typer.echo("Serving on this machine's Ray cluster until Ctrl-C.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a service manager's stop
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(name)  # replicas stop gracefully: engines drained, homes removed
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


def scale_text(scale: Scale) -> str:
    if scale.autoscaling:
        auto = scale.options()["autoscaling_config"]
        return f"{auto['min_replicas']}-{auto['max_replicas']} replicas (autoscaling)"
    return f"{scale.replicas} replica{'s' if scale.replicas != 1 else ''}"
