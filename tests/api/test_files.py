"""``/v1/files`` through the official mistralai SDK against a live server (SQLite and PostgreSQL).

Upload, list with paging and filters, retrieve, download, delete; the size limit
(413, nothing half-written: no blob, no partial, no row); one blob per content;
workspace isolation; zero retention refused; uploads streamed, not buffered.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import MistralError
from sqlalchemy import func, select

from levant.access.keys import create_key
from levant.access.policy import set_residency
from levant.config import Settings
from levant.db.file_tables import StoredFile
from levant.db.tables import Workspace
from tests.conftest import LiveServer
from tests.openapi_spec import validate

LIMIT = 8 * 1024 * 1024


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server with no model (files need none) and an 8 MiB file limit."""
    from tests.db.fixtures import postgres_url

    home = tmp_path_factory.mktemp(f"files-{request.param}")
    url = None if request.param == "sqlite" else postgres_url(request.config)
    live = LiveServer(Settings(home=home, database_url=url, max_file_bytes=LIMIT), preload=[])
    live.start()
    yield live
    live.stop()


def sdk(server: LiveServer, key: str | None = None) -> Mistral:
    return Mistral(api_key=key or server.api_key, server_url=server.url)


def new_workspace_key(server: LiveServer, retention: str = "standard") -> str:
    """A key in a fresh workspace of the same organisation."""
    platform = server.state.platform
    with platform.db.writing() as s:
        default = s.get(Workspace, platform.bootstrap.workspace_id)
        assert default is not None
        ws = Workspace(organisation_id=default.organisation_id, name=f"ws-{uuid.uuid4().hex[:8]}")
        s.add(ws)
        s.flush()
        if retention != "standard":
            set_residency(s, ws.id, None, retention, actor="tests")
        return create_key(s, platform.secret, workspace_id=ws.id, name="k", actor="tests").key


def jsonl(n: int, tag: str = "") -> bytes:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    lines = [json.dumps({"custom_id": f"{tag}{i}", "body": body}) + "\n" for i in range(n)]
    return "".join(lines).encode()


def store_dir(server: LiveServer) -> Path:
    return server.state.settings.home / "files"


def blobs(server: LiveServer) -> set[str]:
    d = store_dir(server) / "sha256"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def partials(server: LiveServer) -> list[Path]:
    d = store_dir(server) / "tmp"
    return list(d.iterdir()) if d.exists() else []


def rows(server: LiveServer) -> int:
    with server.state.platform.db.reading() as s:
        return int(s.scalar(select(func.count()).select_from(StoredFile)) or 0)


def test_upload_retrieve_download_delete(server: LiveServer) -> None:
    client = sdk(server)
    content = jsonl(3, tag=uuid.uuid4().hex)
    up = client.files.upload(file={"file_name": "in.jsonl", "content": content}, purpose="batch")
    raw = up.model_dump(by_alias=True)
    validate(raw, "UploadFileOut")
    assert up.size_bytes == len(content) and up.filename == "in.jsonl"
    assert (up.purpose, up.sample_type, up.source) == ("batch", "batch_request", "upload")
    assert up.num_lines == 3 and up.mimetype == "application/jsonl"
    uuid.UUID(up.id)

    got = client.files.retrieve(file_id=up.id)
    validate(got.model_dump(by_alias=True), "RetrieveFileOut")
    raw_get = server.client().get(f"/v1/files/{up.id}").json()  # the wire, not the SDK's model
    validate(raw_get, "RetrieveFileOut")
    validate(server.client().get("/v1/files").json(), "ListFilesOut")
    assert got.id == up.id and got.deleted is False and got.size_bytes == len(content)
    assert client.files.download(file_id=up.id).read() == content

    gone = client.files.delete(file_id=up.id)
    validate(gone.model_dump(by_alias=True), "DeleteFileOut")
    assert gone.id == up.id
    assert gone.deleted is True
    with pytest.raises(MistralError) as err:
        client.files.retrieve(file_id=up.id)
    assert err.value.status_code == 404
    assert json.loads(err.value.body)["code"] == "file_not_found"
    assert up.signature is not None
    assert not any(b.startswith(up.signature) for b in blobs(server))


def test_fine_tune_files_and_default_purpose(server: LiveServer) -> None:
    client = sdk(server)
    text = b'{"text": "a pretraining sample"}\n'
    up = client.files.upload(file={"file_name": "pt.jsonl", "content": text})
    assert (up.purpose, up.sample_type) == ("fine-tune", "pretrain")
    chat = b'{"messages": [{"role": "user", "content": "x"}]}\n'
    up2 = client.files.upload(file={"file_name": "ft.jsonl", "content": chat}, purpose="fine-tune")
    assert up2.sample_type == "instruct"
    plain = client.files.upload(
        file={"file_name": "notes.txt", "content": b"no newline", "content_type": "text/plain"},
        purpose="batch",
    )
    assert plain.mimetype == "text/plain" and plain.num_lines is None
    for f in (up, up2, plain):
        client.files.delete(file_id=f.id)


def test_list_pages_and_filters(server: LiveServer) -> None:
    key = new_workspace_key(server)  # an empty workspace: the counts are ours alone
    client = sdk(server, key)
    tag = uuid.uuid4().hex[:8]
    made = [
        client.files.upload(
            file={"file_name": f"{tag}-{i}.jsonl", "content": jsonl(1, tag=f"{tag}{i}")},
            purpose="batch" if i % 2 == 0 else "fine-tune",
        )
        for i in range(5)
    ]
    page0 = client.files.list(page=0, page_size=2)
    validate(page0.model_dump(by_alias=True), "ListFilesOut")
    page1 = client.files.list(page=1, page_size=2)
    page2 = client.files.list(page=2, page_size=2)
    assert page0.total == 5
    ids = [f.id for p in (page0, page1, page2) for f in p.data]
    assert sorted(ids) == sorted(f.id for f in made) and len(page2.data) == 1
    assert ids == [f.id for f in reversed(made)]  # newest first

    assert client.files.list(purpose="batch").total == 3
    assert client.files.list(purpose="fine-tune").total == 2
    assert client.files.list(sample_type=["batch_request"]).total == 3
    assert client.files.list(sample_type=["batch_result", "batch_error"]).total == 0
    assert client.files.list(source=["upload"]).total == 5
    assert client.files.list(source=["mistral"]).total == 0
    found = client.files.list(search=f"{tag}-3")
    assert [f.id for f in found.data] == [made[3].id]
    assert client.files.list(search="%").total == 0  # LIKE wildcards are literal
    assert client.files.list(include_total=False).total is None
    r = server.client().get("/v1/files", params={"purpose": "images"})
    assert r.status_code == 422


def test_unknown_and_unsupported_purposes(server: LiveServer) -> None:
    before = (rows(server), blobs(server))
    c = server.client()
    files = {"file": ("a.jsonl", b"{}\n")}
    r = c.post("/v1/files", files=files, data={"purpose": "images"})
    assert r.status_code == 422 and r.json()["param"] == "purpose"
    r = c.post("/v1/files", files=files, data={"purpose": "ocr"})
    assert r.status_code == 400 and r.json()["code"] == "unsupported_purpose"
    r = c.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a", b"x")})
    assert r.status_code == 422 and r.json()["param"] == "file"
    r = c.post("/v1/files", json={"purpose": "batch"})
    assert r.status_code == 400
    assert (rows(server), blobs(server)) == before
    assert partials(server) == []


def test_same_content_is_stored_once(server: LiveServer) -> None:
    client = sdk(server)
    content = jsonl(2, tag=uuid.uuid4().hex)
    a = client.files.upload(file={"file_name": "a.jsonl", "content": content}, purpose="batch")
    before = blobs(server)
    b = client.files.upload(file={"file_name": "b.jsonl", "content": content}, purpose="batch")
    assert blobs(server) == before and a.id != b.id
    client.files.delete(file_id=a.id)
    assert blobs(server) == before  # b still needs it
    assert client.files.download(file_id=b.id).read() == content
    client.files.delete(file_id=b.id)
    assert len(blobs(server)) == len(before) - 1


def test_over_the_limit_is_413_and_leaves_nothing(server: LiveServer) -> None:
    before = (rows(server), blobs(server))
    client = sdk(server)
    with pytest.raises(MistralError) as err:
        client.files.upload(
            file={"file_name": "big.jsonl", "content": b"x" * (LIMIT + 1)}, purpose="batch"
        )
    assert err.value.status_code == 413
    body = json.loads(err.value.body)
    assert body["object"] == "error" and body["code"] == "file_too_large"
    assert str(LIMIT) in body["message"]

    # Chunked (no Content-Length): refused as the bytes pass the limit.
    boundary = "b0undary"

    def chunks() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.jsonl"'
            "\r\n\r\n"
        ).encode()
        for _ in range(LIMIT // 65536 + 2):
            yield b"y" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(
        f"{server.url}/v1/files",
        content=chunks(),
        headers={**server.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert r.status_code == 413

    # A Content-Length past the route's body limit is refused before a byte is read.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /v1/files HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {server.api_key}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {LIMIT * 2}\r\n\r\n"
            ).encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")
    assert (rows(server), blobs(server)) == before
    assert partials(server) == []


def test_a_client_gone_mid_upload_leaves_nothing(server: LiveServer) -> None:
    before = (rows(server), blobs(server))
    boundary = "g0ne"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /v1/files HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {server.api_key}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {LIMIT}\r\n\r\n"
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="half.jsonl"\r\n\r\n'
            ).encode()
            + b"h" * 2_000_000
        )
        deadline = time.monotonic() + 10
        while not partials(server):  # the upload is being written
            assert time.monotonic() < deadline
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    while partials(server):  # ... and is deleted once the client has gone
        assert time.monotonic() < deadline, partials(server)
        time.sleep(0.05)
    assert (rows(server), blobs(server)) == before


def test_file_exactly_at_the_limit_is_accepted(server: LiveServer) -> None:
    client = sdk(server)
    up = client.files.upload(file={"file_name": "edge.bin", "content": b"e" * LIMIT})
    assert up.size_bytes == LIMIT
    client.files.delete(file_id=up.id)


def test_upload_is_streamed_not_buffered(server: LiveServer) -> None:
    """A 6 MiB upload allocates under a third of that in the server while it is received."""
    size = 6 * 1024 * 1024
    boundary = "str3am"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
    ).encode()
    piece = b"s" * 65536

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    tracemalloc.start()
    try:
        r = httpx.post(
            f"{server.url}/v1/files",
            content=body(),
            headers={**server.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
            timeout=60,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == size
    assert peak < size / 3, f"peak {peak} bytes while uploading {size}"
    server.client().delete(f"/v1/files/{r.json()['id']}")


def test_another_workspace_sees_nothing(server: LiveServer) -> None:
    mine = sdk(server)
    up = mine.files.upload(
        file={"file_name": "private.jsonl", "content": jsonl(1)}, purpose="batch"
    )
    theirs = sdk(server, new_workspace_key(server))
    for call in (
        lambda: theirs.files.retrieve(file_id=up.id),
        lambda: theirs.files.download(file_id=up.id),
        lambda: theirs.files.delete(file_id=up.id),
    ):
        with pytest.raises(MistralError) as err:
            call()
        assert err.value.status_code == 404
    assert up.id not in [f.id for f in theirs.files.list().data]
    assert mine.files.retrieve(file_id=up.id).id == up.id  # their delete did nothing
    mine.files.delete(file_id=up.id)


def test_user_visibility_hides_a_file_from_other_keys(server: LiveServer) -> None:
    c = server.client()
    r = c.post(
        "/v1/files",
        files={"file": ("mine.jsonl", jsonl(1))},
        data={"purpose": "batch", "visibility": "user"},
    )
    assert r.status_code == 200 and r.json()["visibility"] == "user"
    other = sdk(server, server.create_key("same-workspace"))
    with pytest.raises(MistralError) as err:
        other.files.retrieve(file_id=r.json()["id"])
    assert err.value.status_code == 404
    assert c.get(f"/v1/files/{r.json()['id']}").status_code == 200
    c.delete(f"/v1/files/{r.json()['id']}")


def test_expired_files_are_gone(server: LiveServer) -> None:
    c = server.client()
    r = c.post("/v1/files", files={"file": ("e.jsonl", jsonl(1))}, data={"expiry": "1"})
    assert r.status_code == 200 and r.json()["expires_at"] is not None
    file_id = r.json()["id"]
    with server.state.platform.db.writing() as s:
        row = s.get(StoredFile, file_id)
        assert row is not None
        row.expires_at = row.created_at
    assert c.get(f"/v1/files/{file_id}").status_code == 404
    assert c.post("/v1/files", files={"file": ("e", b"x")}, data={"expiry": "0"}).status_code == 422


def test_zero_retention_workspace_is_refused(server: LiveServer) -> None:
    key = new_workspace_key(server, retention="zero")
    c = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {key}"})
    calls = [
        c.post("/v1/files", files={"file": ("z.jsonl", b"{}\n")}, data={"purpose": "batch"}),
        c.get("/v1/files"),
        c.get(f"/v1/files/{uuid.uuid4()}"),
        c.get(f"/v1/files/{uuid.uuid4()}/content"),
        c.delete(f"/v1/files/{uuid.uuid4()}"),
        c.post("/v1/batch/jobs", json={"endpoint": "/v1/chat/completions", "requests": []}),
        c.get("/v1/batch/jobs"),
        c.get(f"/v1/batch/jobs/{uuid.uuid4()}"),
        c.post(f"/v1/batch/jobs/{uuid.uuid4()}/cancel"),
    ]
    for r in calls:
        assert r.status_code == 403, (r.request.url, r.text)
        assert r.json()["code"] == "zero_retention"
    with pytest.raises(MistralError) as err:
        sdk(server, key).files.list()
    assert err.value.status_code == 403


def test_concurrent_uploads_of_one_content(server: LiveServer) -> None:
    content = jsonl(4, tag=uuid.uuid4().hex)
    ids: list[str] = []

    def upload() -> None:
        r = server.client().post(
            "/v1/files", files={"file": ("c.jsonl", content)}, data={"purpose": "batch"}
        )
        assert r.status_code == 200
        ids.append(r.json()["id"])

    threads = [threading.Thread(target=upload) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 6
    for file_id in ids:
        assert server.client().get(f"/v1/files/{file_id}/content").content == content
    for file_id in ids:
        server.client().delete(f"/v1/files/{file_id}")
    assert partials(server) == []
