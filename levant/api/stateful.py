"""The principal of a call to a stateful endpoint (``/v1/files``, ``/v1/batch/jobs``).

Those endpoints keep request and response text (file bodies, batch results), so a
workspace with zero retention is refused every call, reads included, with
``zero_retention``: nothing of it may be stored, so there is nothing to read either.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from levant.access.principal import Principal
from levant.api.auth import PrincipalDep
from levant.api.errors import APIError


async def stateful_principal(request: Request, principal: PrincipalDep) -> Principal:
    if principal.zero_retention:
        raise APIError(
            403,
            f"This workspace has zero retention: {request.url.path} stores request data "
            "(files, batch inputs and results) and is not available to it",
            type="permission_error",
            code="zero_retention",
        )
    return principal


StatefulPrincipalDep = Annotated[Principal, Depends(stateful_principal)]
