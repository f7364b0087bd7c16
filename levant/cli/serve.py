"""``levant serve``, ``levant run``, ``levant chat``: serve over HTTP, or talk in a terminal."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from levant.cli import app
from levant.config import Settings, get_settings
from levant.models.tokenizers.protocol import ChatMessage

if TYPE_CHECKING:
    from levant.serving.registry import ModelRegistry


def _ensure_pulled(settings: Settings, name: str) -> None:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    card = load_catalog(settings).get(name)
    store = ModelStore(settings)
    if not store.is_pulled(card):
        typer.echo(f"Pulling {card.id} into {settings.models_dir} ...", err=True)
        pull(card, store)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="Model(s) to load at start-up (default: LEVANT_DEFAULT_MODEL)."
        ),
    ] = None,
    pull_missing: Annotated[
        bool, typer.Option("--pull", help="Pull the start-up models first if they are missing.")
    ] = False,
    region: Annotated[
        str | None,
        typer.Option(help="Region this gateway serves from (e.g. eu-west-paris)."),
    ] = None,
    routing: Annotated[
        Path | None,
        typer.Option(help="Routing file (levant.toml or YAML): regions and deployments."),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Log one line per request (method, path, status; never bodies). It is "
            "2-3% of a forwarded request's CPU on the gateway."
        ),
    ] = True,
) -> None:
    """Serve the API on HTTP."""
    import uvicorn

    from levant.access.tenancy import sign_in_message
    from levant.api.app import create_app
    from levant.catalog.catalog import ModelNotFound
    from levant.catalog.sources import SourceUnavailable
    from levant.routing import RoutingConfigError

    settings = get_settings()
    overrides: dict[str, object] = {}
    if region is not None:
        overrides["region"] = region
    if routing is not None:
        overrides["routing_config"] = routing
    if "LEVANT_GC_FREEZE" not in os.environ:  # a long-lived server: no full GC passes
        overrides["gc_freeze"] = True
    if overrides:
        settings = settings.model_copy(update=overrides)
    host = host or settings.host
    port = port or settings.port
    names = model or [settings.default_model]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if pull_missing:
            for name in names:
                _ensure_pulled(settings, name)
        application = create_app(settings, preload=names)
    except (ModelNotFound, SourceUnavailable, RoutingConfigError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    url = f"http://{host}:{port}"
    platform = application.state.levant.platform
    if platform.bootstrap.created:
        typer.echo(sign_in_message(platform.bootstrap))
    auth = ""
    if settings.auth:
        creds = platform.bootstrap.credentials_path
        key = f"$(sed -n 's/^api_key: //p' {creds})" if creds.exists() else "<your-api-key>"
        auth = f' -H "Authorization: Bearer {key}"'
    typer.echo(f"Levant is starting on {url}  (model: {', '.join(names)})")
    typer.echo("Try it:")
    typer.echo(
        f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
        f'-d \'{{"model": "{names[0]}", "messages": [{{"role": "user", '
        f'"content": "Say hello in French."}}], "max_tokens": 64}}\''
    )
    uvicorn.run(application, host=host, port=port, log_level="info", access_log=access_log)


async def _stream_reply(
    name: str, messages: list[ChatMessage], max_tokens: int | None, temperature: float | None
) -> str:
    from levant.serving.service import ModelService, TextDelta

    service = await _registry().get(name)
    if not isinstance(service, ModelService):
        raise typer.BadParameter(f"'{name}' is an embedding model; it does not chat")
    ids = service.prepare(messages, max_tokens)
    sampling = service.sampling(
        temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=None
    )
    reply: list[str] = []
    async for ev in service.generate(ids, sampling):
        if isinstance(ev, TextDelta):
            reply.append(ev.text)
            sys.stdout.write(ev.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(reply)


@lru_cache(maxsize=1)
def _registry() -> ModelRegistry:
    """One in-process registry per CLI invocation: a chat session loads its model once."""
    from levant.catalog.catalog import load_catalog
    from levant.catalog.store import ModelStore
    from levant.serving.registry import ModelRegistry

    settings = get_settings()
    return ModelRegistry(settings, load_catalog(settings), ModelStore(settings))


@app.command()
def run(
    model: Annotated[str, typer.Argument(help="Model id or alias.")],
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = 512,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
) -> None:
    """Answer one prompt, streaming the reply to the terminal."""
    messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", prompt)]
    _guarded(lambda: asyncio.run(_stream_reply(model, messages, max_tokens, temperature)))


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="Model id or alias.")],
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per reply.")] = 512,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
) -> None:
    """Chat in the terminal. An empty line or Ctrl-D ends the session; /reset clears history."""
    history: list[ChatMessage] = [ChatMessage("system", system)] if system else []

    async def loop() -> None:
        while True:
            try:
                line = await asyncio.to_thread(input, ">>> ")
            except EOFError:
                return
            if not line.strip():
                return
            if line.strip() == "/reset":
                del history[int(bool(system)) :]
                continue
            history.append(ChatMessage("user", line))
            reply = await _stream_reply(model, history, max_tokens, temperature)
            history.append(ChatMessage("assistant", reply))

    _guarded(lambda: asyncio.run(loop()))


def _guarded(action: Callable[[], object]) -> None:
    """Run ``action``; expected failures print one line and exit 1, never a traceback."""
    from levant.catalog.catalog import ModelNotFound
    from levant.engine.core import ContextLengthExceeded
    from levant.serving.registry import ModelNotAvailable

    try:
        action()
    except (ModelNotFound, ModelNotAvailable, ContextLengthExceeded) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if _registry.cache_info().currsize:
            # Join the engine thread before exit: a torch thread torn down by
            # interpreter shutdown aborts the process.
            _registry().shutdown()
