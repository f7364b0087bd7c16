"""``/v1/batch/jobs``: create, list, get and cancel batch jobs (Mistral's Batch API).

A job's requests come from JSONL input files (``{"custom_id", "body"}`` per line,
uploaded with purpose ``batch``) and/or inline ``requests``; they are validated and
written to the job's own input at creation (a bad line is a 400 naming it). The
batch runner (``levant.batch.runner``) then sends each line through the endpoint's
own route as the job's key, below interactive traffic, and writes the output and
error files at the end.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from levant.access.principal import Principal
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.models_lookup import card_for
from levant.api.schemas.batch import BatchJobIn, BatchJobStatus, job_wire
from levant.api.state import AppState
from levant.api.stateful import StatefulPrincipalDep
from levant.batch import jobs
from levant.db.file_tables import BatchJob, StoredFile
from levant.files import records
from levant.files.store import file_store

router = APIRouter()

_LIST_PARAMS = frozenset(
    {
        "page",
        "page_size",
        "model",
        "agent_id",
        "metadata",
        "created_after",
        "created_by_me",
        "status",
        "order_by",
    }
)
MAX_INLINE_OUTPUTS = 10_000


def _not_found(job_id: str) -> APIError:
    return APIError(
        404,
        f"Batch job '{job_id}' not found",
        type="not_found_error",
        param="job_id",
        code="batch_job_not_found",
    )


def _runner(request: Request) -> Any:
    return getattr(request.app.state, "batch_runner", None)


def _check_request(state: AppState, principal: Principal, body: BatchJobIn) -> None:
    if body.endpoint not in jobs.ENDPOINTS:
        raise APIError(
            400,
            f"Endpoint '{body.endpoint}' is not supported for batch jobs; use one of "
            f"{', '.join(jobs.ENDPOINTS)}",
            param="endpoint",
            code="unsupported_endpoint",
        )
    if body.agent_id is not None:
        raise APIError(
            400, "Agents are not supported on this server", param="agent_id", code="invalid_value"
        )
    if not body.input_files and not body.requests:
        raise APIError(
            400,
            "A batch job needs input_files or requests",
            param="input_files",
            code="invalid_value",
        )
    if not principal.scopes.allows_endpoint(body.endpoint):
        raise APIError(
            403,
            f"This API key may not call {body.endpoint}",
            type="permission_error",
            param="endpoint",
            code="endpoint_not_allowed",
        )
    if body.model is not None:
        remote = body.endpoint == "/v1/chat/completions" and state.gateway.remote(body.model)
        card_for(state, body.model, principal, require_pulled=not remote)


@router.post("/v1/batch/jobs", response_model=None)
async def create_batch_job(
    body: BatchJobIn, request: Request, state: StateDep, principal: StatefulPrincipalDep
) -> JSONResponse:
    _check_request(state, principal, body)
    db = state.platform.db
    store = file_store(state.settings.home)
    input_files = list(body.input_files or [])
    requests = [r.model_dump() for r in body.requests or []]

    def create() -> dict[str, Any]:
        made = jobs.build_input(
            db,
            store,
            principal,
            input_files=input_files,
            requests=requests,
            needs_model=body.model is None,
            max_requests=None,
        )
        try:
            with store.lock, db.writing() as session:
                job = jobs.create_job(
                    session,
                    principal,
                    jobs.NewJob(
                        endpoint=body.endpoint,
                        model=body.model,
                        metadata=body.metadata,
                        input_files=input_files,
                        timeout_hours=body.timeout_hours,
                        input=made,
                    ),
                )
                return job_wire(job)
        except BaseException:
            records.collect(db, store, [made.sha256])
            raise

    try:
        wire = await asyncio.to_thread(create)
    except jobs.BatchInputError as exc:
        raise APIError(400, str(exc), param=exc.param, code="invalid_batch_input") from exc
    runner = _runner(request)
    if runner is not None:
        runner.wake()
    return JSONResponse(wire)


def _metadata_filter(request: Request, metadata: str | None) -> dict[str, str] | None:
    """``metadata`` as a JSON object, or (as the mistralai SDK sends a dict query
    parameter, form-exploded) every query parameter that is not one of the route's."""
    wanted: dict[str, str] = {}
    if metadata:
        try:
            parsed = json.loads(metadata)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise APIError(
                422,
                "Invalid value for metadata: a JSON object",
                param="metadata",
                code="invalid_value",
            )
        wanted.update({str(k): str(v) for k, v in parsed.items()})
    for key, value in request.query_params.multi_items():
        if key not in _LIST_PARAMS:
            wanted[key] = value
    return wanted or None


@router.get("/v1/batch/jobs", response_model=None)
async def list_batch_jobs(
    request: Request,
    state: StateDep,
    principal: StatefulPrincipalDep,
    page: Annotated[int, Query(ge=0)] = 0,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    model: str | None = None,
    agent_id: str | None = None,
    metadata: str | None = None,
    created_after: datetime | None = None,
    created_by_me: bool = False,
    status: Annotated[list[BatchJobStatus] | None, Query()] = None,
    order_by: Annotated[str, Query(pattern="^-?created$")] = "-created",
) -> JSONResponse:
    if created_after is not None and created_after.tzinfo is None:
        created_after = created_after.replace(tzinfo=UTC)
    query = jobs.JobQuery(
        page=page,
        page_size=page_size,
        model=model,
        metadata=_metadata_filter(request, metadata),
        created_after=created_after,
        created_by_me=created_by_me,
        statuses=status,
        newest_first=order_by == "-created",
    )
    if agent_id is not None:  # no agents here: no job was made by one
        return JSONResponse({"data": [], "object": "list", "total": 0})

    def run() -> dict[str, Any]:
        with state.platform.db.reading() as session:
            rows, total = jobs.list_jobs(session, principal, query)
            return {"data": [job_wire(j) for j in rows], "object": "list", "total": total}

    return JSONResponse(await asyncio.to_thread(run))


def _outputs(state: AppState, job: BatchJob) -> list[dict[str, Any]]:
    """The job's result records (output file, then error file), for ``inline=true``."""
    store = file_store(state.settings.home)
    out: list[dict[str, Any]] = []
    with state.platform.db.reading() as session:
        rows = [
            session.get(StoredFile, fid)
            for fid in (job.output_file, job.error_file)
            if fid is not None
        ]
    for row in rows:
        if row is None:
            continue
        with store.open(row.sha256) as fh:
            for line in fh:
                if len(out) >= MAX_INLINE_OUTPUTS:
                    return out
                out.append(json.loads(line))
    return out


async def _job(
    state: AppState, principal: Principal, job_id: str, fn: Any = jobs.get_job, write: bool = False
) -> BatchJob:
    def run() -> BatchJob:
        ctx = state.platform.db.writing() if write else state.platform.db.reading()
        with ctx as session:
            job: BatchJob = fn(session, principal, job_id)
            return job

    try:
        return await asyncio.to_thread(run)
    except jobs.JobNotFound:
        raise _not_found(job_id) from None


@router.get("/v1/batch/jobs/{job_id}", response_model=None)
async def get_batch_job(
    job_id: str,
    state: StateDep,
    principal: StatefulPrincipalDep,
    inline: bool | None = None,
) -> JSONResponse:
    job = await _job(state, principal, job_id)
    outputs = await asyncio.to_thread(_outputs, state, job) if inline else None
    return JSONResponse(job_wire(job, outputs))


@router.post("/v1/batch/jobs/{job_id}/cancel", response_model=None)
async def cancel_batch_job(
    job_id: str, request: Request, state: StateDep, principal: StatefulPrincipalDep
) -> JSONResponse:
    job = await _job(state, principal, job_id, jobs.request_cancel, write=True)
    runner = _runner(request)
    if runner is not None and job.status == "CANCELLATION_REQUESTED":
        runner.cancel(job_id)
    return JSONResponse(job_wire(job))
