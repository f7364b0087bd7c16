"""What runs an attempt on a deployment: the upstream pool here; the local engine plugs in.

An attempt returns only once its result is safe to commit to. For a stream
that means its first event has arrived (``primed``): a failure before it can
fail over to another in-policy deployment; a failure after it is final.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, TypeVar

from levant.routing.deployment import Deployment
from levant.routing.errors import DeploymentFailure, ResidencyMismatch
from levant.routing.regions import ResidencyPolicy
from levant.routing.router import Attempt
from levant.routing.upstream import Served, UpstreamClient, UpstreamReply, UpstreamStream

E = TypeVar("E")


class PrimedStream(Generic[E]):
    """An async stream whose first item has already been produced; iterating replays it."""

    def __init__(self, first: E, rest: AsyncIterator[E]) -> None:
        self.first = first
        self._rest = rest

    def __aiter__(self) -> AsyncIterator[E]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[E]:
        yield self.first
        async for item in self._rest:
            yield item

    async def aclose(self) -> None:
        close = getattr(self._rest, "aclose", None)
        if close is not None:
            await close()


async def primed(deployment: Deployment, events: AsyncIterator[E]) -> PrimedStream[E]:
    """Wait for the first item of ``events`` (e.g. ``ModelService.generate``).

    An exception before it becomes a retryable ``DeploymentFailure``, so the router
    fails over; an empty stream is one too.
    """
    try:
        first = await anext(events)
    except StopAsyncIteration:
        raise DeploymentFailure(deployment.name, "produced no output", retryable=True) from None
    except DeploymentFailure:
        raise
    except Exception as exc:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
        raise DeploymentFailure(
            deployment.name,
            f"failed before its first output ({type(exc).__name__})",
            retryable=True,
        ) from exc
    return PrimedStream(first, events)


class UpstreamPool:
    """One ``UpstreamClient`` per remote deployment (upstream or Ray), and attempts using them.

    Attempts also check what a Levant upstream reports about itself: a
    ``levant-region`` outside the policy is refused before anything is passed on.
    """

    def __init__(self, clients: Mapping[str, UpstreamClient]) -> None:
        self.clients = dict(clients)

    @classmethod
    def build(
        cls, deployments: list[Deployment] | tuple[Deployment, ...], keys: Mapping[str, str | None]
    ) -> UpstreamPool:
        return cls(
            {d.name: UpstreamClient(d, api_key=keys.get(d.name)) for d in deployments if d.remote}
        )

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def _client(self, deployment: Deployment) -> UpstreamClient:
        try:
            return self.clients[deployment.name]
        except KeyError:
            raise DeploymentFailure(
                deployment.name, "no upstream client configured", retryable=True
            ) from None

    def complete(self, body: dict[str, Any], policy: ResidencyPolicy) -> Attempt[UpstreamReply]:
        async def attempt(deployment: Deployment) -> UpstreamReply:
            reply = await self._client(deployment).complete(body)
            _check_served(deployment, reply.served, policy)
            return reply

        return attempt

    def stream(self, body: dict[str, Any], policy: ResidencyPolicy) -> Attempt[UpstreamStream]:
        async def attempt(deployment: Deployment) -> UpstreamStream:
            stream = await self._client(deployment).open_stream(body)
            try:
                _check_served(deployment, stream.served, policy)
            except BaseException:
                await stream.aclose()
                raise
            return stream

        return attempt


def _check_served(deployment: Deployment, served: Served, policy: ResidencyPolicy) -> None:
    if served.region is not None and not policy.allows(served.region):
        raise ResidencyMismatch(deployment.name, served.region)
