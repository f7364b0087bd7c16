"""What can go wrong on the way to a deployment, as a small typed hierarchy.

``retryable`` says whether the same request may go again (to this deployment
or another one): only when nothing has been passed on to the client yet.
Messages never carry prompt or completion text, nor any credential.
"""

from __future__ import annotations


class DeploymentFailure(Exception):
    """A deployment did not serve the request. The router fails over when ``retryable``."""

    def __init__(self, deployment: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"deployment {deployment!r}: {message}")
        self.deployment = deployment
        self.reason = message
        self.retryable = retryable


class UpstreamFailure(DeploymentFailure):
    """Base of the upstream client's errors."""


class UpstreamTimeout(UpstreamFailure):
    """Connecting took longer than ``connect_timeout_s``, or a read than ``read_timeout_s``."""

    def __init__(self, deployment: str, phase: str, seconds: float) -> None:
        super().__init__(
            deployment, f"upstream {phase} timed out after {seconds:g}s", retryable=True
        )
        self.phase = phase


class UpstreamUnreachable(UpstreamFailure):
    """No connection (refused, DNS, reset before a response)."""

    def __init__(self, deployment: str, cause: str) -> None:
        super().__init__(deployment, f"upstream unreachable ({cause})", retryable=True)


class UpstreamError(UpstreamFailure):
    """The upstream answered with an error status (or a body that is not what was asked)."""

    def __init__(
        self,
        deployment: str,
        status: int,
        message: str,
        *,
        retry_after_s: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        if retryable is None:
            retryable = status in (408, 429) or status >= 500
        super().__init__(deployment, f"upstream answered {status}: {message}", retryable=retryable)
        self.status = status
        self.upstream_message = message
        self.retry_after_s = retry_after_s

    @property
    def client_fault(self) -> bool:
        """The caller's request was refused on its merits (400, 413, 422 …): tell the caller.

        401/403/404 mean the gateway's credentials or model mapping are wrong, which
        is the operator's problem, not the caller's; 408/429/5xx are the upstream's.
        """
        return 400 <= self.status < 500 and self.status not in (401, 403, 404, 408, 429)


class UpstreamStreamBroken(UpstreamFailure):
    """The stream ended without finishing, was cut, or reported an error in-band.

    Retryable only when it broke before its first event was passed on.
    """

    def __init__(self, deployment: str, message: str, *, started: bool) -> None:
        super().__init__(deployment, message, retryable=not started)
        self.started = started


class ResidencyMismatch(UpstreamFailure):
    """An upstream said it served from a region the policy does not allow; nothing was passed on."""

    def __init__(self, deployment: str, region: str) -> None:
        super().__init__(
            deployment,
            f"upstream reported serving region {region!r}, outside the policy",
            retryable=True,
        )
        self.region = region
