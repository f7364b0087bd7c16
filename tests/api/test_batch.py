"""``/v1/batch/jobs`` through the official mistralai SDK against a live server with the real
SmolLM2 (SQLite and PostgreSQL): jobs from files and inline requests, output and error files,
per-line metering, filters, cancel, isolation, and a server stopped mid-job that resumes
on restart without running or billing a finished line again."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from mistralai.client import Mistral
from mistralai.client.errors import MistralError
from sqlalchemy import select

from levant.access.keys import create_key, revoke_key
from levant.batch.runner import BatchRunner
from levant.config import Settings
from levant.db.engine import resolve_url
from levant.db.file_tables import BatchJob, BatchResult
from levant.db.session import Database
from levant.db.tables import UsageEvent, Workspace
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home
from tests.embeddings.conftest import EMBEDDING_MODEL, pulled_minilm
from tests.openapi_spec import validate

pytestmark = pytest.mark.slow

FINISHED = {"SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    db_kind: str,
    model_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore
    from tests.db.fixtures import postgres_url

    home, catalog = isolated_home(tmp_path_factory.mktemp(f"batch-{db_kind}"), model_home)
    entries = yaml.safe_load(catalog.read_text())
    local = {"kind": "local", "path": str(pulled_minilm())}
    entries["models"].append({"id": EMBEDDING_MODEL, "extra_sources": [local]})
    catalog.write_text(yaml.safe_dump(entries))
    url = None if db_kind == "sqlite" else postgres_url(request.config)
    settings = Settings(home=home, catalog_path=catalog, database_url=url)
    pull(load_catalog(settings).get(EMBEDDING_MODEL), ModelStore(settings))
    live = LiveServer(settings, preload=[DEFAULT_MODEL])
    live.start()
    yield live
    live.stop()


def sdk(server: LiveServer, key: str | None = None) -> Mistral:
    return Mistral(api_key=key or server.api_key, server_url=server.url)


def chat_line(custom_id: str, text: str, max_tokens: int = 4) -> dict[str, Any]:
    body = {
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return {"custom_id": custom_id, "body": body}


def upload_lines(client: Mistral, lines: list[dict[str, Any]]) -> str:
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.files.upload(
        file={"file_name": "batch.jsonl", "content": content}, purpose="batch"
    ).id


def wait(client: Mistral, job_id: str, until: set[str] = FINISHED, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.batch.jobs.get(job_id=job_id)
        if job.status in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.status}")


def wait_for_lines(client: Mistral, job_id: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.batch.jobs.get(job_id=job_id).completed_requests < n:
        assert time.monotonic() < deadline, f"job {job_id} did not reach {n} lines"
        time.sleep(0.05)


def records(client: Mistral, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    raw = client.files.download(file_id=file_id).read().decode()
    return [json.loads(line) for line in raw.splitlines()]


def usage_rows(server: LiveServer, job_id: str) -> list[UsageEvent]:
    server.state.usage.flush(timeout=10)
    with server.state.platform.db.reading() as s:
        return list(
            s.scalars(select(UsageEvent).where(UsageEvent.request_id.like(f"batch.{job_id}.%")))
        )


def line_of(row: UsageEvent) -> int:
    return int(row.request_id.split(".")[2])


def other_workspace_key(server: LiveServer) -> str:
    platform = server.state.platform
    with platform.db.writing() as s:
        default = s.get(Workspace, platform.bootstrap.workspace_id)
        assert default is not None
        ws = Workspace(organisation_id=default.organisation_id, name=f"o-{uuid.uuid4().hex[:8]}")
        s.add(ws)
        s.flush()
        return create_key(s, platform.secret, workspace_id=ws.id, name="o", actor="t").key


def test_job_from_a_file_end_to_end(server: LiveServer) -> None:
    client = sdk(server)
    lines = [chat_line(f"q{i}", f"Count to {i}.") for i in range(3)]
    file_id = upload_lines(client, lines)
    job = client.batch.jobs.create(
        endpoint="/v1/chat/completions",
        input_files=[file_id],
        model=DEFAULT_MODEL,
        metadata={"run": "e2e"},
        timeout_hours=2,
    )
    validate(job.model_dump(by_alias=True), "BatchJobOut")
    assert job.status == "QUEUED" and job.total_requests == 3
    assert job.input_files == [file_id] and job.metadata == {"run": "e2e"}

    done = wait(client, job.id)
    validate(done.model_dump(by_alias=True), "BatchJobOut")
    validate(server.client().get(f"/v1/batch/jobs/{job.id}").json(), "BatchJobOut")
    validate(server.client().get("/v1/batch/jobs").json(), "BatchJobsOut")
    assert done.status == "SUCCESS"
    assert (done.succeeded_requests, done.failed_requests, done.completed_requests) == (3, 0, 3)
    assert done.started_at is not None and done.completed_at is not None
    assert done.error_file is None and done.output_file is not None

    out = records(client, done.output_file)
    assert [r["custom_id"] for r in out] == ["q0", "q1", "q2"]
    for r in out:
        assert r["error"] is None and r["response"]["status_code"] == 200
        body = r["response"]["body"]
        validate(body, "ChatCompletionResponse")
        assert body["model"] == DEFAULT_MODEL
        assert body["usage"]["completion_tokens"] <= 4 and body["usage"]["prompt_tokens"] > 0

    meta = client.files.retrieve(file_id=done.output_file)
    assert (meta.purpose, meta.sample_type, meta.source) == ("batch", "batch_result", "mistral")
    assert meta.num_lines == 3

    # Every line was metered once, like an interactive request, tagged with its job and line.
    rows = usage_rows(server, job.id)
    assert sorted(line_of(r) for r in rows) == [0, 1, 2]
    assert all(r.status == "ok" and r.model == DEFAULT_MODEL for r in rows)
    by_line = {line_of(r): r for r in rows}
    for i, r in enumerate(out):
        assert by_line[i].completion_tokens == r["response"]["body"]["usage"]["completion_tokens"]


def test_inline_requests_and_a_failing_line(server: LiveServer) -> None:
    client = sdk(server)
    requests = [
        chat_line("good-1", "Say yes."),
        {
            "custom_id": "bad",
            "body": {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
        },
        chat_line("good-2", "Say no."),
    ]
    job = client.batch.jobs.create(
        endpoint="/v1/chat/completions", requests=requests, model=DEFAULT_MODEL
    )
    done = wait(client, job.id)
    assert done.status == "SUCCESS"
    assert (done.succeeded_requests, done.failed_requests) == (2, 1)
    assert len(done.errors) == 1 and done.errors[0].count == 1
    assert [r["custom_id"] for r in records(client, done.output_file)] == ["good-1", "good-2"]
    errors = records(client, done.error_file)
    assert [e["custom_id"] for e in errors] == ["bad"]
    assert errors[0]["response"]["status_code"] == 422
    assert errors[0]["error"]["code"] == "invalid_value"
    assert client.files.retrieve(file_id=done.error_file).sample_type == "batch_error"

    inline = client.batch.jobs.get(job_id=job.id, inline=True)
    assert inline.outputs is not None
    assert sorted(o["custom_id"] for o in inline.outputs) == ["bad", "good-1", "good-2"]
    # The failed line was refused before admission: nothing to bill for it.
    assert sorted(line_of(r) for r in usage_rows(server, job.id)) == [0, 2]


def test_per_line_models_and_other_endpoints(server: LiveServer) -> None:
    client = sdk(server)
    lines = [{"custom_id": "m", "body": {**chat_line("", "Hi.")["body"], "model": DEFAULT_MODEL}}]
    job = client.batch.jobs.create(endpoint="/v1/chat/completions", requests=lines)
    assert wait(client, job.id).status == "SUCCESS"

    # SmolLM2 has no FIM: every line fails with the route's own 400, so the job fails.
    fim = client.batch.jobs.create(
        endpoint="/v1/fim/completions",
        requests=[{"custom_id": "f", "body": {"prompt": "def f(", "max_tokens": 3}}],
        model=DEFAULT_MODEL,
    )
    failed = wait(client, fim.id)
    assert failed.status == "FAILED" and failed.output_file is None
    [err] = records(client, failed.error_file)
    assert err["response"]["status_code"] == 400
    assert err["error"]["code"] == "unsupported_capability"


def test_embeddings_job(server: LiveServer) -> None:
    client = sdk(server)
    texts = ["The cat sits on the mat.", "Stock prices fell sharply."]
    job = client.batch.jobs.create(
        endpoint="/v1/embeddings",
        requests=[{"custom_id": f"e{i}", "body": {"input": t}} for i, t in enumerate(texts)],
        model=EMBEDDING_MODEL,
    )
    done = wait(client, job.id)
    assert done.status == "SUCCESS" and done.succeeded_requests == 2
    out = records(client, done.output_file)
    direct = client.embeddings.create(model=EMBEDDING_MODEL, inputs=texts)
    for i, r in enumerate(out):
        body = r["response"]["body"]
        validate(body, "EmbeddingResponse")
        got = body["data"][0]["embedding"]
        assert got == pytest.approx(direct.data[i].embedding, abs=1e-5)
        assert body["usage"]["prompt_tokens"] > 0
    assert sorted(line_of(r) for r in usage_rows(server, job.id)) == [0, 1]


def test_creation_is_validated(server: LiveServer) -> None:
    c = server.client()
    good = {"endpoint": "/v1/chat/completions", "model": DEFAULT_MODEL}
    one = [chat_line("a", "x")]

    def create(**fields: Any) -> Any:
        return c.post("/v1/batch/jobs", json={**good, **fields})

    r = create(endpoint="/v1/ocr", requests=one)
    assert r.status_code == 400 and r.json()["code"] == "unsupported_endpoint"
    assert create().status_code == 400
    assert create(requests=one, agent_id="ag").status_code == 400
    assert create(requests=one, timeout_hours=0).status_code == 422
    assert create(requests=one, model="no-such-model").status_code == 404
    assert create(requests=one, metadata={"k": ""}).status_code == 422
    assert create(requests=one, surprise=1).status_code == 422
    r = c.post("/v1/batch/jobs", json={"endpoint": "/v1/chat/completions", "requests": one})
    assert r.status_code == 400 and r.json()["param"] == "model"

    client = sdk(server)
    broken = client.files.upload(
        file={"file_name": "b.jsonl", "content": b'{"custom_id": "1", "body": {}}\nnot json\n'},
        purpose="batch",
    )
    r = create(input_files=[broken.id])
    assert r.status_code == 400 and "line 2" in r.json()["message"]
    tuning = client.files.upload(
        file={"file_name": "t.jsonl", "content": b'{"text": "x"}\n'}, purpose="fine-tune"
    )
    assert create(input_files=[tuning.id]).status_code == 400
    assert create(input_files=[str(uuid.uuid4())]).status_code == 400
    theirs = sdk(server, other_workspace_key(server))
    their_file = upload_lines(theirs, one)
    r = create(input_files=[their_file])
    assert r.status_code == 400 and "not found" in r.json()["message"]

    scoped = server.create_key("embeddings-only", allowed_endpoints=["/v1/batch/jobs"])
    r = server.client().post(
        "/v1/batch/jobs",
        json={**good, "requests": one},
        headers={"authorization": f"Bearer {scoped}"},
    )
    assert r.status_code == 403 and r.json()["code"] == "endpoint_not_allowed"


def test_list_filters_and_paging(server: LiveServer) -> None:
    key = server.create_key("lister")
    client = sdk(server, key)
    tag = uuid.uuid4().hex[:8]
    made = [
        client.batch.jobs.create(
            endpoint="/v1/chat/completions",
            requests=[chat_line(f"{tag}{i}", "Hi.", max_tokens=1)],
            model=DEFAULT_MODEL,
            metadata={"tag": tag, "n": str(i)},
        )
        for i in range(3)
    ]
    for job in made:
        wait(client, job.id)
    mine = client.batch.jobs.list(metadata={"tag": tag})
    validate(mine.model_dump(by_alias=True), "BatchJobsOut")
    assert mine.total == 3
    assert [j.id for j in mine.data] == [j.id for j in reversed(made)]
    oldest = client.batch.jobs.list(metadata={"tag": tag}, order_by="created")
    assert [j.id for j in oldest.data] == [j.id for j in made]
    assert client.batch.jobs.list(metadata={"tag": tag, "n": "1"}).data[0].id == made[1].id
    page = client.batch.jobs.list(metadata={"tag": tag}, page=1, page_size=2)
    assert [j.id for j in page.data] == [made[0].id] and page.total == 3
    by_me = client.batch.jobs.list(created_by_me=True)
    assert {j.id for j in by_me.data} == {j.id for j in made}
    assert client.batch.jobs.list(metadata={"tag": tag}, status=["SUCCESS"]).total == 3
    assert client.batch.jobs.list(metadata={"tag": tag}, status=["QUEUED", "RUNNING"]).total == 0
    assert client.batch.jobs.list(metadata={"tag": tag}, model="other").total == 0
    theirs = sdk(server, other_workspace_key(server))
    assert theirs.batch.jobs.list().total == 0
    for call in (
        lambda: theirs.batch.jobs.get(job_id=made[0].id),
        lambda: theirs.batch.jobs.cancel(job_id=made[0].id),
    ):
        with pytest.raises(MistralError) as err:
            call()
        assert err.value.status_code == 404


def test_cancel_stops_a_running_job(server: LiveServer) -> None:
    client = sdk(server)
    lines = [chat_line(f"c{i}", f"Write a poem about {i}.", max_tokens=16) for i in range(30)]
    job = client.batch.jobs.create(
        endpoint="/v1/chat/completions", requests=lines, model=DEFAULT_MODEL
    )
    wait_for_lines(client, job.id, 2)
    asked = client.batch.jobs.cancel(job_id=job.id)
    validate(asked.model_dump(by_alias=True), "BatchJobOut")
    assert asked.status in ("CANCELLATION_REQUESTED", "CANCELLED")
    done = wait(client, job.id, timeout=60)
    assert done.status == "CANCELLED"
    assert 2 <= done.completed_requests < 30
    out = records(client, done.output_file)
    assert len(out) == done.succeeded_requests
    assert [r["custom_id"] for r in out] == [f"c{i}" for i in range(len(out))]
    # Cancelling a finished job changes nothing.
    assert client.batch.jobs.cancel(job_id=job.id).status == "CANCELLED"
    ok = [r for r in usage_rows(server, job.id) if r.status == "ok"]
    assert len(ok) == done.succeeded_requests


def test_deadline_ends_a_job_with_what_it_has(server: LiveServer) -> None:
    client = sdk(server)
    lines = [chat_line(f"t{i}", f"Write about {i}.", max_tokens=16) for i in range(20)]
    job = client.batch.jobs.create(
        endpoint="/v1/chat/completions", requests=lines, model=DEFAULT_MODEL, timeout_hours=1
    )
    wait_for_lines(client, job.id, 1)
    with server.state.platform.db.writing() as s:
        row = s.get(BatchJob, job.id)
        assert row is not None
        row.deadline = datetime.now(UTC)
    done = wait(client, job.id)
    assert done.status == "TIMEOUT_EXCEEDED"
    assert 1 <= done.completed_requests < 20
    assert any("1 h" in e.message for e in done.errors)
    assert len(records(client, done.output_file)) == done.succeeded_requests


def test_a_key_revoked_mid_job_fails_it(server: LiveServer) -> None:
    key = server.create_key("revoked-mid-job")
    client = sdk(server, key)
    lines = [chat_line(f"k{i}", f"Write about {i}.", max_tokens=16) for i in range(20)]
    job = client.batch.jobs.create(
        endpoint="/v1/chat/completions", requests=lines, model=DEFAULT_MODEL
    )
    wait_for_lines(client, job.id, 1)
    platform = server.state.platform
    with platform.db.writing() as s:
        key_id = s.scalars(select(BatchJob.key_id).where(BatchJob.id == job.id)).one()
        assert key_id is not None
        revoke_key(s, key_id, actor="tests")
    done = wait(sdk(server), job.id)
    assert done.status == "FAILED" and done.completed_requests < 20
    assert any("revoked" in e.message for e in done.errors)


def test_one_line_in_flight_per_model_and_interactive_goes_first(server: LiveServer) -> None:
    client = sdk(server)
    jobs = [
        client.batch.jobs.create(
            endpoint="/v1/chat/completions",
            requests=[chat_line(f"{j}-{i}", "Tell me a story.", max_tokens=8) for i in range(3)],
            model=DEFAULT_MODEL,
        )
        for j in range(2)
    ]
    [service] = [s for s in server.state.registry.generators() if s.card.id == DEFAULT_MODEL]
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append(service.engine.num_in_flight)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        # Interactive requests meanwhile are served (and are the only source of a second
        # request in flight).
        interactive = sdk(server).chat.complete(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=4,
            temperature=0,
        )
        assert interactive.choices[0].message.content
        for job in jobs:
            assert wait(client, job.id).status == "SUCCESS"
    finally:
        stop.set()
        sampler.join()
    assert max(seen) <= 2  # one batch line + the one interactive request at most
    assert Counter(seen)[2] < len(seen) // 2


async def test_batch_lines_wait_while_interactive_requests_queue(tmp_path: Path) -> None:
    """Unit: the runner does not send a line while the model's engine has requests waiting."""
    engine = SimpleNamespace(num_waiting=3)
    service = SimpleNamespace(card=SimpleNamespace(id="m"), engine=engine)
    state: Any = SimpleNamespace(
        settings=SimpleNamespace(home=tmp_path),
        registry=SimpleNamespace(generators=lambda: [service]),
    )
    runner = BatchRunner(state, app=None)  # type: ignore[arg-type]
    far = datetime.now(UTC) + timedelta(days=1)
    waiter = asyncio.create_task(runner._yield_to_interactive("m", far))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    engine.num_waiting = 0
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(runner._yield_to_interactive("other-model", far), 1)


def test_restart_resumes_without_rerunning_or_rebilling(
    request: pytest.FixtureRequest, db_kind: str, model_home: Path, tmp_path: Path
) -> None:
    from tests.db.fixtures import postgres_url

    home, catalog = isolated_home(tmp_path / "home", model_home)
    url = None if db_kind == "sqlite" else postgres_url(request.config)
    settings = Settings(home=home, catalog_path=catalog, database_url=url)
    n = 6
    first = LiveServer(settings, preload=[DEFAULT_MODEL])
    first.start()
    try:
        client = sdk(first)
        lines = [chat_line(f"r{i}", f"Describe the number {i}.", max_tokens=12) for i in range(n)]
        job = client.batch.jobs.create(
            endpoint="/v1/chat/completions",
            input_files=[upload_lines(client, lines)],
            model=DEFAULT_MODEL,
        )
        wait_for_lines(client, job.id, 2)
    finally:
        first.stop()

    db = Database.from_url(resolve_url(home, url))
    try:
        with db.reading() as s:
            done_before = set(
                s.scalars(select(BatchResult.seq).where(BatchResult.job_id == job.id))
            )
    finally:
        db.dispose()
    assert 2 <= len(done_before) < n, "stop the server mid-job"

    second = LiveServer(settings, preload=[DEFAULT_MODEL])
    second.start()
    try:
        client = sdk(second)
        done = wait(client, job.id)
        assert done.status == "SUCCESS" and done.succeeded_requests == n
        out = records(client, done.output_file)
        assert [r["custom_id"] for r in out] == [f"r{i}" for i in range(n)]
        rows = usage_rows(second, job.id)
    finally:
        second.stop()
    ok = Counter(line_of(r) for r in rows if r.status == "ok")
    assert ok == Counter(range(n)), "every line billed exactly once"
    for seq in done_before:  # finished before the stop: never run again
        assert [r.status for r in rows if line_of(r) == seq] == ["ok"]
    # At most the one line in flight at the stop was cut short (and billed as cancelled).
    assert len(rows) - n <= 1
    assert all(r.status in ("ok", "cancelled") for r in rows)
