"""One engine replica: a whole Levant app with its own engine, internal to a scale-out.

Boundary: ``ReplicaApp`` builds the app a cluster manager (Ray Serve, see
``ray_serve.py``) runs once per replica; it knows nothing of Ray. What makes a
replica different from ``levant serve``:

- It is reached only by the gateway, never by clients: auth is off, so its HTTP
  entry point (the Serve proxy) must be bound to loopback or the cluster's
  private network. Keys, limits, residency and metering are the gateway's job;
  it answers only the inference routes (``REPLICA_PATHS``), never the console.
- It keeps its own throwaway home (SQLite database, secret) in a temporary
  directory, removed when the replica stops. Usage is metered once, at the
  gateway; the replica's own rows (counts, never text) go with its home. It never
  uses ``LEVANT_DATABASE_URL`` or ``LEVANT_REDIS_URL`` even where a node sets them:
  that would meter the same request twice, or spend the gateway's rate limits.
- It reads weights from a shared model store (``store``/models, the same path
  on every node), read-only.
- Its workspace is zero retention by default: no prefix cache, no text kept —
  what a ``ray`` deployment claims in the routing file unless it says
  ``zero_retention = false`` (then run replicas with ``retention="standard"``).
- It answers with ``levant-region`` set to its region; the gateway refuses an
  answer whose region the workspace's policy does not allow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from levant.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from levant.api.state import AppState

log = logging.getLogger("levant.scaleout")

Retention = Literal["zero", "standard"]
HOME_PREFIX = "levant-replica-"
REPLICA_ACTOR = "levant-replica"
"""Actor name in the replica's audit log (its residency policy, its grants)."""

_FORCED_OFF = ("routing_config", "database_url", "redis_url", "secret")
"""Settings a replica never takes from its node's environment (see the module docstring)."""


REPLICA_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/fim/completions",
        "/v1/embeddings",
        "/v1/models",
        "/health",
        "/metrics",
    }
)
"""What a replica answers. Nothing else (console, sign-in, weights, files, usage): with
auth off those would be open to anyone who reaches the proxy."""


class ReplicaPathsOnly:
    """ASGI middleware: 404 in Mistral's shape for every path outside ``REPLICA_PATHS``.

    Plain ASGI (not ``BaseHTTPMiddleware``) so streams and disconnects pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # under a Serve route prefix
            path = path[len(root) :] or "/"
        if path in REPLICA_PATHS:
            await self.app(scope, receive, send)
            return
        body = {
            "object": "error",
            "message": f"{path} is not served by an engine replica",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
        await JSONResponse(body, status_code=404)(scope, receive, send)


class ReplicaUnhealthy(RuntimeError):
    """The replica cannot serve (its model failed to load, or it is not built yet)."""


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica of one scale-out deployment runs. Sent to each replica as is."""

    model: str
    region: str
    """Where the replicas run; every answer names it (``levant-region``)."""
    store: str
    """A LEVANT_HOME whose ``models/`` holds ``model``, at this path on every node."""
    catalog_path: str | None = None
    """An extra catalogue file (LEVANT_CATALOG_PATH), at this path on every node."""
    retention: Retention = "zero"
    threads: int | None = None
    """torch threads per replica; default: the replica's CPUs."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Other Settings fields for the replicas (dtype, kv_cache_gb, max_batched_tokens, …)."""


def make_home(store: Path, base: Path | None = None) -> Path:
    """A fresh replica home whose ``models/`` and ``blobs/`` are the shared store's.

    Its name carries the replica's process id: homes left by replicas that died without
    cleaning up (killed, a node crash) are removed by the next replica on the node.
    """
    where = Path(base) if base is not None else Path(tempfile.gettempdir())
    sweep_homes(where)
    home = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-", dir=where))
    for name in ("models", "blobs"):
        (home / name).symlink_to(store.resolve() / name, target_is_directory=True)
    return home


def sweep_homes(base: Path) -> list[Path]:
    """Remove replica homes in ``base`` whose process is gone; returns them."""
    gone = []
    for path in base.glob(f"{HOME_PREFIX}*-*"):
        pid = path.name.removeprefix(HOME_PREFIX).split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def replica_settings(spec: ReplicaSpec, home: Path) -> Settings:
    values: dict[str, Any] = {**dict(spec.settings)}
    values.update(
        home=home,
        auth=False,
        region=spec.region,
        default_model=spec.model,
        catalog_path=spec.catalog_path,
        **dict.fromkeys(_FORCED_OFF),
    )
    return Settings(**values)


class ReplicaApp:
    """Builds and owns one replica's app. The Ray Serve deployment class subclasses it."""

    def __init__(self, spec: ReplicaSpec, *, base: Path | None = None) -> None:
        self.spec = spec
        self.home = make_home(Path(spec.store), base)
        self.settings = replica_settings(spec, self.home)
        self.built: FastAPI | None = None
        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)

    async def build(self) -> FastAPI:
        """The app, with its model loaded: a replica takes traffic only once it can serve."""
        from levant.api.app import create_app

        app = create_app(self.settings, preload=[self.spec.model])
        app.add_middleware(ReplicaPathsOnly)
        await asyncio.to_thread(self._prepare, app.state.levant)
        self.built = app
        log.info(
            "replica of %s ready in %s (home %s)", self.spec.model, self.spec.region, self.home
        )
        return app

    def _prepare(self, state: AppState) -> None:
        from levant.access.policy import grant, set_residency

        card = state.registry.resolve(self.spec.model)
        platform = state.platform
        workspace = platform.bootstrap.workspace_id
        with platform.db.writing() as session:
            set_residency(session, workspace, None, self.spec.retention, actor=REPLICA_ACTOR)
            if card.track != "open":  # the gateway checked the caller's grant
                grant(session, workspace, card.id, actor=REPLICA_ACTOR)
        state.registry.pin(card.id)
        state.registry.load(card)

    def check(self) -> None:
        """Raise ``ReplicaUnhealthy`` unless the replica can serve."""
        if self.built is None:
            raise ReplicaUnhealthy("the replica's app is not built")
        state: AppState = self.built.state.levant
        if state.load_error is not None:
            raise ReplicaUnhealthy(f"model failed to load: {state.load_error}")

    def remove_home(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
