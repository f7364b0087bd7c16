"""Open-weight downloads: ``GET /v1/models/{id}/weights`` (manifest) and ``…/weights/{file}``.

Commercial-track models are never exportable: 404 without a grant (they are
invisible), 403 with one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from levant.access.policy import NotExportable, check_exportable
from levant.access.principal import Principal
from levant.api.auth import PrincipalDep
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.state import AppState
from levant.catalog.card import ModelCard, WeightFile
from levant.catalog.catalog import ModelNotFound
from levant.catalog.export import licence_text
from levant.serving.registry import ModelNotAvailable

router = APIRouter()


def _exportable_card(state: AppState, principal: Principal, model_id: str) -> ModelCard:
    try:
        card = state.registry.resolve(model_id)
        if not principal.may_use(card):
            raise ModelNotFound(model_id)
    except (ModelNotFound, ModelNotAvailable) as exc:
        raise APIError(
            404,
            f"Model '{model_id}' not found",
            type="not_found_error",
            param="model_id",
            code="model_not_found",
        ) from exc
    try:
        check_exportable(card)
    except NotExportable as exc:
        raise APIError(
            403, str(exc), type="permission_error", param="model_id", code="not_exportable"
        ) from exc
    return card


@router.get("/v1/models/{model_id}/weights")
async def weights_manifest(
    model_id: str, state: StateDep, principal: PrincipalDep
) -> dict[str, Any]:
    card = _exportable_card(state, principal, model_id)
    return {
        "object": "model.weights",
        "model": card.id,
        "track": card.track,
        "format": card.format,
        "licence": card.licence,
        "licence_url": card.licence_url,
        "licence_notice": licence_text(card),
        "files": [
            {
                "path": f.path,
                "sha256": f.sha256,
                "size": f.size,
                "url": f"/v1/models/{card.id}/weights/{f.path}",
            }
            for f in card.files
        ],
    }


@router.get("/v1/models/{model_id}/weights/{path:path}")
async def weights_file(
    model_id: str, path: str, state: StateDep, principal: PrincipalDep
) -> FileResponse:
    card = _exportable_card(state, principal, model_id)
    file: WeightFile | None = next((f for f in card.files if f.path == path), None)
    if file is None:
        raise APIError(
            404,
            f"Model '{card.id}' has no file '{path}'",
            type="not_found_error",
            param="path",
            code="file_not_found",
        )
    return FileResponse(
        state.registry.store.file_path(card, file),
        media_type="application/octet-stream",
        filename=file.path.rsplit("/", 1)[-1],
        headers={"x-levant-sha256": file.sha256, "x-levant-licence": card.licence},
    )
