"""The FastAPI application factory: wires settings, registry, routers and error handling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from levant import __version__
from levant.access.limits import (
    InMemoryLimiter,
    Limiter,
    LimitPolicy,
    RedisLimiter,
    SpendGuard,
    month_spend_from,
)
from levant.access.limits.workspace import WorkspaceLimits
from levant.access.principal_cache import PrincipalCache
from levant.access.startup import Platform, open_platform
from levant.access.usage import UsageWriter
from levant.api.body_limit import BodyLimitMiddleware
from levant.api.errors import install_error_handlers
from levant.api.fast_chat import CHAT_PATH, FastChat
from levant.api.gateway import build_gateway
from levant.api.routes import (
    batch,
    chat,
    console,
    console_admin,
    console_keys,
    conversations,
    embeddings,
    files,
    fim,
    health,
    metrics,
    models,
    session,
    usage,
    weights,
)
from levant.api.state import AppState, Limits
from levant.batch.runner import BatchRunner
from levant.catalog.catalog import load_catalog
from levant.catalog.store import ModelStore
from levant.config import Settings, get_settings
from levant.conversations.store import purge_older_than
from levant.serving.registry import ModelRegistry
from levant.web import mount_web

log = logging.getLogger("levant")


async def _preload(state: AppState) -> None:
    """Load the start-up models this process serves itself (those with a local
    deployment; a model served only by upstreams has nothing to load)."""
    try:
        for name in state.preload:
            card = state.registry.catalog.get(name)
            if not state.gateway.serves_locally(card.id):
                continue
            card = state.registry.resolve(name)
            state.registry.pin(card.id)
            await asyncio.to_thread(state.registry.load, card)
        state.ready = True
    except Exception as exc:
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("failed to load models: %s", state.load_error)


def purge_expired_chats(state: AppState) -> int:
    """Standard retention's period: delete conversations idle past ``chat_retention_days``."""
    days = state.settings.chat_retention_days
    if days is None:
        return 0
    cutoff = datetime.now(UTC) - timedelta(days=days)
    with state.platform.db.writing() as session:
        gone = purge_older_than(session, cutoff)
    if gone:
        log.info("retention: deleted %d conversations idle for over %g days", gone, days)
    return gone


async def _keep_alive_loop(state: AppState) -> None:
    """Unload models loaded on demand once idle past ``keep_alive_s``."""
    keep = state.settings.keep_alive_s
    if keep is None:
        return
    while True:
        await asyncio.sleep(min(max(keep / 2, 0.05), 10.0))
        try:
            await asyncio.to_thread(state.registry.evict_idle)
        except Exception as exc:
            log.error("keep-alive sweep failed: %s", type(exc).__name__)


async def _retention_loop(state: AppState, every_s: float = 3600.0) -> None:
    while True:
        try:
            await asyncio.to_thread(purge_expired_chats, state)
        except Exception as exc:  # a failed sweep is retried at the next one
            log.error("retention sweep failed: %s", type(exc).__name__)
        await asyncio.sleep(every_s)


class LevantAPI(FastAPI):
    """The FastAPI app, with chat completions for upstream-only models on a lean path.

    ``fast_chat`` (when set) sees every ``POST /v1/chat/completions`` first and
    hands what it does not serve to the app as usual (see ``api/fast_chat.py``).
    """

    fast_chat: FastChat | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_chat
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] == CHAT_PATH
            and scope["method"] == "POST"
        ):
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def through_fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def make_limits(settings: Settings, platform: Platform) -> Limits:
    limiter: Limiter
    if settings.redis_url:
        import redis.asyncio

        limiter = RedisLimiter(redis.asyncio.Redis.from_url(settings.redis_url))
    else:
        limiter = InMemoryLimiter()
    defaults = LimitPolicy(
        settings.default_requests_per_second,
        settings.default_tokens_per_minute,
        settings.default_tokens_per_month,
    )
    return Limits(
        limiter=limiter,
        spend=SpendGuard(month_spend_from(platform.db), ttl_s=settings.limits_cache_ttl_s),
        workspace=WorkspaceLimits(
            platform.db,
            defaults=defaults,
            default_budget_micros=settings.default_monthly_budget_micros,
            ttl_s=settings.limits_cache_ttl_s,
        ),
    )


def create_app(
    settings: Settings | None = None,
    *,
    registry: ModelRegistry | None = None,
    platform: Platform | None = None,
    preload: list[str] | None = None,
) -> FastAPI:
    """Build the app. ``preload`` names models loaded at start-up (health is 503 until then).

    ``platform`` (database, secret, tenancy) is opened from ``settings`` when not given:
    migrations run and a first start bootstraps the default workspace.
    """
    settings = settings or get_settings()
    if registry is None:
        registry = ModelRegistry(settings, load_catalog(settings), ModelStore(settings))
    gateway = build_gateway(settings, registry.catalog)
    if platform is None:
        platform = open_platform(settings)
    state = AppState(
        settings=settings,
        registry=registry,
        platform=platform,
        usage=UsageWriter(platform.db.engine),
        limits=make_limits(settings, platform),
        gateway=gateway,
        preload=list(preload or []),
        principals=PrincipalCache(settings.auth_cache_ttl_s),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_preload(state))
        sweepers = [
            asyncio.create_task(_retention_loop(state)),
            asyncio.create_task(_keep_alive_loop(state)),
        ]
        batch_runner = BatchRunner(state, app)
        app.state.batch_runner = batch_runner
        batch_runner.start()
        yield
        await batch_runner.stop()
        task.cancel()
        for sweeper in sweepers:
            sweeper.cancel()
        registry.shutdown()
        await gateway.aclose()
        state.usage.close(timeout=10)
        state.platform.close()

    app = LevantAPI(
        title="Levant", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None
    )
    app.state.levant = state
    if settings.lean_upstream_chat:
        app.fast_chat = FastChat(state, app.through_fastapi)
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        path_limits={files.UPLOAD_PATH: files.upload_body_limit(settings)},
    )
    api = (health, metrics, weights, models, chat, fim, embeddings, usage, files, batch)
    web = (session, conversations, console_keys, console, console_admin)
    for module in (*api, *web):
        app.include_router(module.router)
    mount_web(app)
    return app
