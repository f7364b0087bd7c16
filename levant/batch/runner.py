"""The batch runner: an asyncio task in the app's lifespan that works through batch jobs.

Each line is sent to the app's own route (``httpx.ASGITransport`` against the
running app), as the job's key: authentication scopes, admission, rate and spend
limits, metering and error shapes are exactly those of an interactive request, and
the usage row's request id is tagged ``batch.<job>.<line>``.

Batch traffic yields to interactive traffic: at most one line per model is in
flight at a time (across jobs), and a line is not sent while that model's engine
has interactive requests waiting. A line answered 429/503 is retried after its
Retry-After (bounded); any other answer is the line's result.

A job is run by the process holding its lease (renewed while it runs, released on
shutdown), so two gateways on one database never run the same job. Progress is a
``batch_results`` row per finished line: a restarted server skips those lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from levant.access.principal import Principal
from levant.api.auth import INTERNAL_PRINCIPAL
from levant.api.metering import USAGE_TAG
from levant.api.state import AppState
from levant.batch import jobs
from levant.db.types import utcnow
from levant.files.records import collect, purge_expired
from levant.files.store import file_store

log = logging.getLogger("levant.batch")

RETRYABLE = (429, 503)
MAX_ATTEMPTS = 5
MAX_RETRY_WAIT_S = 30.0
YIELD_POLL_S = 0.05


@dataclass
class _Running:
    task: asyncio.Task[None]
    line: asyncio.Task[LineResult] | None = None


@dataclass
class LineResult:
    ok: bool
    record: dict[str, Any]
    error: str | None = None


@dataclass
class _Holder:
    """The principal the in-process client acts for (re-read before every line)."""

    principal: Principal | None = None


class BatchRunner:
    def __init__(
        self,
        state: AppState,
        app: ASGIApp,
        *,
        poll_s: float = 1.0,
        lease_s: float = 60.0,
        max_jobs: int = 16,
    ) -> None:
        self.state = state
        self.app = app
        self.files = file_store(state.settings.home)
        self.owner = uuid.uuid4().hex
        self.poll_s = poll_s
        self.lease = timedelta(seconds=lease_s)
        self.max_jobs = max_jobs
        self._jobs: dict[str, _Running] = {}
        self._model_locks: dict[str, asyncio.Lock] = {}
        self._wake: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._main = asyncio.create_task(self._loop(), name="levant-batch")

    def wake(self) -> None:
        """Look for work now (a job was created or cancelled)."""
        if self._wake is not None:
            self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job's line in flight, if this process runs it (its status says cancel)."""
        running = self._jobs.get(job_id)
        if running is not None and running.line is not None:
            running.line.cancel()
        self.wake()

    async def stop(self) -> None:
        """Stop every job where it is (lines in flight are cancelled, not recorded) and
        release the leases, so the next start resumes them at once."""
        tasks = [r.task for r in self._jobs.values()]
        if self._main is not None:
            tasks.append(self._main)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._jobs.clear()
        try:
            await asyncio.to_thread(jobs.release_leases, self.state.platform.db, self.owner)
        except Exception as exc:
            log.error("batch: releasing leases failed: %s", type(exc).__name__)

    async def _loop(self) -> None:
        await asyncio.to_thread(self.files.sweep_partials)
        last_renew = last_purge = 0.0
        while True:
            try:
                now = time.monotonic()
                if self._jobs and now - last_renew > self.lease.total_seconds() / 3:
                    await asyncio.to_thread(
                        jobs.renew_leases,
                        self.state.platform.db,
                        self.owner,
                        list(self._jobs),
                        self.lease,
                    )
                    last_renew = now
                if now - last_purge > 60:
                    await asyncio.to_thread(purge_expired, self.state.platform.db, self.files)
                    last_purge = now
                room = self.max_jobs - len(self._jobs)
                if room > 0:
                    claimed = await asyncio.to_thread(
                        jobs.claim_jobs, self.state.platform.db, self.owner, self.lease, room
                    )
                    for job_id in claimed:
                        if job_id not in self._jobs:
                            self._spawn(job_id)
            except Exception as exc:  # the next round retries
                log.error("batch: scheduling round failed: %s", type(exc).__name__)
            assert self._wake is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    def _spawn(self, job_id: str) -> None:
        task = asyncio.create_task(self._run_job(job_id), name=f"levant-batch-{job_id}")
        self._jobs[job_id] = _Running(task)

        def done(_: asyncio.Task[None]) -> None:
            if self._jobs.get(job_id) is not None and self._jobs[job_id].task is task:
                del self._jobs[job_id]

        task.add_done_callback(done)

    # -- one job -------------------------------------------------------------------

    async def _run_job(self, job_id: str) -> None:
        try:
            await self._work(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("batch: job %s failed: %s", job_id, type(exc).__name__)
            outcome = jobs.Outcome("FAILED", [f"Internal error: {type(exc).__name__}"])
            with contextlib.suppress(Exception):
                await self._finish(job_id, outcome)

    async def _finish(self, job_id: str, outcome: jobs.Outcome) -> None:
        db = self.state.platform.db
        job = await asyncio.to_thread(jobs.load_job, db, job_id)
        if await asyncio.to_thread(jobs.finalize, db, self.files, job_id, outcome) and job:
            await asyncio.to_thread(collect, db, self.files, [job.input_sha256])

    async def _work(self, job_id: str) -> None:
        db = self.state.platform.db
        job = await asyncio.to_thread(jobs.load_job, db, job_id)
        if job is None:
            return
        if job.status == "CANCELLATION_REQUESTED":
            await self._finish(job_id, jobs.Outcome("CANCELLED"))
            return
        await asyncio.to_thread(jobs.start_job, db, job_id)
        done = await asyncio.to_thread(jobs.done_lines, db, job_id)
        holder = _Holder()
        transport = httpx.ASGITransport(app=self._as(holder), raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://levant.batch", trust_env=False, timeout=None
        ) as client:
            # Reading the next line is a buffered readline: cheap enough for the event loop.
            for seq, custom_id, body in jobs.read_input(self.files, job.input_sha256):
                if seq in done:
                    continue
                stop = await self._check(job_id, holder)
                if stop is not None:
                    await self._finish(job_id, stop)
                    return
                running = self._jobs.get(job_id)
                line = asyncio.create_task(
                    self._line(client, job, seq, custom_id, body, holder, job_id)
                )
                if running is not None:
                    running.line = line
                try:
                    result = await line
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # the server is stopping: the line stays to do
                    continue  # the job was cancelled: the next check finishes it
                finally:
                    if running is not None:
                        running.line = None
                await asyncio.to_thread(
                    jobs.record_result, db, job_id, seq, result.ok, result.record, result.error
                )
        final = await asyncio.to_thread(jobs.load_job, db, job_id)
        if final is None:
            return
        completed = final.succeeded_requests + final.failed_requests
        if final.status == "CANCELLATION_REQUESTED" and completed < final.total_requests:
            outcome = jobs.Outcome("CANCELLED")  # the last line was the one cancelled
        elif final.total_requests > 0 and final.succeeded_requests == 0:
            outcome = jobs.Outcome("FAILED")
        else:
            outcome = jobs.Outcome("SUCCESS")  # every line done: a late cancel or deadline
        await self._finish(job_id, outcome)

    async def _check(self, job_id: str, holder: _Holder) -> jobs.Outcome | None:
        """Why the job must stop before its next line (None: go on); refreshes the principal."""
        db = self.state.platform.db
        job = await asyncio.to_thread(jobs.load_job, db, job_id)
        if job is None:
            return jobs.Outcome("CANCELLED")
        if job.status == "CANCELLATION_REQUESTED":
            return jobs.Outcome("CANCELLED")
        if utcnow() >= job.deadline:
            return jobs.Outcome(
                "TIMEOUT_EXCEEDED", [f"The job did not finish within {job.timeout_hours} h"]
            )
        try:
            principal = await asyncio.to_thread(
                jobs.principal_for, db, job, self.state.gateway.regions
            )
        except jobs.KeyUnusable as exc:
            return jobs.Outcome("FAILED", [str(exc)])
        if principal.zero_retention:
            # Nothing of a zero-retention workspace may be stored: drop what was kept.
            await asyncio.to_thread(jobs.discard_results, db, job_id)
            return jobs.Outcome(
                "FAILED", ["The workspace has zero retention: batch results cannot be stored"]
            )
        holder.principal = principal
        return None

    def _as(self, holder: _Holder) -> ASGIApp:
        app = self.app

        async def as_principal(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, INTERNAL_PRINCIPAL: holder.principal}, receive, send)

        return as_principal

    # -- one line ------------------------------------------------------------------

    def _model_id(self, name: str) -> str:
        try:
            return self.state.registry.catalog.get(name).id
        except Exception:
            return name

    async def _yield_to_interactive(self, model_id: str, deadline: datetime) -> None:
        """Wait while the model's engine has interactive requests queued (until the
        job's deadline: the check after the line then ends the job)."""
        while utcnow() < deadline:
            waiting = 0
            for service in self.state.registry.generators():
                if service.card.id == model_id:
                    waiting = service.engine.num_waiting
            if waiting <= 0:
                return
            await asyncio.sleep(YIELD_POLL_S)

    async def _line(
        self,
        client: httpx.AsyncClient,
        job: Any,
        seq: int,
        custom_id: str | None,
        body: dict[str, Any],
        holder: _Holder,
        job_id: str,
    ) -> LineResult:
        body = dict(body)
        if job.model is not None:
            body["model"] = job.model
        if job.endpoint != "/v1/embeddings":
            body["stream"] = False
        model = body.get("model")
        model_id = self._model_id(model) if isinstance(model, str) else ""
        lock = self._model_locks.setdefault(model_id, asyncio.Lock())
        USAGE_TAG.set(f"batch.{job_id}.{seq}")
        line_id = f"batch-{job_id}-{seq}"
        attempt = 0
        while True:
            attempt += 1
            async with lock:
                await self._yield_to_interactive(model_id, job.deadline)
                response = await client.post(job.endpoint, json=body)
            if response.status_code in RETRYABLE and attempt < MAX_ATTEMPTS:
                await asyncio.sleep(_retry_after(response))
                continue
            return _result(line_id, custom_id, response)


def _retry_after(response: httpx.Response) -> float:
    try:
        wait = float(response.headers.get("retry-after", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.1), MAX_RETRY_WAIT_S)


def _result(line_id: str, custom_id: str | None, response: httpx.Response) -> LineResult:
    try:
        payload: Any = response.json()
    except ValueError:
        payload = response.text
    record: dict[str, Any] = {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": response.status_code, "body": payload},
        "error": None,
    }
    if response.status_code == 200:
        return LineResult(True, record)
    message = f"HTTP {response.status_code}"
    code = None
    if isinstance(payload, dict):
        nested = payload.get("error")
        fields: dict[str, Any] = nested if isinstance(nested, dict) else payload
        message = str(fields.get("message") or message)
        code = fields.get("code")
    record["error"] = {"message": message, "code": code}
    return LineResult(False, record, message)
